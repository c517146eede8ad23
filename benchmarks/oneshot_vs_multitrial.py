"""One-shot strategies against budgeted multi-trial evolution, side by side in one process.

On one data set (default ``digits-contexts``) and one parameter budget, every strategy searches the
multi-path ResNet space with ``mpn-nas search``'s own code: multi-trial ``evolution`` (``--trials``
trials of ``--trial-epochs`` epochs each) and the one-shot ``darts``, ``gumbel``, ``spos`` and
``proxyless`` (one supernet of ``--supernet-epochs`` epochs, then ``--subnets`` subnets evaluated
with inherited weights). Each search's best architecture is retrained with one recipe for all
(``--retrain-epochs``, seeds ``0..--seeds-1``) and its test accuracy reported: median and range.

The supernet's ranking is measured too: ``--rank-subnets`` feasible subnets drawn at random are
scored with the ``spos`` supernet's weights (batch norm recalibrated) and trained stand-alone
(``--trial-epochs`` epochs, as a multi-trial trial); reported as Spearman's and Kendall's rank
correlations between the two accuracies.

    python benchmarks/oneshot_vs_multitrial.py --out benchmarks/results/oneshot_vs_multitrial
    python benchmarks/oneshot_vs_multitrial.py --strategies evolution spos --trials 4 --seeds 1  # quick

Writes ``OUT.md`` (the tables) and ``OUT.json`` (every number) when ``--out`` is given.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from mpn_nas.errors import UserError, run_script

STRATEGIES = ("evolution", "darts", "gumbel", "spos", "proxyless")


def search(strategy: str, args: argparse.Namespace, out: Path) -> dict:
    """One search with ``mpn-nas search``'s code; returns wall time and the best architecture."""
    from search_spaces.budget import Budget
    from mpn_nas.recipe import TrainConfig
    from strategies.search import SearchSettings, run_search

    oneshot = strategy != "evolution"
    settings = SearchSettings(out=out, space="resnet", dataset=args.dataset, strategy=strategy,
                              budget=Budget(max_params=args.max_params), trials=args.subnets if oneshot else args.trials,
                              training=TrainConfig(epochs=args.supernet_epochs if oneshot else args.trial_epochs,
                                                   batch_size=args.batch_size, seed=args.search_seed, device="cpu"),
                              quiet=True)
    started = time.time()
    summary = run_search(settings)
    seconds = time.time() - started
    return {"strategy": strategy, "search_seconds": round(seconds, 1),
            "best_arch": json.loads((out / "best_arch.json").read_text()),
            "best_params": summary["best"]["params"], "search_val_accuracy": summary["best"]["val_accuracy"]}


def retrain(arch_doc: dict, args: argparse.Namespace) -> list[float]:
    """Test accuracy of ``arch_doc`` retrained with the shared recipe, one value per seed."""
    from mpn_nas import Arch
    from mpn_nas.training import TrainConfig, shape_of, train, training_data

    arch = Arch.from_json(arch_doc)
    results = []
    for seed in range(args.seeds):
        config = TrainConfig(epochs=args.retrain_epochs, seed=seed, device="cpu", batch_size=args.batch_size)
        _, metrics = train(arch, training_data(args.dataset, shape_of(arch), config), config, progress=False)
        results.append(round(metrics["test_accuracy"], 4))
    return results


def ranking(spos_dir: Path, args: argparse.Namespace) -> dict:
    """Inherited-weight versus stand-alone validation accuracy of random feasible subnets."""
    import torch
    from nni.nas.strategy import RandomOneShot

    from mpn_nas.data import DataShape, make_data
    from mpn_nas.training import TrainConfig, train
    from search_spaces.budget import Budget
    from search_spaces.spaces import make_space
    from strategies.middleware import SampleFits
    from strategies.oneshot import recalibrated_accuracy

    settings = json.loads((spos_dir / "search.json").read_text())["settings"]
    space = make_space("resnet", config=settings["space_config"])
    supernet = RandomOneShot().mutate_model(space)
    supernet.load_state_dict(torch.load(spos_dir / "supernet.pt", weights_only=True))
    config = space.config
    fits = SampleFits(config, Budget(max_params=args.max_params))
    data = make_data(args.dataset, seed=args.search_seed, batch_size=args.batch_size,
                     shape=DataShape(config.in_channels, config.input_size, config.num_classes))
    rng, seen, pairs = random.Random(1), set(), []
    labels = config.labels()
    while len(pairs) < args.rank_subnets:
        sample = {label: rng.choice(values) for label, values in labels.items()}
        arch = space.to_arch(sample)
        if arch in seen or not fits(sample):
            continue
        seen.add(arch)
        inherited = recalibrated_accuracy(space.freeze(sample), data, "cpu")
        _, metrics = train(arch, data, TrainConfig(epochs=args.trial_epochs, seed=args.search_seed, device="cpu",
                                                   batch_size=args.batch_size), progress=False, test=False)
        pairs.append((inherited, metrics["val_accuracy"]))
    inherited, alone = [p[0] for p in pairs], [p[1] for p in pairs]
    return {"subnets": len(pairs), "spearman": round(spearman(inherited, alone), 3),
            "kendall": round(kendall(inherited, alone), 3), "pairs": pairs}


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson correlation of the ranks."""
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    norm = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / norm if norm else 0.0


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-a: (concordant - discordant) / pairs."""
    n, score = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            product = (a[i] - a[j]) * (b[i] - b[j])
            score += (product > 0) - (product < 0)
    return score / (n * (n - 1) / 2) if n > 1 else 0.0


def table(rows: list[dict], rank: dict | None, args: argparse.Namespace) -> str:
    lines = [f"`{args.dataset}`, ResNet space, budget {args.max_params:,} parameters; multi-trial: "
             f"{args.trials} trials x {args.trial_epochs} epochs; one-shot: {args.supernet_epochs} supernet epochs + "
             f"{args.subnets} subnets; retrain {args.retrain_epochs} epochs, seeds 0-{args.seeds - 1}.", "",
             "| strategy | search time (s) | vs evolution | best params | retrained test accuracy, median (range) |",
             "|---|---|---|---|---|"]
    base = next((r["search_seconds"] for r in rows if r["strategy"] == "evolution"), None)
    for row in rows:
        accuracy = row["test_accuracy"]
        ratio = f"{row['search_seconds'] / base:.2f}x" if base else "-"
        lines.append(f"| {row['strategy']} | {row['search_seconds']:.0f} | {ratio} | {row['best_params']:,} | "
                     f"{100 * statistics.median(accuracy):.2f} ({100 * min(accuracy):.2f}-{100 * max(accuracy):.2f}) |")
    if rank:
        lines += ["", f"Supernet ranking ({rank['subnets']} random feasible subnets, `spos` supernet's weights vs "
                      f"stand-alone {args.trial_epochs}-epoch training): Spearman {rank['spearman']}, "
                      f"Kendall {rank['kendall']}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits-contexts")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--max-params", type=int, default=20_000)
    parser.add_argument("--trials", type=int, default=40, help="multi-trial evolution's trials")
    parser.add_argument("--trial-epochs", type=int, default=3)
    parser.add_argument("--supernet-epochs", type=int, default=15)
    parser.add_argument("--subnets", type=int, default=20, help="subnets evaluated with inherited weights")
    parser.add_argument("--retrain-epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3, help="retrain seeds")
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--rank-subnets", type=int, default=10, help="0 to skip the ranking measurement")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    args = parser.parse_args()
    unknown = sorted(set(args.strategies) - set(STRATEGIES))
    if unknown:
        raise UserError(f"unknown strategy {unknown[0]!r}; allowed: {', '.join(STRATEGIES)}")
    for name in ("max_params", "trials", "trial_epochs", "supernet_epochs", "subnets", "retrain_epochs", "seeds"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    rows, rank = [], None
    with tempfile.TemporaryDirectory() as work:
        for strategy in args.strategies:
            print(f"searching with {strategy} ...", file=sys.stderr, flush=True)
            row = search(strategy, args, Path(work) / strategy)
            row["test_accuracy"] = retrain(row["best_arch"], args)
            print(f"  {strategy}: {row['search_seconds']} s, best {row['best_params']:,} params, retrained test "
                  f"accuracy {row['test_accuracy']}", file=sys.stderr, flush=True)
            rows.append(row)
        if "spos" in args.strategies and args.rank_subnets > 1:
            rank = ranking(Path(work) / "spos", args)
    text = table(rows, rank, args)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)},
                                                             "runs": rows, "ranking": rank}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_script(main, "oneshot_vs_multitrial.py")
