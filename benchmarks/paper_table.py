"""The paper's comparison at matched complexity: routed multi-path networks against widening, plain
multi-path, static cross-connections, squeeze-excitation, selective kernels, split attention, an
ensemble, a deeper network and the architecture ``mpn-nas search`` finds under the same budget.

Every variant is an architecture document built from one base per data set, derived from the data's
shape and class count (stem, stage widths, strides, path count; three stages from 16x16 inputs up,
as the search spaces do). The reference is the ``feature_dependent`` network of the base; every
other variant (except ``single``, the one-path base they all grow from, reported for scale) has its
stage widths (and, where widths alone cannot get there, its stem width) chosen so that its parameter
count is within ``--tolerance`` of the reference. ``searched`` is the best of a budgeted evolution
(``--search-trials`` trials, at most the reference's parameters plus the tolerance, seed 0's split).
Each variant trains for every seed with the same recipe; seed ``s`` fixes the data split, made once
per seed and handed to every variant (and, on ``digits-contexts``, which context each image is
rendered in), so variants are compared pairwise on the same data.

    python benchmarks/paper_table.py                                  # digits-contexts, digits, CIFAR where present
    python benchmarks/paper_table.py --datasets imagefolder:DIR --input-size 16 --in-channels 1 --seeds 3

Writes ``OUT.md`` (the tables), ``OUT.json`` (every run) and ``OUT.png`` (the plot). Data sets already
in ``OUT.json`` and not run again are kept (``--fresh`` drops them): one combined table for all.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch

from mpn_nas import Arch, build_model
from mpn_nas.arch import ArchError
from mpn_nas.complexity import count_params_and_flops, measure_latency_ms
from mpn_nas.data import DataShape, check_dataset_name
from mpn_nas.datasets import DATASET_USAGE
from mpn_nas.errors import UserError, run_script

VARIANTS = ("single", "widened", "deeper", "multipath", "static", "se", "selective_kernel", "split_attention",
            "ensemble", "cross_prediction", "feature_dependent", "searched")
ROUTED = ("cross_prediction", "feature_dependent")
REFERENCE = "feature_dependent"
DESCRIPTIONS = {
    "single": "single path (the base, not matched)",
    "widened": "widened single path",
    "deeper": "deeper single path",
    "multipath": "multi-path, routing `none`",
    "static": "multi-path, static cross-connections",
    "se": "single path + squeeze-excitation, widened",
    "selective_kernel": "single path, selective-kernel blocks (SKNet), widened",
    "split_attention": "single path, split-attention blocks (ResNeSt), widened",
    "ensemble": "ensemble of single paths",
    "cross_prediction": "routed: `cross_prediction`",
    "feature_dependent": "routed: `feature_dependent` (reference)",
    "searched": "searched: `mpn-nas search` under the reference's budget",
}
# Variants that are one-path networks of the base with another block kind (mpn_nas.layers.BLOCK_KINDS).
BLOCK_VARIANTS = ("selective_kernel", "split_attention")
# Stage-width scale factors tried when matching parameters: 1/16 steps from 1/4 to 4.
SCALES = tuple(step / 16 for step in range(4, 65))
MAX_DEEPER_BLOCKS = 12
# Inputs at least this large get the three-stage base, as search_spaces.config.default_config does.
LARGE_INPUT = 16


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
    cpu_epochs: Optional[int] = None  # default on CPU where training the base takes long (None: epochs)


def base_for(shape: DataShape) -> Base:
    """The base for data of ``shape``. Small inputs (digits): about 6,500 parameters at 10 classes, a
    quarter of the shipped digits example, so that capacity is scarce. From 16x16 up: the CIFAR-style
    three stages of 16/32/64 channels, which on CPU default to a few epochs (see :func:`main`'s warning)."""
    if shape.input_size >= LARGE_INPUT:
        return Base(shape.in_channels, shape.input_size, shape.num_classes, stem_width=16, widths=(16, 32, 64),
                    strides=(1, 2, 2), paths=4, epochs=30, lr=0.1, batch_size=128, cpu_epochs=3)
    return Base(shape.in_channels, shape.input_size, shape.num_classes, stem_width=8, widths=(4, 8),
                strides=(1, 2), paths=4, epochs=30)


DIGITS_BASE = base_for(DataShape(1, 8, 10))


# --- variants as architecture documents ------------------------------------------------------------------

def resnet_arch(base: Base, scale: float = 1.0, *, stem_width: Optional[int] = None, paths: int = 1,
                routing: str = "none", blocks: int = 1, se: bool = False, ensemble_size: int = 1,
                block: str = "basic") -> Arch:
    """The base network with stage widths times ``scale`` and the given paths, routing, depth, SE, block kind."""
    stages = [{"blocks": blocks, "width": max(1, round(width * scale)), "paths": paths, "routing": routing,
               "density": 1.0, "stride": stride, "se": se, "block": block}
              for width, stride in zip(base.widths, base.strides)]
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
    elif variant in BLOCK_VARIANTS:
        yield functools.partial(resnet_arch, base, stem_width=stem, block=variant), SCALES
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
                try:
                    arch = make(scale)
                except ArchError:  # e.g. split attention's radix does not divide an odd width: skip that scale
                    continue
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


# --- data and training ---------------------------------------------------------------------------------

def dataset_name(text: str) -> str:
    """``--datasets`` entries: every name :func:`mpn_nas.data.make_data` accepts (``imagefolder:PATH`` too)."""
    try:
        check_dataset_name(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def requested_shape(dataset: str, args: argparse.Namespace) -> DataShape:
    """The shape asked of data sets whose shape is not fixed (``imagefolder``, ``fake``); classes
    of an image folder come from its sub-folders."""
    return DataShape(args.in_channels, args.input_size, 10)


def make_split(dataset: str, seed: int, shape: DataShape, data_dir: Optional[str]) -> tuple[DataShape, dict]:
    """The data's real shape and its train/validation/test indices for ``seed`` (``None`` for a part
    that is not a subset, such as CIFAR's official test set), made once and handed to every variant."""
    from mpn_nas.data import make_data

    data = make_data(dataset, data_dir=data_dir, seed=seed, shape=shape)
    split = {part: list(map(int, subset.indices)) if hasattr(subset, "indices") else None
             for part, subset in (("train", data.train_set), ("val", data.val_set), ("test", data.test_set))}
    return data.shape, split


def split_text(split: dict) -> str:
    """Sizes of the parts (seed 0's; every seed's are the same size), for the report."""
    sizes = "/".join("all" if indices is None else f"{len(indices):,}" for indices in split.values())
    return (f"split train/val/test {sizes}, made once per seed and shared by every variant (stratified by class; "
            "image folders under 30 images: every third image held out)")


def split_digest(split: dict) -> str:
    """A short hash of a split: every run records the split it trained on."""
    return hashlib.sha1(json.dumps(split, sort_keys=True).encode()).hexdigest()[:12]


def train_one(job: dict) -> dict:
    """Train one (data set, variant, seed) and return its accuracies; runs in a worker process."""
    from torch.utils.data import Subset

    from mpn_nas.data import make_data
    from mpn_nas.training import TrainConfig, train

    torch.set_num_threads(job["threads"])
    arch = Arch.from_dict(job["arch"])
    data = make_data(job["dataset"], data_dir=job["data_dir"], seed=job["seed"], batch_size=job["batch_size"],
                     shape=DataShape(arch.in_channels, arch.input_size, arch.num_classes),
                     num_workers=4 if job["device"] == "cuda" else 0, pin_memory=job["device"] == "cuda")
    for part, indices in job["split"].items():  # the split the main process made once for this seed
        if indices is not None:
            subset = getattr(data, f"{part}_set")
            setattr(data, f"{part}_set", Subset(subset.dataset, indices))
    config = TrainConfig(epochs=job["epochs"], lr=job["lr"], batch_size=job["batch_size"], seed=job["seed"],
                         device=job["device"])
    started = time.perf_counter()
    _, metrics = train(arch, data, config, progress=False)
    return {"dataset": job["dataset"], "variant": job["variant"], "seed": job["seed"],
            "test_accuracy": metrics["test_accuracy"], "val_accuracy": metrics["val_accuracy"],
            "split": split_digest(job["split"]), "seconds": round(time.perf_counter() - started, 2)}


def search_arch(dataset: str, base: Base, budget: int, args: argparse.Namespace, epochs: int, device: str,
                folder: Path) -> tuple[Arch, float]:
    """``mpn-nas search`` (budgeted evolution, ``--search-trials`` trials, seed 0's split) over a space
    around the base, at most ``budget`` parameters; its best architecture and the search's minutes."""
    doubled = [sorted({max(1, width // 2), width, width * 2}) for width in base.widths]
    space = {"in_channels": base.in_channels, "input_size": base.input_size, "num_classes": base.num_classes,
             "stem_width": base.stem_width, "widths": doubled, "strides": list(base.strides),
             "path_counts": [1, 2, base.paths], "blocks": [1, 2]}
    folder.mkdir(parents=True, exist_ok=True)
    space_file = folder / "space.json"
    space_file.write_text(json.dumps(space) + "\n")
    command = [sys.executable, "-m", "mpn_nas.cli", "search", "--dataset", dataset, "--space-config", str(space_file),
               "--strategy", "evolution", "--max-params", str(budget), "--trials", str(args.search_trials),
               "--epochs", str(epochs), "--seed", "0", "--lr", str(base.lr), "--batch-size", str(base.batch_size),
               "--device", device, "--out", str(folder / "search"), "--force", "--quiet"]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    minutes = (time.perf_counter() - started) / 60
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
        raise UserError(f"the search for the searched row failed on {dataset}: {lines[-1]}")
    return Arch.from_json(folder / "search" / "best_arch.json"), minutes


def cpu_minutes_estimate(arch: Arch, base: Base, images: int, epochs: int, runs: int, workers: int) -> float:
    """Minutes to train ``runs`` networks like ``arch``, from two timed training steps on this CPU."""
    model = build_model(arch).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(base.batch_size, arch.in_channels, arch.input_size, arch.input_size)
    y = torch.randint(0, arch.num_classes, (base.batch_size,))
    times = []
    for _ in range(3):
        started = time.perf_counter()
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
        times.append(time.perf_counter() - started)
    step = min(times[1:])
    return step * math.ceil(images / base.batch_size) * epochs * runs / max(1, workers) / 60


def unavailable(dataset: str, shape: DataShape, data_dir: Optional[str]) -> Optional[str]:
    """Why ``dataset`` is skipped on this machine (CIFAR without its files), or ``None`` when it can run."""
    if not dataset.startswith("cifar"):
        return None  # bundled, generated, or a folder the user named: its problems are errors, not skips
    from mpn_nas.data import make_data
    try:
        make_data(dataset, data_dir=data_dir, shape=shape)
    except UserError as err:
        return str(err)
    return None


# --- statistics and reporting ---------------------------------------------------------------------------

def confidence_interval(values: Sequence[float], level: float = 0.95) -> float:
    """Half-width of the Student-t confidence interval of the mean (NaN for one value)."""
    from scipy import stats

    if len(values) < 2:
        return math.nan
    return float(stats.t.ppf((1 + level) / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))


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
    """Per variant: accuracies over seeds, their mean, std and 95% CI, and the paired comparison."""
    by_variant: dict[str, dict[int, float]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], {})[run["seed"]] = run["test_accuracy"]
    splits: dict[int, set] = {}
    for run in runs:
        splits.setdefault(run["seed"], set()).add(run.get("split"))
    shared = [seed for seed, digests in splits.items() if len(digests) > 1]
    if shared:
        raise RuntimeError(f"{dataset}: variants of seed {shared[0]} trained on different splits")
    seeds = sorted(set.intersection(*(set(accs) for accs in by_variant.values())))
    accuracy = {variant: [accs[s] for s in seeds] for variant, accs in by_variant.items()}
    routed = [v for v in ROUTED if v in accuracy]
    best = max(routed, key=lambda v: statistics.fmean(accuracy[v])) if routed else None
    rows = {}
    for variant, values in accuracy.items():
        rows[variant] = {"accuracies": values, "mean": statistics.fmean(values),
                         "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                         "ci95": confidence_interval(values), **complexity[variant]}
        if best and variant != best:
            rows[variant]["vs_best_routed"] = paired_comparison(values, accuracy[best])
    return {"dataset": dataset, "seeds": seeds, "best_routed": best, "variants": rows}


def _percent_or_dash(value: float) -> str:
    return "–" if math.isnan(value) else f"{value * 100:.2f}"


def markdown_table(summary: dict, reference_params: int, settings: str) -> str:
    best = summary["best_routed"]
    lines = [f"### `{summary['dataset']}` ({summary['shape']})", "",
             f"{settings}; {summary['split']}; seeds {', '.join(map(str, summary['seeds']))}; reference {reference_params:,} parameters. "
             "95% CI: Student-t interval of the mean over seeds. "
             f"Δ: per-seed difference to the best routed variant (`{best}`), paired t-test p, and on how many seeds "
             "the best routed variant was ahead.", "",
             "| variant | params | FLOPs | latency ms | test accuracy (mean ± std) | 95% CI | Δ vs best routed | p "
             "| routed ahead |",
             "|---|---|---|---|---|---|---|---|---|"]
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
        ci = "–" if math.isnan(row["ci95"]) else f"± {row['ci95'] * 100:.2f}"
        lines.append(f"| {DESCRIPTIONS[variant]} | {row['params']:,} | {row['flops']:,} | {row['latency_ms']:.2f} | "
                     f"{row['mean'] * 100:.2f} ± {row['std'] * 100:.2f} | {ci} | {delta} | {p_value} | {ahead} |")
    if "search" in summary:
        search = summary["search"]
        lines += ["", f"`searched`: {search['trials']} trials of {search['epochs']} epochs, budget "
                      f"{search['budget']:,} parameters, {search['minutes']:.1f} min of search before its retraining "
                      f"(`{search['command']}`)."]
    return "\n".join(lines)


def combined_table(summaries: list[dict]) -> str:
    """One row per variant, one column per data set: test accuracy mean ± 95% CI (percent)."""
    lines = ["### All data sets", "", "Test accuracy, mean ± 95% CI over seeds (%); **bold**: the best mean.", "",
             "| variant | " + " | ".join(f"`{s['dataset']}`" for s in summaries) + " |",
             "|---|" + "---|" * len(summaries)]
    best = {s["dataset"]: max(row["mean"] for row in s["variants"].values()) for s in summaries}
    for variant in VARIANTS:
        cells = []
        for summary in summaries:
            row = summary["variants"].get(variant)
            if row is None:
                cells.append("")
                continue
            ci = "" if math.isnan(row["ci95"]) else f" ± {row['ci95'] * 100:.2f}"
            text = f"{row['mean'] * 100:.2f}{ci}"
            cells.append(f"**{text}**" if row["mean"] == best[summary["dataset"]] else text)
        if any(cells):
            lines.append(f"| {DESCRIPTIONS[variant]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summaries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(summaries), figsize=(6 * len(summaries), 4.5), squeeze=False)
    for axis, summary in zip(axes[0], summaries):
        names = [v for v in VARIANTS if v in summary["variants"]]
        rows = [summary["variants"][v] for v in names]
        colours = ["tab:orange" if v in ROUTED else "tab:grey" if v == "single" else "tab:green" if v == "searched"
                   else "tab:blue" for v in names]
        positions = range(len(names))
        errors = [0.0 if math.isnan(r["ci95"]) else r["ci95"] * 100 for r in rows]
        axis.bar(positions, [r["mean"] * 100 for r in rows], yerr=errors, color=colours, alpha=0.7, capsize=3)
        for position, row in zip(positions, rows):
            axis.plot([position] * len(row["accuracies"]), [a * 100 for a in row["accuracies"]], "k.", markersize=4)
        lowest = min(min(r["accuracies"]) for r in rows) * 100
        axis.set_ylim(max(0.0, lowest - 3), 100)
        axis.set_xticks(list(positions), names, rotation=45, ha="right")
        axis.set_ylabel("test accuracy (%), bars: 95% CI")
        axis.set_title(f"{summary['dataset']} ({len(summary['seeds'])} seeds)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --- main -----------------------------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", type=dataset_name, default=["digits-contexts", "digits", "cifar10",
                                                                            "cifar100"],
                        help=f"any of {DATASET_USAGE}; CIFAR is skipped where its files are absent")
    parser.add_argument("--input-size", type=int, default=32, help="image size for imagefolder and fake (default 32)")
    parser.add_argument("--in-channels", type=int, default=3, choices=(1, 3),
                        help="channels for imagefolder and fake (default 3)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1")
    parser.add_argument("--epochs", type=int, default=None, help="override the per-data-set default")
    parser.add_argument("--tolerance", type=float, default=0.05, help="allowed relative parameter difference")
    parser.add_argument("--search-trials", type=int, default=8, help="trials of the searched row's evolution")
    parser.add_argument("--search-epochs", type=int, default=None,
                        help="epochs per search trial (default: a third of the training epochs)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel training processes")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--data-dir", default=None, help="where the CIFAR files are")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/paper_table"),
                        help="writes OUT.md, OUT.json and OUT.png")
    parser.add_argument("--fresh", action="store_true", help="drop the data sets of an earlier OUT.json")
    parser.add_argument("--latency-rounds", type=int, default=5, help="interleaved rounds of latency measurement")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: take the runs from OUT.json, re-measure complexity, rewrite the report")
    args = parser.parse_args(argv)
    for name in ("input_size", "seeds", "search_trials", "jobs", "latency_rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.epochs is not None and args.epochs < 1 or args.search_epochs is not None and args.search_epochs < 1:
        parser.error("--epochs and --search-epochs must be >= 1")
    if not 0 < args.tolerance < 1:
        parser.error("--tolerance must be in (0, 1)")
    return args


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


def previous_results(path: Path) -> dict:
    """The per-data-set entries of an earlier ``OUT.json`` (empty when absent or of the old layout)."""
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()).get("datasets", {}))
    except (json.JSONDecodeError, AttributeError):
        raise UserError(f"{path} is not a paper_table result; pass --fresh or another --out") from None


def plan_dataset(dataset: str, args: argparse.Namespace, variants: list[str], device: str, workers: int,
                 folder: Path) -> Optional[dict]:
    """Shape, base, matched architectures and one split per seed of ``dataset`` (``None``: skipped)."""
    shape = requested_shape(dataset, args)
    skipped = unavailable(dataset, shape, args.data_dir)
    if skipped:
        print(f"skipping {dataset}: {skipped}", file=sys.stderr)
        return {"skipped": skipped}
    shape, first_split = make_split(dataset, 0, shape, args.data_dir)
    splits = [first_split] + [make_split(dataset, seed, shape, args.data_dir)[1] for seed in range(1, args.seeds)]
    base = base_for(shape)
    epochs = args.epochs or (base.cpu_epochs if device == "cpu" and base.cpu_epochs else base.epochs)
    target = param_count(resnet_arch(base, paths=base.paths, routing=REFERENCE))
    archs = {v: matched_arch(v, base, target, args.tolerance) for v in variants if v != "searched"}
    plan = {"shape": shape, "base": base, "epochs": epochs, "target": target, "archs": archs, "splits": splits}
    if base.cpu_epochs and device == "cpu" and not args.report_only:
        runs = len(variants) * args.seeds
        minutes = cpu_minutes_estimate(archs.get(REFERENCE, resnet_arch(base, paths=base.paths, routing=REFERENCE)),
                                       base, len(first_split["train"] or []), epochs, runs, workers)
        print(f"warning: {dataset} on CPU: {runs} trainings of {epochs} epochs each (a GPU gets the default "
              f"{base.epochs}) take about {minutes:.0f} min here; pass --epochs to change that", file=sys.stderr)
    if "searched" in variants:
        search_epochs = args.search_epochs or max(1, epochs // 3)
        budget = int(target * (1 + args.tolerance))
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset)
        if args.report_only:
            archs["searched"] = Arch.from_json(folder / slug / "search" / "best_arch.json")
            minutes = math.nan
        else:
            archs["searched"], minutes = search_arch(dataset, base, budget, args, search_epochs, device, folder / slug)
        plan["search"] = {"trials": args.search_trials, "epochs": search_epochs, "budget": budget,
                          "minutes": minutes, "command": f"mpn-nas search --strategy evolution --max-params {budget} "
                                                         f"--trials {args.search_trials} --epochs {search_epochs} --seed 0"}
    return plan


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    variants = [v for v in VARIANTS if v in args.variants]
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs)) if device == "cpu" else 4
    results_path = args.out.with_suffix(".json")
    kept = {} if args.fresh else previous_results(results_path)
    search_folder = args.out.parent / (args.out.name + "_search")
    jobs, plans = [], {}
    for dataset in dict.fromkeys(args.datasets):
        plan = plan_dataset(dataset, args, variants, device, args.jobs, search_folder)
        plans[dataset] = plan
        if "skipped" in plan:
            continue
        for seed in range(args.seeds):
            for variant in variants:
                jobs.append({"dataset": dataset, "variant": variant, "seed": seed,
                             "arch": plan["archs"][variant].to_dict(), "epochs": plan["epochs"], "lr": plan["base"].lr,
                             "batch_size": plan["base"].batch_size, "device": device, "data_dir": args.data_dir,
                             "threads": threads, "split": plan["splits"][seed]})
    command = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only")
    if args.report_only:
        runs = [run for dataset in plans for run in kept.get(dataset, {}).get("runs", [])]
        training_minutes = None
    else:
        started = time.perf_counter()
        runs = train_all(jobs, args.jobs)
        training_minutes = (time.perf_counter() - started) / 60
    for dataset, plan in plans.items():
        if "skipped" in plan:
            kept[dataset] = {"skipped": plan["skipped"], "command": command}
            continue
        latency = interleaved_latency_ms(plan["archs"], args.latency_rounds)
        complexity = {}
        for variant, arch in plan["archs"].items():
            params, flops = count_params_and_flops(arch)
            complexity[variant] = {"params": params, "flops": flops, "latency_ms": latency[variant],
                                   "arch": arch.to_dict()}
        dataset_runs = [r for r in runs if r["dataset"] == dataset]
        summary = summarise(dataset, dataset_runs, complexity)
        shape = plan["shape"]
        summary["shape"] = f"{shape.in_channels}×{shape.input_size}×{shape.input_size}, {shape.num_classes} classes"
        summary["split"] = split_text(plan["splits"][0])
        if "search" in plan:
            summary["search"] = plan["search"]
        took = "" if training_minutes is None else f"; all data sets of the command: {training_minutes:.1f} min"
        settings = (f"Measured with `python benchmarks/paper_table.py {command}`{took}. "
                    f"{plan['epochs']} epochs, SGD lr {plan['base'].lr}, batch {plan['base'].batch_size}, {device}; "
                    f"latency: batch 1, CPU, 1 thread, median of {args.latency_rounds} interleaved rounds")
        kept[dataset] = {"command": command, "runs": dataset_runs, "summary": summary,
                         "section": markdown_table(summary, plan["target"], settings)}
    summaries = [entry["summary"] for entry in kept.values() if "summary" in entry]
    notes = [f"`{name}` skipped: {entry['skipped']}." for name, entry in kept.items() if "skipped" in entry]
    header = (f"Paper table, torch {torch.__version__}. Every variant except the single-path base has within "
              f"{args.tolerance:.0%} of its data set's reference parameters (`searched`: at most the reference's "
              f"plus {args.tolerance:.0%}).")
    parts = [header, *([combined_table(summaries)] if summaries else []),
             *(entry["section"] for entry in kept.values() if "section" in entry), *notes]
    text = "\n\n".join(parts) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    results_path.write_text(json.dumps({"datasets": kept}, indent=1) + "\n")
    if summaries:
        plot(summaries, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    run_script(main, "paper_table")
