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
# The ClickHouse tests start a real clickhouse-server (Debian's package) of their own.
if ! command -v clickhouse-server >/dev/null 2>&1 && [ ! -x /usr/sbin/clickhouse-server ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server
fi
# The metrics and dashboard tests run promtool and a real Prometheus server (Debian's package).
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus
fi
# The web page's tests drive Debian's Chromium through chromedriver; `curl` ends the WebDriver session.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver curl
fi
# The cluster tests run ZooKeeper (Debian's zookeeperd jar, started by the tests themselves).
if [ ! -f /usr/share/java/zookeeper.jar ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeperd
fi
# The shared response cache test starts a real redis-server of its own.
if ! command -v redis-server >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
fi
# The compatibility check replays DDL and report queries on a current ClickHouse (26.x) embedded in the
# chdb-core wheel.
# Debian's Python is "externally managed": pip needs python3-pip and --break-system-packages there.
if ! python3 -m pip --version >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip
fi
if ! python3 -c 'import chdb' >/dev/null 2>&1; then
  python3 -m pip install -q chdb-core 2>/dev/null || python3 -m pip install -q --break-system-packages chdb-core
fi
# The price tests read LiteLLM's real price catalog from the litellm wheel (the file only, no install).
litellm_dir="${XDG_CACHE_HOME:-$HOME/.cache}/tollgate-test/litellm-1.110.2"
if [ ! -f "$litellm_dir/model_prices_and_context_window_backup.json" ]; then
  mkdir -p "$litellm_dir"
  python3 -m pip download -q --no-deps -d "$litellm_dir" litellm==1.110.2
  python3 - "$litellm_dir" <<'PY'
import glob, sys, zipfile
d = sys.argv[1]
z = zipfile.ZipFile(glob.glob(d + "/litellm-1.110.2-*.whl")[0])
open(d + "/model_prices_and_context_window_backup.json", "wb").write(z.read("litellm/model_prices_and_context_window_backup.json"))
PY
fi
export TOLLGATE_LITELLM_PRICES="$litellm_dir/model_prices_and_context_window_backup.json"
# The Responses API tests drive the gateway with the official `openai` Python SDK, in a venv of its own.
openai_venv="${XDG_CACHE_HOME:-$HOME/.cache}/tollgate-test/openai-3.57.0"
if ! "$openai_venv/bin/python" -c 'import openai' >/dev/null 2>&1; then
  if ! python3 -m venv "$openai_venv" >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    python3 -m venv "$openai_venv"
  fi
  "$openai_venv/bin/python" -m pip install -q openai==3.57.0
fi
export TOLLGATE_OPENAI_PYTHON="$openai_venv/bin/python"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --all-targets 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing line with the totals over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$rc"
