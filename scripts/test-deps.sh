#!/usr/bin/env bash
# Installs what the integration tests run against, from pinned files:
#   tests/mcp-fixtures/node_modules  the official MCP servers (npm ci, package-lock.json)
#   target/test-venv                 the official Python MCP SDK (pip, requirements.txt)
#   ip, curl, getent                 the egress tests' network namespaces and clients (apt)
# Each is reinstalled only when its pin file changed, the system tools only when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v curl >/dev/null || missing+=(curl)
command -v getent >/dev/null || missing+=(libc-bin)
if ((${#missing[@]})); then
  if command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  else
    echo "test-deps: missing ${missing[*]} (the egress tests need them); no apt-get to install them" >&2
  fi
fi

fixtures=tests/mcp-fixtures
if ! cmp -s "$fixtures/package-lock.json" "$fixtures/node_modules/.portcullis-lock"; then
  npm ci --prefix "$fixtures" --no-audit --no-fund --loglevel=error
  cp "$fixtures/package-lock.json" "$fixtures/node_modules/.portcullis-lock"
fi

venv=target/test-venv
if ! cmp -s "$fixtures/requirements.txt" "$venv/.portcullis-requirements"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$fixtures/requirements.txt"
  cp "$fixtures/requirements.txt" "$venv/.portcullis-requirements"
fi
