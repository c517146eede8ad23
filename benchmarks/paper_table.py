"""The paper's comparison at matched complexity: routed multi-path networks against widening, plain
multi-path, static cross-connections, squeeze-excitation, an ensemble and a deeper network.

Every variant is an architecture document built from one per-data-set base (stem, stage widths,
strides, path count). The reference is the ``feature_dependent`` network of the base; every other
variant (except ``single``, the one-path base they all grow from, reported for scale) has its stage
widths (and, where widths alone cannot get there, its stem width) chosen so that its parameter count
is within ``--tolerance`` of the reference. Each variant trains for every seed; seed ``s`` also fixes
the data split (and, on ``digits-contexts``, which context each image is rendered in), so variants
are compared pairwise on the same data.

    python benchmarks/paper_table.py                                  # digits-contexts, digits (+ CIFAR on a GPU)
    python benchmarks/paper_table.py --datasets digits-contexts --seeds 5 --jobs 2 --out benchmarks/results/paper_table

Writes ``OUT.md`` (the tables), ``OUT.json`` (every run) and ``OUT.png`` (the plot).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch

from mpn_nas import Arch, build_model
from mpn_nas.complexity import count_params_and_flops, measure_latency_ms
from mpn_nas.errors import UserError, run_script

VARIANTS = ("single", "widened", "deeper", "multipath", "static", "se", "ensemble", "cross_prediction",
            "feature_dependent")
ROUTED = ("cross_prediction", "feature_dependent")
REFERENCE = "feature_dependent"
DESCRIPTIONS = {
    "single": "single path (the base, not matched)",
    "widened": "widened single path",
    "deeper": "deeper single path",
    "multipath": "multi-path, routing `none`",
    "static": "multi-path, static cross-connections",
    "se": "single path + squeeze-excitation, widened",
    "ensemble": "ensemble of single paths",
    "cross_prediction": "routed: `cross_prediction`",
    "feature_dependent": "routed: `feature_dependent` (reference)",
}
# Stage-width scale factors tried when matching parameters: 1/16 steps from 1/4 to 4.
SCALES = tuple(step / 16 for step in range(4, 65))
MAX_DEEPER_BLOCKS = 12


@dataclass(frozen=True)
class Base:
    """The network every variant of one data set is derived from, and how it trains."""

    in_channels: int
    input_size: int
    num_classes: int
    stem_width: int
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    paths: int
    epochs: int
    lr: float = 0.05
    batch_size: int = 64
    needs_gpu: bool = False


# Digits: about 6,500 parameters, a quarter of the shipped digits example, so that capacity is scarce.
DIGITS_BASE = Base(1, 8, 10, stem_width=8, widths=(4, 8), strides=(1, 2), paths=4, epochs=30)
CIFAR_BASE = Base(3, 32, 10, stem_width=16, widths=(16, 32, 64), strides=(1, 2, 2), paths=4, epochs=30, lr=0.1,
                  batch_size=128, needs_gpu=True)
BASES = {"digits-contexts": DIGITS_BASE, "digits": DIGITS_BASE, "cifar10": CIFAR_BASE,
         "cifar100": replace(CIFAR_BASE, num_classes=100)}


# --- variants as architecture documents ------------------------------------------------------------------

def resnet_arch(base: Base, scale: float = 1.0, *, stem_width: Optional[int] = None, paths: int = 1,
                routing: str = "none", blocks: int = 1, se: bool = False, ensemble_size: int = 1) -> Arch:
    """The base network with stage widths times ``scale`` and the given paths, routing, depth, SE."""
    stages = [{"blocks": blocks, "width": max(1, round(width * scale)), "paths": paths, "routing": routing,
               "density": 1.0, "stride": stride, "se": se} for width, stride in zip(base.widths, base.strides)]
    doc = {"format": "mpn-nas/arch", "version": 1, "family": "ensemble" if ensemble_size > 1 else "resnet",
           "in_channels": base.in_channels, "input_size": base.input_size, "num_classes": base.num_classes,
           "stem_width": stem_width or base.stem_width, "stages": stages}
    if ensemble_size > 1:
        doc.update(ensemble_size=ensemble_size, member_family="resnet")
    return Arch.from_dict(doc)


@functools.lru_cache(maxsize=None)
def _param_count(arch_json: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(Arch.from_json(arch_json)).parameters())


def param_count(arch: Arch) -> int:
    """Parameters of the network, built on the meta device (no memory, no initialisation cost)."""
    return _param_count(arch.to_json())


def families(variant: str, base: Base, stem: int) -> Iterable[tuple[Callable[[float], Arch], Sequence[float]]]:
    """Networks of the variant with stem width ``stem``, as ``(arch of a stage-width scale, scales)``
    pairs; parameters grow with the scale within each pair."""
    if variant == "deeper":  # depth, not width, makes up the parameters
        for blocks in range(2, MAX_DEEPER_BLOCKS + 1):
            yield functools.partial(resnet_arch, base, stem_width=stem, blocks=blocks), [s for s in SCALES if s <= 1]
    elif variant == "widened":
        yield functools.partial(resnet_arch, base, stem_width=stem), SCALES
    elif variant == "se":
        yield functools.partial(resnet_arch, base, stem_width=stem, se=True), SCALES
    elif variant == "ensemble":
        yield functools.partial(resnet_arch, base, stem_width=stem, ensemble_size=base.paths), SCALES
    else:  # multi-path: none, static, cross_prediction
        routing = "none" if variant == "multipath" else variant
        yield functools.partial(resnet_arch, base, stem_width=stem, paths=base.paths, routing=routing), SCALES


def matched_arch(variant: str, base: Base, target: int, tolerance: float) -> Arch:
    """The variant's network within ``tolerance`` of ``target`` parameters that changes the base
    least: the base stem if possible (else the nearest stem that works), the stage-width scale
    nearest 1 (in steps of 10%), then the closest parameter count."""
    if variant == "single":
        return resnet_arch(base)
    if variant == REFERENCE:
        return resnet_arch(base, paths=base.paths, routing=REFERENCE)
    closest = math.inf
    for stem in [base.stem_width + delta for delta in (0, -2, 2, -4, 4) if base.stem_width + delta >= 1]:
        best_key, best = None, None
        for make, scales in families(variant, base, stem):
            for scale in scales:
                arch = make(scale)
                params = param_count(arch)
                error = abs(params - target) / target
                closest = min(closest, error)
                key = (round(abs(math.log(scale)), 1), error)
                if error <= tolerance and (best_key is None or key < best_key):
                    best_key, best = key, arch
                if params > target * (1 + tolerance):
                    break  # larger scales only grow further away
        if best is not None:
            return best
    raise UserError(f"no {variant} network within {tolerance:.0%} of {target:,} parameters "
                    f"(closest is {closest:.1%} off); change the base or --tolerance")


# --- training -------------------------------------------------------------------------------------------

def train_one(job: dict) -> dict:
    """Train one (data set, variant, seed) and return its accuracies; runs in a worker process."""
    from mpn_nas.data import make_data
    from mpn_nas.training import TrainConfig, train

    torch.set_num_threads(job["threads"])
    arch = Arch.from_dict(job["arch"])
    data = make_data(job["dataset"], data_dir=job["data_dir"], seed=job["seed"], batch_size=job["batch_size"],
                     num_workers=4 if job["device"] == "cuda" else 0, pin_memory=job["device"] == "cuda")
    config = TrainConfig(epochs=job["epochs"], lr=job["lr"], batch_size=job["batch_size"], seed=job["seed"],
                         device=job["device"])
    started = time.perf_counter()
    _, metrics = train(arch, data, config, progress=False)
    return {"dataset": job["dataset"], "variant": job["variant"], "seed": job["seed"],
            "test_accuracy": metrics["test_accuracy"], "val_accuracy": metrics["val_accuracy"],
            "seconds": round(time.perf_counter() - started, 2)}


def available(dataset: str, base: Base, data_dir: Optional[str], device: str) -> Optional[str]:
    """Why ``dataset`` is skipped on this machine, or ``None`` when it can run."""
    if base.needs_gpu and device != "cuda":
        return "needs a GPU"
    if dataset.startswith("cifar"):
        from mpn_nas.data import make_data
        try:
            make_data(dataset, data_dir=data_dir)
        except UserError as err:
            return str(err)
    return None


# --- statistics and reporting ---------------------------------------------------------------------------

def paired_comparison(variant: list[float], best: list[float]) -> dict:
    """Per-seed differences ``variant - best``: mean, standard deviation, paired t-test p-value, and
    on how many seeds the best routed network was ahead."""
    from scipy import stats

    differences = [v - b for v, b in zip(variant, best)]
    spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
    p_value = float(stats.ttest_rel(variant, best).pvalue) if len(differences) > 1 and spread > 0 else math.nan
    return {"mean": statistics.fmean(differences), "std": spread, "p_value": p_value,
            "routed_ahead": sum(d < 0 for d in differences), "seeds": len(differences)}


def summarise(dataset: str, runs: list[dict], complexity: dict[str, dict]) -> dict:
    """Per variant: accuracies over seeds, their mean and std, and the paired comparison."""
    by_variant: dict[str, dict[int, float]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], {})[run["seed"]] = run["test_accuracy"]
    seeds = sorted(set.intersection(*(set(accs) for accs in by_variant.values())))
    accuracy = {variant: [accs[s] for s in seeds] for variant, accs in by_variant.items()}
    routed = [v for v in ROUTED if v in accuracy]
    best = max(routed, key=lambda v: statistics.fmean(accuracy[v])) if routed else None
    rows = {}
    for variant, values in accuracy.items():
        rows[variant] = {"accuracies": values, "mean": statistics.fmean(values),
                         "std": statistics.stdev(values) if len(values) > 1 else 0.0, **complexity[variant]}
        if best and variant != best:
            rows[variant]["vs_best_routed"] = paired_comparison(values, accuracy[best])
    return {"dataset": dataset, "seeds": seeds, "best_routed": best, "variants": rows}


def markdown_table(summary: dict, reference_params: int, settings: str) -> str:
    best = summary["best_routed"]
    lines = [f"### `{summary['dataset']}`", "",
             f"{settings}; seeds {', '.join(map(str, summary['seeds']))}; reference {reference_params:,} parameters. "
             f"Δ: per-seed difference to the best routed variant (`{best}`), paired t-test p, and on how many seeds "
             "the best routed variant was ahead.", "",
             "| variant | params | FLOPs | latency ms | test accuracy (mean ± std) | Δ vs best routed | p | routed ahead |",
             "|---|---|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        row = summary["variants"].get(variant)
        if row is None:
            continue
        comparison = row.get("vs_best_routed")
        if comparison:
            delta = f"{comparison['mean'] * 100:+.2f} ± {comparison['std'] * 100:.2f}"
            p_value = "–" if math.isnan(comparison["p_value"]) else f"{comparison['p_value']:.3f}"
            ahead = f"{comparison['routed_ahead']}/{comparison['seeds']}"
        else:
            delta, p_value, ahead = "(best routed)", "", ""
        lines.append(f"| {DESCRIPTIONS[variant]} | {row['params']:,} | {row['flops']:,} | {row['latency_ms']:.2f} | "
                     f"{row['mean'] * 100:.2f} ± {row['std'] * 100:.2f} | {delta} | {p_value} | {ahead} |")
    return "\n".join(lines)


def plot(summaries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(summaries), figsize=(6 * len(summaries), 4.5), squeeze=False)
    for axis, summary in zip(axes[0], summaries):
        names = [v for v in VARIANTS if v in summary["variants"]]
        rows = [summary["variants"][v] for v in names]
        colours = ["tab:orange" if v in ROUTED else "tab:grey" if v == "single" else "tab:blue" for v in names]
        positions = range(len(names))
        axis.bar(positions, [r["mean"] * 100 for r in rows], yerr=[r["std"] * 100 for r in rows], color=colours,
                 alpha=0.7, capsize=3)
        for position, row in zip(positions, rows):
            axis.plot([position] * len(row["accuracies"]), [a * 100 for a in row["accuracies"]], "k.", markersize=4)
        lowest = min(min(r["accuracies"]) for r in rows) * 100
        axis.set_ylim(max(0.0, lowest - 3), 100)
        axis.set_xticks(list(positions), names, rotation=45, ha="right")
        axis.set_ylabel("test accuracy (%)")
        axis.set_title(f"{summary['dataset']} ({len(summary['seeds'])} seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --- main -----------------------------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["digits-contexts", "digits", "cifar10", "cifar100"],
                        choices=tuple(BASES), help="CIFAR runs only where its data and a GPU are present")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1")
    parser.add_argument("--epochs", type=int, default=None, help="override the per-data-set default")
    parser.add_argument("--tolerance", type=float, default=0.05, help="allowed relative parameter difference")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel training processes")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--data-dir", default=None, help="where the CIFAR files are")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/paper_table"),
                        help="writes OUT.md, OUT.json and OUT.png")
    parser.add_argument("--latency-rounds", type=int, default=5, help="interleaved rounds of latency measurement")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: take the runs from OUT.json, re-measure complexity, rewrite the report")
    return parser.parse_args(argv)


def interleaved_latency_ms(archs: dict[str, Arch], rounds: int = 5) -> dict[str, float]:
    """Batch-1 CPU latency of each network on one thread (small networks run fastest that way, and
    other processes' load then slows every variant alike): medians of ``rounds`` interleaved rounds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times: dict[str, list[float]] = {name: [] for name in archs}
        for _ in range(rounds):
            for name, arch in archs.items():
                times[name].append(measure_latency_ms(arch, repeats=10))
    finally:
        torch.set_num_threads(threads)
    return {name: statistics.median(values) for name, values in times.items()}


def train_all(jobs: list[dict], workers: int) -> list[dict]:
    """Every job's result, training ``workers`` networks at a time."""
    runs = []
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for run in pool.map(train_one, jobs):
                runs.append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
    else:
        for job in jobs:
            runs.append(train_one(job))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    return runs


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    variants = [v for v in VARIANTS if v in args.variants]
    jobs, plans, notes = [], {}, []
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs)) if device == "cpu" else 4
    for dataset in args.datasets:
        base = BASES[dataset]
        skipped = available(dataset, base, args.data_dir, device)
        if skipped:
            notes.append(f"`{dataset}` skipped: {skipped}.")
            print(f"skipping {dataset}: {skipped}", file=sys.stderr)
            continue
        epochs = args.epochs or base.epochs
        target = param_count(resnet_arch(base, paths=base.paths, routing=REFERENCE))
        archs = {v: matched_arch(v, base, target, args.tolerance) for v in variants}
        plans[dataset] = {"base": base, "epochs": epochs, "target": target, "archs": archs}
        for seed in range(args.seeds):
            for variant in variants:
                jobs.append({"dataset": dataset, "variant": variant, "seed": seed, "arch": archs[variant].to_dict(),
                             "epochs": epochs, "lr": base.lr, "batch_size": base.batch_size, "device": device,
                             "data_dir": args.data_dir, "threads": threads})
    command = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only")
    if args.report_only:
        previous = json.loads(args.out.with_suffix(".json").read_text())
        runs, command = previous["runs"], previous.get("command", command)
        training_minutes = previous.get("training_minutes")
    else:
        started = time.perf_counter()
        runs = train_all(jobs, args.jobs)
        training_minutes = (time.perf_counter() - started) / 60
    summaries, sections = [], []
    for dataset, plan in plans.items():
        latency = interleaved_latency_ms(plan["archs"], args.latency_rounds)
        complexity = {}
        for variant, arch in plan["archs"].items():
            params, flops = count_params_and_flops(arch)
            complexity[variant] = {"params": params, "flops": flops, "latency_ms": latency[variant],
                                   "arch": arch.to_dict()}
        summary = summarise(dataset, [r for r in runs if r["dataset"] == dataset], complexity)
        summaries.append(summary)
        settings = (f"{plan['epochs']} epochs, SGD lr {plan['base'].lr}, batch {plan['base'].batch_size}, "
                    f"{device}; latency: batch 1, CPU, 1 thread, median of {args.latency_rounds} interleaved rounds")
        sections.append(markdown_table(summary, plan["target"], settings))
    took = "" if training_minutes is None else f", {training_minutes:.1f} min with {args.jobs} jobs"
    header = (f"Measured with `python benchmarks/paper_table.py {command}` ({len(runs)} training runs{took}, "
              f"torch {torch.__version__}). Every variant except the single-path base has within "
              f"{args.tolerance:.0%} of the reference's parameters.")
    text = "\n\n".join([header, *sections, *notes]) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "training_minutes": training_minutes, "runs": runs,
                                                          "summaries": summaries}, indent=1) + "\n")
    if summaries:
        plot(summaries, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    run_script(main, "paper_table")
