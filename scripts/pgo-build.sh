#!/usr/bin/env bash
# Builds `tollgate` with profile-guided optimisation: an instrumented build serves a training load (the
# gateway bench's windows in `serve` and `gateway` mode, then a minute of the soak's mixed and hostile
# traffic with its SQL), LLVM merges the counts, and the release profile is built again with them.
#
#   scripts/pgo-build.sh [OUT]        (OUT: where the optimised binary goes; default target/pgo/tollgate)
#   PGO_PROFILE=dist scripts/pgo-build.sh       (the optimised build in the `dist` profile instead. Not the
#                                                default: a profile other than `release` gives every function
#                                                another symbol name, so `link/tollgate.order` orders none of
#                                                them; measured, 11 MiB more of the binary resident and 8%
#                                                more CPU per call than the release-profile PGO build)
#   PGO_TRAIN=soak scripts/pgo-build.sh         (train on two minutes of the soak's calls and hostile
#                                                inputs alone, without its SQL and giant bodies and without
#                                                the bench: a build not tuned on the load the bench measures;
#                                                bench/RESULTS.md has what each training gave)
#
# Needs rustup's `llvm-tools` component (`rustup component add llvm-tools`: its llvm-profdata matches
# rustc's LLVM; Debian's llvm-profdata is older and cannot read the counts) and the bench binaries
# (`cargo build --release -p tollgate-bench -p tollgate-mock`). Two builds of `tollgate` from nothing: on
# two cores budget well over an hour. The instrumented and optimised builds use target directories of their
# own (`$CARGO_TARGET_DIR-pgo-gen`, `-pgo-use`), so the release build the tests use is left alone.
#
# A process writes its counts when it exits normally: the training sends SIGTERM (graceful shutdown) to
# every instrumented `tollgate` it started, never SIGKILL.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/pgo/tollgate}
TARGET=${CARGO_TARGET_DIR:-target}
SYSROOT=$(rustc --print sysroot)
PROFDATA=$(ls "$SYSROOT"/lib/rustlib/*/bin/llvm-profdata 2>/dev/null | head -1 || true)
[ -x "$PROFDATA" ] || { echo "llvm-profdata not found: rustup component add llvm-tools"; exit 1; }
BENCH=$TARGET/release/tollgate-bench
MOCK=$TARGET/release/tollgate-mock
SOAK=$TARGET/release/soak
for b in "$BENCH" "$MOCK" "$SOAK"; do
  [ -x "$b" ] || { echo "$b missing: cargo build --release -p tollgate-bench -p tollgate-mock"; exit 1; }
done
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
# A fixed path: it is baked into the instrumented build, so a second run reuses that build.
RAW=$(realpath -m "$TARGET-pgo-gen")/counts

echo "1/4 instrumented build"
RUSTFLAGS="-Cprofile-generate=$RAW" CARGO_TARGET_DIR="$TARGET-pgo-gen" cargo build --release -p tollgate
GEN=$(realpath "$TARGET-pgo-gen/release/tollgate")
# Build scripts are instrumented too and wrote counts of their own while the build ran: not tollgate's.
rm -rf "$RAW"

echo "2/4 training load"
# The bench kills what it started; the wrapper below is what it kills, and `tollgate` (not exec'd) lives
# on until it is sent SIGTERM here, so that it writes its counts.
cat > "$D/wrap.sh" <<EOT
#!/bin/bash
"$GEN" "\$@" &
echo \$! >> "$D/pids"
wait
EOT
chmod +x "$D/wrap.sh"
stop_trained() {
  [ -f "$D/pids" ] || return 0
  while read -r p; do kill -TERM "$p" 2>/dev/null || true; done < "$D/pids"
  while read -r p; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done < "$D/pids"
  rm -f "$D/pids"
}
# train NAME COMMAND...: runs one training load (its output in $D/NAME.log), then stops what it started.
train() {
  local name=$1
  shift
  "$@" > "$D/$name.log" 2>&1 || echo "the $name ended with an error (see below); what ran still counts"
  tail -3 "$D/$name.log"
  stop_trained
}
touch "$D/soak.md"
if [ "${PGO_TRAIN:-bench}" = soak ]; then
  train soak "$SOAK" --minutes 2 --skip SQL --skip 1.1M --skip '1 MiB' --tollgate "$D/wrap.sh" --mock "$MOCK" \
    --results "$D/soak.md"
else
  train bench "$BENCH" --seconds 4 --warmup 1 --rounds 1 --concurrency 1,32 \
    --scenarios non-stream,stream,new-connection --only tollgate,gateway --tollgate "$D/wrap.sh" --mock "$MOCK" \
    --out "$D/bench.md"
  train soak "$SOAK" --minutes 1 --tollgate "$D/wrap.sh" --mock "$MOCK" --results "$D/soak.md"
fi
ls "$RAW"/*.profraw > /dev/null || { echo "no counts were written"; exit 1; }

echo "3/4 merging $(ls "$RAW"/*.profraw | wc -l) count files"
"$PROFDATA" merge -o "$D/tollgate.profdata" "$RAW"

PROFILE=${PGO_PROFILE:-release}
echo "4/4 optimised build ($PROFILE profile)"
RUSTFLAGS="-Cprofile-use=$D/tollgate.profdata" CARGO_TARGET_DIR="$TARGET-pgo-use" \
  cargo build --profile "$PROFILE" -p tollgate
mkdir -p "$(dirname "$OUT")"
cp "$TARGET-pgo-use/$PROFILE/tollgate" "$OUT"
echo "built $OUT"
