#!/usr/bin/env python3
"""Prints every distinct Keel metric a Grafana dashboard queries, one per line.

Usage: check-dashboard.py [DASHBOARD.json]   (default: keel-dashboard.json
beside this script)

Reads every PromQL expression of the dashboard: each panel target's `expr`
(panels inside rows included) and each template variable's query (e.g.
`label_values(keel_grpc_server_requests_total, namespace)`). A metric is a
name matching `keel_[a-z_]+`; a histogram's series suffix (`_bucket`, `_sum`,
`_count`) is stripped, so the names are the ones the services register (as
in `# TYPE` lines of a /metrics scrape). Names print sorted.

Exits 1 when the file is not valid JSON or has no expression naming a Keel
metric. Python 3 standard library only.
"""

import json
import re
import sys
from pathlib import Path

METRIC = re.compile(r"\bkeel_[a-z_]+")
SUFFIXES = ("_bucket", "_sum", "_count")


def expressions(node):
    """Every PromQL expression in a dashboard's JSON tree."""
    if isinstance(node, dict):
        expr = node.get("expr")
        if isinstance(expr, str):
            yield expr
        if node.get("type") == "query" and "name" in node:
            # A template variable: its query is a string or an object with
            # `query` (newer Grafana), with `definition` the same text.
            query = node.get("query")
            if isinstance(query, dict):
                query = query.get("query")
            for text in (query, node.get("definition")):
                if isinstance(text, str):
                    yield text
        for value in node.values():
            yield from expressions(value)
    elif isinstance(node, list):
        for value in node:
            yield from expressions(value)


def metric_names(dashboard):
    names = set()
    for expr in expressions(dashboard):
        for name in METRIC.findall(expr):
            for suffix in SUFFIXES:
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            names.add(name)
    return sorted(names)


def main(argv):
    if len(argv) > 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    path = Path(argv[1]) if len(argv) == 2 else Path(__file__).with_name("keel-dashboard.json")
    try:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"{path}: {e}", file=sys.stderr)
        return 1
    names = metric_names(dashboard)
    if not names:
        print(f"{path}: no expression names a keel_ metric", file=sys.stderr)
        return 1
    for name in names:
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
