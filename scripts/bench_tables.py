#!/usr/bin/env python3
"""Regenerate the README's benchmark tables from benchmarks/results/ (or check them).

    python scripts/bench_tables.py            # rewrite the tables between <!-- bench:ID --> markers
    python scripts/bench_tables.py --check    # exit 1, naming them, if any table is out of date

Each table comes from the newest record that measured its benchmark (benchmarks/tables.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.record import RESULTS, load_records  # noqa: E402
from benchmarks.tables import stale, update  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--readme", type=Path, default=REPO / "README.md")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of benchmark records")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is out of date")
    args = ap.parse_args(argv)
    records = load_records(args.results)
    text = args.readme.read_text()
    if args.check:
        out = stale(text, records)
        for table_id in out:
            print(f"{args.readme}: table {table_id} is out of date with {args.results}", file=sys.stderr)
        return 1 if out else 0
    new = update(text, records)
    if new != text:
        args.readme.write_text(new)
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
