"""Differential test of cron evaluation against cronsim (Debian cron semantics), at scale.

Random expressions (single values, single-value ranges, ranges, `a-b/n`, `a/n`, `*/n`, lists, names,
`L`, `#`, macros, a few invalid ones) x 17 zones x start instants (half of the zoned ones just before
an offset change), five fire times each. Outside DST changes ours must equal cronsim; always ours
must equal the policy oracle; across DST changes a difference must have a documented class
(tests/cron_oracle.py: DST_CLASSES, docs/scheduling.md). Prints the class counts, the mismatches
and cases/s; exits 1 when there is any mismatch.

Run by hand: `.venv/bin/python bench/cron_differential.py [--cases 100000 --seed 1]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import cron_oracle  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fires", type=int, default=5, help="fire times compared per case")
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = cron_oracle.run(args.cases, args.seed, args.fires)
    elapsed = time.perf_counter() - t0
    print(f"cases: {result.cases}, seed {args.seed}, {args.fires} fire times each")
    for cls, n in sorted(result.classes.items(), key=lambda kv: -kv[1]):
        print(f"  {cls:22} {n:7}")
    for cls, why in cron_oracle.DST_CLASSES.items():
        if cls in result.examples:
            print(f"\n{cls}: {why}\n  e.g. {result.examples[cls]}")
    print(f"\nmismatches: {len(result.mismatches)}")
    for line in result.mismatches[:50]:
        print(f"  {line}")
    print(f"time: {elapsed:.1f} s, {result.cases / elapsed:,.0f} cases/s")
    return 1 if result.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
