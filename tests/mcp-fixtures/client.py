"""Drive an MCP server over stdio with the official Python SDK client, for tests/mcp.rs.

    client.py '<scenario JSON>' CMD ARGS...      (stdio: the client starts CMD)
    client.py '<scenario JSON>' http://HOST/PATH  (Streamable HTTP; $MCP_BEARER is the key)

The scenario is a list of steps; each prints one JSON line: {"ok": ...} or {"error": {...}}.
Steps: {"op": "list_tools"}, {"op": "call", "name": N, "args": {...}} (with "progress": true,
the step's line also has "progress": the progress values the client was sent),
{"op": "read_resource", "uri": U}, {"op": "get_prompt", "name": N, "args": {...}}.
The last line is {"sampled": n}: how many sampling requests reached this client.
"""

import contextlib
import json
import os
import sys

import anyio
from mcp import ClientSession, types
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

sampled = 0


async def on_sampling(context, params):
    global sampled
    sampled += 1
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text="sampled by the test client"),
        model="test-model",
    )


@contextlib.asynccontextmanager
async def transport():
    target = sys.argv[2]
    if target.startswith("http://") or target.startswith("https://"):
        headers = {}
        if os.environ.get("MCP_BEARER"):
            headers["Authorization"] = "Bearer " + os.environ["MCP_BEARER"]
        async with create_mcp_http_client(headers=headers) as http:
            async with streamable_http_client(target, http_client=http) as streams:
                yield streams[0], streams[1]
        return
    # The SDK passes servers only a safe subset of the environment; tests steer servers by it.
    params = StdioServerParameters(command=target, args=sys.argv[3:], env=dict(os.environ))
    async with stdio_client(params) as (r, w):
        yield r, w


def out(obj):
    print(json.dumps(obj), flush=True)


async def main():
    steps = json.loads(sys.argv[1])
    async with transport() as (r, w):
        async with ClientSession(r, w, sampling_callback=on_sampling) as s:
            init = await s.initialize()
            out({"ok": {"server": init.server_info.name}})
            for step in steps:
                try:
                    if step["op"] == "list_tools":
                        res = await s.list_tools()
                        out({"ok": {"tools": [t.name for t in res.tools]}})
                    elif step["op"] == "call" and step.get("progress"):
                        seen = []

                        async def on_progress(progress, total, message):
                            seen.append(progress)

                        res = await s.call_tool(
                            step["name"], step.get("args", {}), progress_callback=on_progress
                        )
                        out({"ok": res.model_dump(mode="json", by_alias=True), "progress": seen})
                    elif step["op"] == "call":
                        res = await s.call_tool(step["name"], step.get("args", {}))
                        out({"ok": res.model_dump(mode="json", by_alias=True)})
                    elif step["op"] == "read_resource":
                        res = await s.read_resource(step["uri"])
                        out({"ok": res.model_dump(mode="json", by_alias=True)})
                    elif step["op"] == "get_prompt":
                        res = await s.get_prompt(step["name"], step.get("args", {}))
                        out({"ok": res.model_dump(mode="json", by_alias=True)})
                    else:
                        raise ValueError(f"unknown op {step['op']}")
                except MCPError as e:
                    out({"error": {"code": e.code, "message": e.message, "data": e.data}})
    out({"sampled": sampled})


anyio.run(main)
