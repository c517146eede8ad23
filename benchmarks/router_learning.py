"""How much the routers learn: whether their routing ends up depending on the input, and on its context.

Each routed variant of the paper-table digits network (``paper_table.DIGITS_BASE``: stem 8, widths 4/8,
4 paths) trains on ``digits-contexts`` for every seed and every router learning-rate scale asked for
(``TrainConfig.router_lr_scale``) and initial weight on the aligned path (``ALIGNED_INIT_WEIGHT`` of
``mpn_nas.layers.routers``, set for the whole run). For each routed layer the report gives, over the test split:

- ``spread``: the standard deviation of the routing matrix over samples, averaged over its entries
  (0: the router ignores its input and is a static router in disguise);
- the context and class specialisation scores of ``mpn-nas show-routing`` (bits), trained and at
  initialisation (the same seed, untrained).

    python benchmarks/router_learning.py        # scales 1 and 10, aligned weights 0.9 and 0.5, seeds 0-2
    python benchmarks/router_learning.py --out benchmarks/results/router_learning
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

import paper_table
from mpn_nas import build_model
from mpn_nas.data import make_data, sample_contexts
from mpn_nas.errors import UserError, run_script
from mpn_nas.layers.routers import Router
from mpn_nas.routing_analysis import collect_routing, routing_spread, specialisation_score
from mpn_nas.training import TrainConfig, train

ROUTED = ("cross_prediction", "feature_dependent")


def layer_measures(model: torch.nn.Module, dataset) -> list[dict]:
    """Per routed layer: spread of the routing over samples and the specialisation scores."""
    matrices, labels = collect_routing(model, dataset)
    contexts, _ = sample_contexts(dataset)
    return [{"layer": name, "spread": routing_spread(routing),
             "context_bits": specialisation_score(routing, contexts),
             "class_bits": specialisation_score(routing, labels)} for name, routing in matrices.items()]


def routed_model(arch, seed: int, aligned_weight: float) -> torch.nn.Module:
    """The network ``train`` would build with ``seed``, its routers starting at ``aligned_weight``."""
    torch.manual_seed(seed)
    model = build_model(arch)
    for module in model.modules():
        if isinstance(module, Router):
            module.reset_logits(aligned_weight)
    return model


def run(routing: str, scale: float, aligned_weight: float, seed: int, epochs: int) -> dict:
    arch = paper_table.resnet_arch(paper_table.DIGITS_BASE, paths=paper_table.DIGITS_BASE.paths, routing=routing)
    data = make_data("digits-contexts", seed=seed, batch_size=paper_table.DIGITS_BASE.batch_size)
    initial = layer_measures(routed_model(arch, seed, aligned_weight), data.test_set)
    config = TrainConfig(epochs=epochs, lr=paper_table.DIGITS_BASE.lr, router_lr_scale=scale, seed=seed, device="cpu")
    model, metrics = train(arch, data, config, progress=False, model=routed_model(arch, seed, aligned_weight))
    trained = layer_measures(model, data.test_set)
    for layer, start in zip(trained, initial):
        layer.update({f"initial_{key}": value for key, value in start.items() if key != "layer"})
    return {"routing": routing, "router_lr_scale": scale, "aligned_weight": aligned_weight, "seed": seed, "test_accuracy": metrics["test_accuracy"],
            "layers": trained}


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values)


def markdown(runs: list[dict], command: str, epochs: int) -> str:
    """One row per (routing, scale, layer): means over seeds."""
    seeds = sorted({r["seed"] for r in runs})
    lines = [f"Measured with `python benchmarks/router_learning.py {command}` ({epochs} epochs, seeds "
             f"{', '.join(map(str, seeds))}, `digits-contexts` test split; torch {torch.__version__}). Means over "
             "seeds; \"init\" is the same network untrained.", "",
             "| routing | router lr scale | aligned weight | test accuracy | layer | spread (init) | context bits (init) | class bits (init) |",
             "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["routing"], r["router_lr_scale"], r["aligned_weight"]), []).append(r)
    for (routing, scale, aligned_weight), group in groups.items():
        accuracy = [r["test_accuracy"] * 100 for r in group]
        spread = statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0
        for index, layer in enumerate(group[0]["layers"]):
            def both(key: str, digits: int) -> str:
                trained = mean([r["layers"][index][key] for r in group])
                initial = mean([r["layers"][index][f"initial_{key}"] for r in group])
                return f"{trained:.{digits}f} ({initial:.{digits}f})"
            head = ([f"`{routing}`", f"{scale:g}", f"{aligned_weight:g}", f"{mean(accuracy):.2f} ± {spread:.2f}"]
                    if index == 0 else ["", "", "", ""])
            lines.append("| " + " | ".join(head + [layer["layer"], both("spread", 3), both("context_bits", 4),
                                                   both("class_bits", 4)]) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routings", nargs="+", default=list(ROUTED), choices=ROUTED)
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0, 10.0], help="router learning-rate scales")
    parser.add_argument("--aligned-weights", nargs="+", type=float, default=[0.9, 0.5],
                        help="routers' initial softmax weight on the aligned path")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    parser.add_argument("--epochs", type=int, default=paper_table.DIGITS_BASE.epochs)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="also write OUT.md and OUT.json")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = " ".join(argv if argv is not None else sys.argv[1:])
    if not all(0 < weight < 1 for weight in args.aligned_weights):
        raise UserError(f"--aligned-weights must lie in (0, 1), got {args.aligned_weights}")
    plan = [(routing, scale, weight, seed) for routing in args.routings for scale in args.scales
            for weight in args.aligned_weights for seed in range(args.seeds)]
    runs = []
    for routing, scale, weight, seed in plan:
        runs.append(run(routing, scale, weight, seed, args.epochs))
        print(f"[{len(runs)}/{len(plan)}] {routing} router lr scale {scale:g} aligned weight {weight:g} seed {seed}: "
              f"test {runs[-1]['test_accuracy']:.4f}", file=sys.stderr, flush=True)
    text = markdown(runs, command, args.epochs)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"command": command, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    run_script(main, "router_learning")
