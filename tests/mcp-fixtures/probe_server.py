"""A stdio MCP server built on the official Python SDK (`MCPServer`) that reports what it can
reach, for the sandboxed-server tests in tests/mcp.rs. Each tool returns what happened as
text: the result, or `error: <errno name>`.

Tools: read(path), write(path, text), connect(host, port), env(name) (`<unset>` when unset),
fetch(url) (through the proxy the environment names, as urllib does: the body, `http <status>`
or `error: <reason>`).
"""

import errno
import os
import socket
import urllib.error
import urllib.request

from mcp.server import MCPServer

server = MCPServer("probe")


def failed(e: OSError) -> str:
    return "error: " + errno.errorcode.get(e.errno or 0, str(e))


@server.tool()
def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return failed(e)


@server.tool()
def write(path: str, text: str) -> str:
    try:
        with open(path, "w") as f:
            f.write(text)
        return "written"
    except OSError as e:
        return failed(e)


@server.tool()
def connect(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=5):
            return "connected"
    except OSError as e:
        return failed(e)


@server.tool()
def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        return f"http {e.code}"
    except (urllib.error.URLError, OSError) as e:
        return f"error: {getattr(e, 'reason', e)}"


@server.tool()
def env(name: str) -> str:
    return os.environ.get(name, "<unset>")


if __name__ == "__main__":
    server.run("stdio")
