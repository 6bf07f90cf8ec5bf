#!/usr/bin/env bash
# Runs tollgate's whole test suite (unit, integration and end-to-end tests of the real binary) on a
# fresh Debian machine with Rust. Installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# `kill` (procps) is used by the graceful-shutdown test to send SIGTERM.
if ! command -v kill >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq procps
fi
cargo test --workspace --locked
