#!/usr/bin/env bash
# Everything CI runs: the pinned test dependencies (official MCP servers and SDK), formatting,
# lints, the Rust tests (unit + integration, with real processes), and the default policy
# pack's own Rego tests through the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
bash scripts/test-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
cargo run --locked --quiet -- policy test
