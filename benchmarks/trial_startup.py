"""Trials per minute of a ``--engine ts`` search with cold trial processes (each a fresh Python) and
with warm ones (forked from a process that imported torch and Lightning once: strategies.warm_trials),
side by side in one process, alternating which goes first; plus what a cold trial process spends
importing before it can train.

    python benchmarks/trial_startup.py --out benchmarks/results/trial_startup
    python benchmarks/trial_startup.py --trials 4 --repeats 1        # quick

Every search: ``mpn-nas search --engine ts --concurrency 2`` on ``digits`` (tiny resnet space,
``--trials`` trials of ``--epochs`` epochs, seed 0), run through the command line in a subprocess.
Trials per minute = trials / the search's ``summary.json`` seconds (NNI's manager start-up excluded).
Writes ``OUT.md`` and ``OUT.json`` when ``--out`` is given.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from mpn_nas.errors import run_script

REPO = Path(__file__).resolve().parents[1]
TINY_SPACE = {"widths": [[4, 8], [8, 16]], "blocks": [1], "path_counts": [1, 2, 4]}
TRIAL_IMPORTS = "import nni.nas.execution.training_service, search_spaces.spaces, strategies.evaluation"


def import_seconds() -> float:
    """Wall seconds a fresh Python takes for what a cold ts trial imports before training."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", TRIAL_IMPORTS], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def search(work: Path, warm: bool, trials: int, epochs: int, port: int) -> dict:
    out = work / ("warm" if warm else "cold")
    space = work / "space.json"
    space.write_text(json.dumps(TINY_SPACE))
    command = [sys.executable, "-m", "mpn_nas.cli", "search", "--engine", "ts", "--concurrency", "2", "--port",
               str(port), "--space-config", str(space), "--trials", str(trials), "--epochs", str(epochs),
               "--seed", "0", "--out", str(out), "--force", "--quiet", *([] if warm else ["--cold-trials"])]
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text())
    trained = summary["trials_succeeded"] + summary["trials_failed"]
    return {"warm": warm, "trials": trained, "search_seconds": summary["seconds"], "wall_seconds": round(wall, 1),
            "trials_per_minute": round(60 * trained / summary["seconds"], 2)}


def markdown(runs: list[dict], imports: list[float], command: str) -> str:
    def median(warm: bool, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["warm"] == warm)

    cold, warm = median(False, "trials_per_minute"), median(True, "trials_per_minute")
    lines = [f"Measured with `python benchmarks/trial_startup.py {command}` (median of "
             f"{sum(not r['warm'] for r in runs)} searches each; {os.cpu_count()} cores).", "",
             "| trial processes | trials per minute | search seconds |", "|---|---|---|",
             f"| cold (a fresh Python each) | {cold:.2f} | {median(False, 'search_seconds'):.1f} |",
             f"| warm (forked after torch and Lightning) | {warm:.2f} | {median(True, 'search_seconds'):.1f} |",
             "", f"Warm / cold: {warm / cold:.2f}x the trials per minute. A fresh Python importing what a cold "
             f"trial imports before training (`{TRIAL_IMPORTS}`): median {statistics.median(imports):.1f} s."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--port", type=int, default=8190)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    runs, imports = [], []
    with tempfile.TemporaryDirectory() as work:
        for repeat in range(args.repeats):
            imports.append(import_seconds())
            for warm in ((False, True) if repeat % 2 == 0 else (True, False)):
                runs.append(search(Path(work), warm, args.trials, args.epochs, args.port))
                print(json.dumps(runs[-1]), flush=True)
    command = " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(runs, imports, command)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out + ".md").write_text(text)
        Path(args.out + ".json").write_text(json.dumps({"runs": runs, "import_seconds": imports}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    run_script(main, "trial_startup")
