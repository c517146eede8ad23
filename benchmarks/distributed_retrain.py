"""Distributed retraining on CPU: ``mpn-nas retrain`` with 1 process against ``--devices N`` DDP processes
(gloo), the same architecture, data, seed, global batch and epochs, run side by side in one invocation.

Reports wall time (the whole command: start-up, data, training, test) and test accuracy of each. On a
machine whose cores are shared, the times are what the machine gave in this run, not a property of DDP.

    python benchmarks/distributed_retrain.py                       # digits_routed, 10 epochs, 1 vs 2
    python benchmarks/distributed_retrain.py --devices 1 2 1 2 --out benchmarks/results/distributed_retrain
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def retrain(arch: Path, devices: int, epochs: int, seed: int, out: Path) -> dict:
    command = [sys.executable, "-m", "mpn_nas.cli", "retrain", str(arch), "--dataset", "digits",
               "--epochs", str(epochs), "--seed", str(seed), "--device", "cpu", "--devices", str(devices), "--out", str(out), "--quiet"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    return {"devices": devices, "wall_seconds": round(wall, 1), "train_seconds": metrics["seconds"],
            "test_accuracy": round(metrics["test_accuracy"], 4), "val_accuracy": round(metrics["val_accuracy"], 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=Path, default=REPO / "examples" / "archs" / "digits_routed.json")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [retrain(args.arch, devices, args.epochs, args.seed, Path(tmp) / f"run{index}")
                for index, devices in enumerate(args.devices)]  # e.g. 1 2 1 2: interleaved repeats
    table = ["| processes | wall s | training s | test accuracy | val accuracy |", "|---|---|---|---|---|"]
    table += [f"| {r['devices']} | {r['wall_seconds']} | {r['train_seconds']} | {r['test_accuracy']} | "
              f"{r['val_accuracy']} |" for r in rows]
    header = f"{args.arch.name}, digits, {args.epochs} epochs, seed {args.seed}, global batch 64"
    print(header + "\n" + "\n".join(table))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"setting": header, "rows": rows}, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(f"{header}\n\n" + "\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
