"""A minimal Streamable HTTP MCP upstream that reports the headers it received, for the
credential tests in tests/mcp_http.rs (the official servers do not show request headers).

Prints `listening on PORT` once bound. Tool `headers` returns the request headers of its own
call as JSON text. Issues Mcp-Session-Id `up-1` at initialize and requires it afterwards.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=None, headers=()):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply(405)

    def do_DELETE(self):
        self.reply(200)

    def do_POST(self):
        msg = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        method, req_id = msg.get("method"), msg.get("id")
        if req_id is None or method is None:
            return self.reply(202)
        if method == "initialize":
            result = {"protocolVersion": msg["params"]["protocolVersion"],
                      "capabilities": {"tools": {}},
                      "serverInfo": {"name": "headers", "version": "1"}}
            return self.reply(200, {"jsonrpc": "2.0", "id": req_id, "result": result},
                              [("Mcp-Session-Id", "up-1")])
        if self.headers.get("Mcp-Session-Id") != "up-1":
            return self.reply(404)
        if method == "tools/list":
            tools = [{"name": "headers", "description": "Shows request headers.",
                      "inputSchema": {"type": "object", "properties": {}}}]
            return self.reply(200, {"jsonrpc": "2.0", "id": req_id, "result": {"tools": tools}})
        if method == "tools/call":
            seen = {k.lower(): v for k, v in self.headers.items()}
            text = json.dumps(seen, sort_keys=True)
            return self.reply(200, {"jsonrpc": "2.0", "id": req_id,
                                    "result": {"content": [{"type": "text", "text": text}]}})
        self.reply(200, {"jsonrpc": "2.0", "id": req_id,
                         "error": {"code": -32601, "message": "method not found"}})


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
