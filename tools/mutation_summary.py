"""Per-module figures of the last ``mutmut run`` (``make mutants``), as a Markdown table.

``python tools/mutation_summary.py [PATTERN ...]``: only mutants whose name matches a pattern (as given
to ``mutmut run``), e.g. ``'strategies.dominance*'``. A mutant that no test covers counts as surviving;
a timeout counts as caught (the planted bug made the tests hang). Survivors are listed by name:
``mutmut show NAME`` prints the planted change.
"""
from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

MISSED = ("survived", "no tests")
CAUGHT = ("killed", "timeout", "caught by type check", "segfault")


def summarise(mutants_dir: Path, patterns: list[str]) -> tuple[str, list[str]]:
    lines = ["| module | mutants run | caught | surviving | surviving fraction |", "|---|---|---|---|---|"]
    survivors = []
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        results = json.loads(meta.read_text())["exit_code_by_key"]
        statuses = {name: status_by_exit_code[code] for name, code in results.items()
                    if not patterns or any(fnmatch.fnmatch(name, p) for p in patterns)}
        counts = Counter(statuses.values())
        run = sum(counts[s] for s in (*MISSED, *CAUGHT))
        if not run:
            continue
        missed = sum(counts[s] for s in MISSED)
        survivors += sorted(name for name, status in statuses.items() if status in MISSED)
        module = str(meta.relative_to(mutants_dir)).removesuffix(".meta")
        lines.append(f"| `{module}` | {run} | {run - missed} | {missed} | {missed / run:.1%} |")
    return "\n".join(lines), survivors


def main(argv: list[str]) -> int:
    table, survivors = summarise(Path("mutants"), argv)
    print(table)
    if survivors:
        print("\nsurviving mutants (mutmut show NAME):\n" + "\n".join(f"  {name}" for name in survivors))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
