#!/usr/bin/env python3
"""Which of a running binary's own pages are resident, and whose code they hold.

Reads /proc/PID/maps and /proc/PID/pagemap (run as root: without CAP_SYS_ADMIN the
pagemap's PFN bits read as zero but the present bit still works) for the mappings of
the process's executable, and attributes each resident 4 KiB page of `.text` to the
crates whose functions lie in it (by bytes of overlap, from `nm -n -S`, demangled with
c++filt). Other sections (.rodata, .eh_frame, .data.rel.ro, ...) are counted whole.

    scripts/resident-code.py PID [--top N] [--pages OUT.tsv] [--nm CACHE]
    scripts/resident-code.py PID --save SNAP      # record the resident pages now (fast)
    scripts/resident-code.py SNAP [--top N] ...   # report a recorded snapshot later

A page counts once it is mapped into the process: the kernel maps file pages in
64 KiB "fault-around" windows, so a page can be resident without any of its code having
run. That is what RssFile counts, so it is what this reports.
"""

import argparse
import bisect
import collections
import os
import re
import struct
import subprocess
import sys

PAGE = 4096
STD = {"core", "alloc", "std", "compiler_builtins", "hashbrown", "std_detect", "panic_unwind",
       "rustc_demangle", "addr2line", "gimli", "object", "miniz_oxide", "adler2"}


def sections(binary):
    out = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True, check=True).stdout
    secs = []
    for line in out.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", line)
        if m and int(m.group(2), 16):
            secs.append((int(m.group(2), 16), int(m.group(3), 16), m.group(1)))
    return sorted(secs)


def crate_of(name):
    """The first crate named in a demangled symbol that is not the standard library's
    (so `core::ptr::drop_in_place<datafusion_expr::Expr>` counts as datafusion_expr)."""
    first = None
    for c in re.findall(r"(?<![A-Za-z0-9_:])([A-Za-z_][A-Za-z0-9_]*)::", name):
        if first is None:
            first = c
        if c not in STD and not c.startswith("_"):
            return c
    return first or "?"


def symbols(binary, cache):
    if cache and os.path.exists(cache):
        text = open(cache).read()
    else:
        nm = subprocess.run(["nm", "-n", "-S", "--defined-only", binary], capture_output=True, check=True)
        text = subprocess.run(["c++filt"], input=nm.stdout, capture_output=True, check=True).stdout.decode()
        if cache:
            open(cache, "w").write(text)
    syms = []
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[2] in "tTwW":
            start, size = int(parts[0], 16), int(parts[1], 16)
            if size:
                syms.append((start, size, parts[3]))
    syms.sort()
    return syms


def resident(pid, exe):
    """(elf_vaddr of each resident page, is_anon) for the executable's mappings."""
    maps = []
    for line in open(f"/proc/{pid}/maps"):
        f = line.split()
        if len(f) >= 6 and f[5] == exe:
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            maps.append((lo, hi, int(f[2], 16), f[1]))
    base = min(lo - off for lo, hi, off, perm in maps)
    pages = []
    with open(f"/proc/{pid}/pagemap", "rb") as pm:
        for lo, hi, off, perm in maps:
            pm.seek(lo // PAGE * 8)
            data = pm.read((hi - lo) // PAGE * 8)
            for i, (e,) in enumerate(struct.iter_unpack("<Q", data)):
                if e >> 63 & 1:
                    pages.append((lo + i * PAGE - base, not (e >> 61 & 1)))
    return pages


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pid", help="a process id, or a snapshot file written by --save")
    ap.add_argument("--save", help="write the executable's path and resident pages to this file and stop")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--pages", help="write one line per resident .text page: vaddr, crate shares")
    ap.add_argument("--nm", help="cache of the demangled nm output")
    a = ap.parse_args()
    if a.pid.isdigit():
        exe = os.readlink(f"/proc/{a.pid}/exe")
        pages = resident(a.pid, exe)
        if a.save:
            with open(a.save, "w") as f:
                f.write(exe + "\n" + "".join(f"{va:x} {int(anon)}\n" for va, anon in pages))
            return 0
    else:
        lines = open(a.pid).read().split("\n")
        exe = lines[0]
        pages = [(int(v, 16), anon == "1") for v, anon in (ln.split() for ln in lines[1:] if ln)]
    secs = sections(exe)

    by_sec = collections.Counter()
    anon_by_sec = collections.Counter()
    text = None
    for start, size, name in secs:
        if name == ".text":
            text = (start, start + size)
    for va, anon in pages:
        i = bisect.bisect_right(secs, (va + PAGE, 0, "")) - 1
        name = "?"
        # a page can span two sections; name it by the one that starts at or before its end
        for j in range(max(0, i - 3), i + 1):
            s, sz, n = secs[j]
            if s < va + PAGE and va < s + sz:
                name = n
        by_sec[name] += 1
        if anon:
            anon_by_sec[name] += 1
    total_sec = {n: sz for s, sz, n in secs}
    print(f"pid {a.pid} {exe}")
    print(f"{'section':22} {'resident KiB':>12} {'of which anon':>13} {'section KiB':>12}")
    for name, n in sorted(by_sec.items(), key=lambda kv: -kv[1]):
        print(f"{name:22} {n*4:12} {anon_by_sec[name]*4:13} {total_sec.get(name, 0)//1024:12}")
    print(f"{'total':22} {len(pages)*4:12} {sum(anon_by_sec.values())*4:13}")

    syms = symbols(exe, a.nm)
    starts = [s for s, _, _ in syms]
    size_by_crate = collections.Counter()
    for s, sz, n in syms:
        if text[0] <= s < text[1]:
            size_by_crate[crate_of(n)] += sz
    res_by_crate = collections.Counter()
    out = open(a.pages, "w") if a.pages else None
    for va, _ in pages:
        if not (text[0] <= va < text[1]):
            continue
        lo, hi = va, va + PAGE
        i = max(0, bisect.bisect_right(starts, lo) - 1)
        share = collections.Counter()
        while i < len(syms) and syms[i][0] < hi:
            s, sz, n = syms[i]
            ov = min(hi, s + sz) - max(lo, s)
            if ov > 0:
                share[crate_of(n)] += ov
            i += 1
        covered = sum(share.values())
        if covered < PAGE:
            share["(padding)"] += PAGE - covered
        for c, b in share.items():
            res_by_crate[c] += b
        if out:
            out.write(f"{va:x}\t" + " ".join(f"{c}:{b}" for c, b in share.most_common()) + "\n")
    tot = sum(res_by_crate.values())
    print(f"\n.text resident {tot/1024:.0f} KiB; by crate (bytes of resident pages that hold its functions)")
    print(f"{'crate':34} {'resident KiB':>12} {'share':>6} {'crate .text KiB':>15} {'resident %':>10}")
    for c, b in res_by_crate.most_common(a.top):
        t = size_by_crate.get(c, 0)
        pct = f"{100*b/t:.0f}%" if t else ""
        print(f"{c:34} {b/1024:12.0f} {100*b/tot:5.1f}% {t/1024:15.0f} {pct:>10}")


if __name__ == "__main__":
    sys.exit(main())
