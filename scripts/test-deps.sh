#!/usr/bin/env bash
# Installs what the integration tests run against, from pinned files:
#   tests/mcp-fixtures/node_modules  the official MCP servers (npm ci, package-lock.json)
#   target/test-venv                 the official Python MCP SDK (pip, requirements.txt)
# Each is reinstalled only when its pin file changed.
set -euo pipefail
cd "$(dirname "$0")/.."

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
