"""The "external hosts" of the egress tests, in one process (a thread per listener).

Started inside a network namespace by tests/common/netns.rs. Every listener is bound before
`ready` is printed (followed by a JSON object: kind -> the addresses actually bound, so port 0
works). One JSON line per accepted TCP connection and per DNS query goes to --log, flushed
before the connection is served or the query answered:

    {"kind": "http"|"https"|"banner", "local": "203.0.113.10:80", "peer": "203.0.113.1:40000"}
    {"kind": "dns", "local": "203.0.113.53:53", "name": "ext.test", "type": "A", "answers": [...]}

Listeners (each flag repeatable, ADDR is `ip:port` or `[ipv6]:port`):

  --http ADDR      HTTP/1.1 with keep-alive. Every response is JSON describing the request:
                   {"server", "method", "path", "host", "headers", "body_len", "version"}.
                   /redirect?to=URL answers 302 with that Location; /bytes?n=N answers N bytes
                   of application/octet-stream. Request bodies (Content-Length or chunked)
                   are read fully.
  --https ADDR     the same over TLS (--cert, --key: PEM files); the JSON also has "sni".
  --banner ADDR    sends `SSH-2.0-fixture\\r\\n` on accept, then echoes.
  --dns ADDR       UDP DNS with the fixed table below, TTL 0.
"""

import argparse
import http.server
import ipaddress
import json
import socket
import socketserver
import ssl
import struct
import sys
import threading
import urllib.parse

LOG_LOCK = threading.Lock()
LOG = None


def log(record):
    line = json.dumps(record, sort_keys=True) + "\n"
    with LOG_LOCK:
        LOG.write(line)
        LOG.flush()


def fmt_addr(sockaddr):
    host, port = sockaddr[0], sockaddr[1]
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


def parse_addr(text):
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    return family, host, int(port)


# ---------------------------------------------------------------- HTTP(S)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "portcullis-fixture"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            n = 0
            while True:
                size_line = self.rfile.readline(65537)
                if not size_line:
                    raise ConnectionError("eof in chunked body")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # trailers, up to the empty line
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return n
                left = size
                while left:
                    got = self.rfile.read(min(left, 65536))
                    if not got:
                        raise ConnectionError("eof in chunk")
                    left -= len(got)
                n += size
                self.rfile.readline(65537)  # CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        left = length
        while left:
            got = self.rfile.read(min(left, 65536))
            if not got:
                raise ConnectionError("eof in body")
            left -= len(got)
        return length

    def respond(self):
        try:
            body_len = self.read_body()
        except (ValueError, ConnectionError):
            self.send_error(400, "bad body")
            return
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/redirect" and "to" in query:
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if url.path == "/bytes" and "n" in query:
            n = int(query["n"][0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            if self.command != "HEAD":
                chunk = b"x" * 65536
                while n:
                    part = chunk[: min(n, len(chunk))]
                    self.wfile.write(part)
                    n -= len(part)
            return
        headers = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = headers[key] + ", " + value if key in headers else value
        doc = {
            "server": self.server.local,
            "method": self.command,
            "path": self.path,
            "host": self.headers.get("Host"),
            "headers": headers,
            "body_len": body_len,
            "version": self.request_version,
        }
        if self.server.tls:
            doc["sni"] = getattr(self.connection, "fixture_sni", None)
        out = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = respond


class HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, kind, tls_context=None):
        family, host, port = parse_addr(addr)
        self.address_family = family
        self.kind = kind
        self.tls = tls_context
        super().__init__((host, port), Handler)
        self.local = fmt_addr(self.socket.getsockname())

    def server_bind(self):
        # Skip HTTPServer.server_bind's getfqdn(): it would query the test DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self):
        sock, peer = self.socket.accept()
        log({"kind": self.kind, "local": self.local, "peer": fmt_addr(peer)})
        return sock, peer

    def finish_request(self, request, client_address):
        if self.tls is not None:
            # The handshake runs in the connection's thread, not in the accept loop.
            try:
                request.settimeout(30)
                request = self.tls.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (ssl.SSLError, OSError):
                return
        self.RequestHandlerClass(request, client_address, self)


def tls_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    def remember_sni(sslsock, server_name, _ctx):
        sslsock.fixture_sni = server_name

    ctx.sni_callback = remember_sni
    return ctx


# ---------------------------------------------------------------- banner


class BannerHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"SSH-2.0-fixture\r\n")
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class BannerServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr):
        family, host, port = parse_addr(addr)
        self.address_family = family
        super().__init__((host, port), BannerHandler)
        self.local = fmt_addr(self.socket.getsockname())

    def get_request(self):
        sock, peer = self.socket.accept()
        log({"kind": "banner", "local": self.local, "peer": fmt_addr(peer)})
        return sock, peer


# ---------------------------------------------------------------- DNS

A, AAAA = 1, 28
TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV", 65: "HTTPS"}

A_TABLE = {
    "ext.test": ["203.0.113.10"],
    "www.ext.test": ["203.0.113.10"],
    "private.test": ["10.99.0.10"],
    "meta.test": ["169.254.169.254"],
    "mixed.test": ["203.0.113.10", "10.99.0.10"],
    "v6.test": [],
}
AAAA_TABLE = {"v6.test": ["2001:db8::10"]}
REBIND = ["203.0.113.10", "127.0.0.1"]
KNOWN = set(A_TABLE) | set(AAAA_TABLE) | {"rebind.test"}


def read_name(msg, off):
    labels = []
    jumps = 0
    end = None
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumps += 1
            if jumps > 16:
                raise ValueError("pointer loop")
            continue
        off += 1
        if n == 0:
            break
        labels.append(msg[off : off + n].decode("ascii", "replace"))
        off += n
    return ".".join(labels), (end if end is not None else off)


class DNS:
    def __init__(self, addr):
        family, host, port = parse_addr(addr)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.local = fmt_addr(self.sock.getsockname())
        self.rebind_next = 0

    def answer(self, qname, qtype):
        """(rcode, [(type, rdata bytes, text)])"""
        if qname not in KNOWN:
            return 3, []
        if qtype == A:
            if qname == "rebind.test":
                ips = [REBIND[self.rebind_next % len(REBIND)]]
                self.rebind_next += 1
            else:
                ips = A_TABLE.get(qname, [])
            return 0, [(A, socket.inet_pton(socket.AF_INET, ip), ip) for ip in ips]
        if qtype == AAAA:
            ips = AAAA_TABLE.get(qname, [])
            return 0, [(AAAA, socket.inet_pton(socket.AF_INET6, ip), ip) for ip in ips]
        return 0, []

    def handle(self, msg):
        qid, flags, qdcount = struct.unpack("!HHH", msg[:6])
        if flags & 0x8000 or qdcount < 1:
            return None
        qname, off = read_name(msg, 12)
        qtype, qclass = struct.unpack("!HH", msg[off : off + 4])
        question = msg[12 : off + 4]
        name = qname.lower().rstrip(".")
        rcode, answers = self.answer(name, qtype)
        log(
            {
                "kind": "dns",
                "local": self.local,
                "name": name,
                "type": TYPE_NAMES.get(qtype, str(qtype)),
                "rcode": rcode,
                "answers": [text for _, _, text in answers],
            }
        )
        opcode_rd = flags & 0x7900  # opcode and RD copied from the query
        out_flags = 0x8000 | 0x0400 | 0x0080 | opcode_rd | rcode  # QR, AA, RA
        out = struct.pack("!HHHHHH", qid, out_flags, 1, len(answers), 0, 0) + question
        for rtype, rdata, _ in answers:
            out += struct.pack("!HHHIH", 0xC00C, rtype, 1, 0, len(rdata)) + rdata
        return out

    def serve_forever(self):
        while True:
            msg, peer = self.sock.recvfrom(4096)
            try:
                out = self.handle(msg)
            except (ValueError, IndexError, struct.error):
                continue
            if out is not None:
                self.sock.sendto(out, peer)


# ---------------------------------------------------------------- main


def main():
    global LOG
    p = argparse.ArgumentParser()
    p.add_argument("--log", required=True)
    p.add_argument("--http", action="append", default=[])
    p.add_argument("--https", action="append", default=[])
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--banner", action="append", default=[])
    p.add_argument("--dns", action="append", default=[])
    args = p.parse_args()
    LOG = open(args.log, "a", encoding="utf-8")

    servers = []
    bound = {"http": [], "https": [], "banner": [], "dns": []}
    for addr in args.http:
        s = HTTPServer(addr, "http")
        servers.append(s)
        bound["http"].append(s.local)
    if args.https:
        ctx = tls_context(args.cert, args.key)
        for addr in args.https:
            s = HTTPServer(addr, "https", ctx)
            servers.append(s)
            bound["https"].append(s.local)
    for addr in args.banner:
        s = BannerServer(addr)
        servers.append(s)
        bound["banner"].append(s.local)
    for addr in args.dns:
        s = DNS(addr)
        servers.append(s)
        bound["dns"].append(s.local)

    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    sys.stdout.write("ready " + json.dumps(bound) + "\n")
    sys.stdout.flush()
    # Run until killed, or until the parent closes our stdin.
    sys.stdin.read()


if __name__ == "__main__":
    main()
