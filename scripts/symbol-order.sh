#!/usr/bin/env bash
# Regenerates link/tollgate.order: the functions `tollgate serve` runs at start-up and under the gateway
# bench's c=32 windows (non-stream and stream, with the Parquet sink's flushes and the open day's merges),
# hottest first, as recorded by callgrind. build.rs hands the file to lld, which places those functions
# next to each other, so the code a gateway runs sits in a few hundred KiB of `.text` instead of being
# spread over 100 MB, and the kernel's 64 KiB fault-around windows map little cold code beside it.
#
#   scripts/symbol-order.sh [SECONDS]      (needs valgrind; builds the release binary and the bench first)
#   scripts/symbol-order.sh --check [BIN]  (how many of the file's names BIN, default the release binary, has)
#
# Names that a later build no longer has are skipped by the linker: a stale file orders less, it never
# breaks a build. Regenerate after a dependency upgrade or any change to the code it lists (`--check`).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
if [ "${1:-}" = "--check" ]; then
  BIN=${2:-$TARGET/release/tollgate}
  total=$(sort -u link/tollgate.order | wc -l)
  found=$(nm --defined-only "$BIN" | awk '{print $3}' | sort -u | comm -12 - <(sort -u link/tollgate.order) | wc -l)
  echo "$found of $total names in link/tollgate.order are in $BIN"
  # Under nine in ten, the order has gone stale enough to cost resident code pages: write it again.
  [ $((found * 10)) -ge $((total * 9)) ]
  exit
fi
SECONDS_PER_WINDOW=${1:-20}
cargo build --release -p tollgate -p tollgate-bench -p tollgate-mock
BIN=$(realpath "$TARGET/release/tollgate")
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
cat > "$D/wrap.sh" <<EOT
#!/bin/bash
exec valgrind --tool=callgrind --demangle=no --dump-instr=no --callgrind-out-file=$D/cg.out "$BIN" "\$@"
EOT
chmod +x "$D/wrap.sh"
"$TARGET/release/tollgate-bench" --seconds "$SECONDS_PER_WINDOW" --warmup 1 --rounds 1 --concurrency 32 \
  --only tollgate --tollgate "$D/wrap.sh" --mock "$TARGET/release/tollgate-mock" --out "$D/bench.md" > "$D/bench.log" 2>&1 &
BENCH=$!
PID=
for _ in $(seq 1 600); do
  PID=$(pgrep -f "callgrind-out-file=$D/cg.out $BIN serve" | head -1 || true)
  [ -n "$PID" ] && break
  sleep 0.1
done
[ -n "$PID" ] || { echo "serve under valgrind did not start"; cat "$D/bench.log"; exit 1; }
# Dump as soon as the stream window's line is printed: after it the bench runs a SQL query, which is not serving.
until grep -v non-stream "$D/bench.log" | grep -q "stream c=32"; do
  kill -0 "$BENCH" 2>/dev/null || { echo "the bench stopped early"; cat "$D/bench.log"; exit 1; }
  sleep 0.02
done
callgrind_control -d "$PID" > /dev/null
wait "$BENCH"
nm --defined-only "$BIN" > "$D/nm"
python3 scripts/symbol-order.py "$D/nm" link/tollgate.order "$D/cg.out.1"
