#!/usr/bin/env python3
"""Callgrind outputs (recorded with --demangle=no) -> a symbol ordering file for lld (scripts/symbol-order.sh).

    symbol-order.py NM_OUTPUT OUT PHASE_A_FILE... [-- PHASE_B_FILE...]

Functions the binary defines that ran in phase A come first, by descending cost; then those that only ran in
phase B. Names are the mangled symbols, as the linker sees them."""
import re, sys, collections

nm_path, out = sys.argv[1], sys.argv[2]
args = sys.argv[3:]
if "--" in args:
    i = args.index("--"); A, B = args[:i], args[i + 1:]
else:
    A, B = args, []

text_syms = set()
for line in open(nm_path):
    p = line.split()
    if len(p) >= 3 and p[-2] in "tTwW":
        text_syms.add(p[-1])


def executed(files):
    cost = collections.Counter()
    for f in files:
        names = {}
        cur = None
        for line in open(f, errors="replace"):
            if line.startswith(("fn=", "cfn=")):
                m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
                if not m:
                    continue
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                name = names.get(m.group(1))
                if line.startswith("fn="):
                    cur = name
                    cost[cur] += 0
                else:
                    cost[name] += 0
            elif cur and line[:1].isdigit() and cur is not None:
                parts = line.split()
                if len(parts) >= 2:
                    try:
                        cost[cur] += int(parts[1])
                    except ValueError:
                        pass
    return cost


ca = executed(A)
cb = executed(B)
order = [s for s, _ in ca.most_common() if s in text_syms]
seen = set(order)
order += [s for s, _ in cb.most_common() if s in text_syms and s not in seen]
open(out, "w").write("\n".join(order) + "\n")
print(f"phase A {len([s for s in ca if s in text_syms])} functions, phase B only {len(order) - len([s for s in ca if s in text_syms])}", file=sys.stderr)
