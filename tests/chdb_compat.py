"""Replays tollgate's ClickHouse DDL, a data set and every report query on a current ClickHouse engine
(the one embedded in the `chdb-core` wheel, 26.x) and compares each answer with the one the 18.16 server
gave. Called by `tests/clickhouse.rs` with the path of a JSON file:

    {"ddl": [statement, ...], "rows": "<JSONEachRow text>",
     "queries": [{"sql": "...", "meta": [[name, type], ...], "data": [[...], ...]}, ...]}

Exits 0 when every statement runs and every answer (column names, types and values) matches; otherwise
prints what differed and exits 1. Exits 3 with an install hint when chdb-core is missing.
"""

import json
import sys


def normalise(value):
    """64-bit integers arrive as strings from one engine and numbers from the other: compare as numbers."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def main():
    try:
        from chdb import session
    except ImportError:
        print("chdb-core is not installed: `pip install chdb-core` (./scripts/test.sh does this)")
        return 3
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    s = session.Session()
    version = s.query("SELECT version()", "CSV").bytes().decode().strip().strip('"')
    s.query("CREATE DATABASE IF NOT EXISTS tollgate_compat")
    s.query("USE tollgate_compat")
    for stmt in spec["ddl"]:
        s.query(stmt)
    if spec["rows"].strip():
        s.query("INSERT INTO calls FORMAT JSONEachRow " + spec["rows"])
    failures = 0
    for q in spec["queries"]:
        try:
            got = json.loads(s.query(q["sql"], "JSONCompact").bytes() or b"{}")
        except Exception as e:  # the engine's own error text is the useful part
            print(f"FAILED on {version}: {q['sql']}\n  {e}")
            failures += 1
            continue
        meta = [[c["name"], c["type"]] for c in got.get("meta", [])]
        if meta != q["meta"]:
            print(f"TYPES DIFFER on {version}: {q['sql']}\n  18.16: {q['meta']}\n  {version}: {meta}")
            failures += 1
        if normalise(got.get("data", [])) != normalise(q["data"]):
            print(f"ANSWER DIFFERS on {version}: {q['sql']}\n  18.16: {q['data']}\n  {version}: {got.get('data')}")
            failures += 1
    print(f"chdb {version}: {len(spec['ddl'])} DDL statements, {len(spec['queries'])} queries, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
