"""``mpn-nas search --strategy darts|gumbel|spos|proxyless``: one weight-sharing supernet trained once
with NNI's one-shot strategies, under a complexity budget, then the best subnet exported.

* ``spos``: NNI's ``RandomOneShot`` samples only feasible subnets (its ``filter``); then a budgeted
  regularised evolution evaluates ``--trials`` subnets with inherited weights (batch-norm statistics
  recalibrated on training batches) and keeps the best.
* ``darts``, ``gumbel``, ``proxyless``: architecture weights trained with a differentiable
  expected-cost penalty (:class:`~search_spaces.expected_cost.ExpectedCost`); the export is the most
  probable architecture within the budget (the argmax when it fits), and the ``--trials`` most
  probable feasible ones are evaluated with inherited weights for ``trials.csv``.

Artifacts as a multi-trial search writes them, plus ``supernet.pt`` and, for the differentiable
strategies, ``probabilities.png`` (the probabilities of every label's values after each epoch).
"""
from __future__ import annotations

import heapq
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from mpn_nas.errors import UserError
from mpn_nas.layers.adaptive import DEFAULT_BLOCK
from mpn_nas.recipe import with_training_record
from mpn_nas.training import Classifier, TrainConfig, make_trainer, resolve_device

from search_spaces.budget import Budget, arch_cost, require_feasible
from search_spaces.config import SpaceConfig, sample_to_arch

from .artifacts import plot_pareto, plot_probabilities, write_json, write_trials_csv
from .registry import ONE_SHOT, ONESHOT_STRATEGIES, StrategyRequest, strategy_kind

PENALTY_WEIGHT = 2.0  # loss added per unit of relative excess of the expected cost over a limit
RECALIBRATION_BATCHES = 10


def make_oneshot_strategy(name: str, fits: Optional[Callable[[Mapping[str, Any]], bool]] = None):
    """NNI's one-shot strategy called ``name``; ``spos`` samples only subnets that ``fits`` accepts."""
    kind = strategy_kind(name)
    if kind.kind != ONE_SHOT:
        raise UserError(f"unknown one-shot strategy {name!r}; allowed: {', '.join(ONESHOT_STRATEGIES)}")
    return kind.build(StrategyRequest(fits=fits))


class BudgetPenalty:
    """``weight * sum(relu(E[cost] / limit - 1))`` over the parameter and FLOPs limits of ``budget``:
    zero within the budget, and a gradient on the architecture weights towards it when over."""

    def __init__(self, supernet: nn.Module, budget: Budget, example: torch.Tensor, weight: float = PENALTY_WEIGHT):
        from search_spaces.expected_cost import ExpectedCost

        self.weight = weight
        self.terms = [(ExpectedCost(supernet, metric, example), limit)
                      for metric, limit in (("params", budget.max_params), ("flops", budget.max_flops))
                      if limit is not None]

    def expected(self) -> dict[str, float]:
        with torch.no_grad():
            return {cost.metric: float(cost()) for cost, _ in self.terms}

    def __call__(self) -> torch.Tensor:
        return self.weight * sum(torch.relu(cost() / limit - 1) for cost, limit in self.terms)


class SupernetClassifier(Classifier):
    """The project's training recipe for a supernet, plus the budget penalty in every training step
    (the weight optimiser does not hold the architecture weights, so only they follow it)."""

    def __init__(self, model: nn.Module, num_classes: int, config: TrainConfig, channels_last: bool = False,
                 penalty: Optional[BudgetPenalty] = None) -> None:
        super().__init__(model, num_classes, config, channels_last)
        self.penalty = penalty

    def training_step(self, batch, batch_index):
        loss = super().training_step(batch, batch_index)
        if self.penalty is not None and self.penalty.terms:
            penalty = self.penalty()
            self.log("penalty", penalty)
            loss = loss + penalty
        return loss


class EpochReport(pl.Callback):
    """Prints one line per supernet epoch and keeps the architecture probabilities after each."""

    def __init__(self, epochs: int, quiet: bool, penalty: Optional[BudgetPenalty]) -> None:
        self.epochs, self.quiet, self.penalty = epochs, quiet, penalty
        self.history: list[dict] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.penalty is not None:  # differentiable strategies: the architecture has probabilities
            self.history.append(_plain_probabilities(module.export_probs()))
        if self.quiet:
            return
        metrics = trainer.callback_metrics
        parts = [f"[epoch {trainer.current_epoch + 1}/{self.epochs}]"]
        for name in ("train_loss", "val_acc", "penalty"):
            if name in metrics:
                parts.append(f"{name} {float(metrics[name]):.4f}")
        if self.penalty is not None and self.penalty.terms:
            parts += [f"E[{metric}] {value:,.0f}" for metric, value in self.penalty.expected().items()]
        print("  ".join(parts), flush=True)


def _plain_probabilities(probs: Mapping[str, Mapping[Any, float]]) -> dict[str, dict[str, float]]:
    return {label: {str(value): round(float(p), 6) for value, p in values.items()} for label, values in probs.items()}


def recalibrated_accuracy(network: nn.Module, data, device: str, batches: int = RECALIBRATION_BATCHES) -> float:
    """Validation accuracy of a subnet with inherited weights, after re-estimating its batch-norm
    statistics on ``batches`` training batches (the supernet's statistics mix every subnet's)."""
    network = network.to(device)
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the recalibration batches
    network.train()
    with torch.no_grad():
        for index, (images, _) in enumerate(data.train_dataloader()):
            if index >= batches:
                break
            network(images.to(device))
        network.eval()
        correct = total = 0
        for images, labels in data.val_dataloader():
            correct += int((network(images.to(device)).argmax(1).cpu() == labels).sum())
            total += len(labels)
    return correct / max(total, 1)


def most_probable_samples(probabilities: Mapping[str, Mapping[Any, float]], beam: int = 20000) -> Iterator[dict]:
    """Samples in decreasing probability under independent per-label distributions (a beam over
    labels: exact for the first ``beam`` samples)."""
    partial: list[tuple[float, dict]] = [(0.0, {})]
    for label, values in probabilities.items():
        extended = [(score + math.log(max(p, 1e-30)), {**sample, label: value})
                    for score, sample in partial for value, p in values.items()]
        partial = heapq.nlargest(beam, extended, key=lambda item: item[0])
    for _, sample in partial:
        yield sample


def _distinct_architectures(config: SpaceConfig, samples: Iterator[dict]) -> Iterator[dict]:
    """The first sample of each architecture (the repair rules map several samples to one)."""
    seen = set()
    for sample in samples:
        arch = sample_to_arch(config, sample)
        if arch not in seen:
            seen.add(arch)
            yield sample


class SubnetLog:
    """``trials.csv`` rows of the evaluated subnets, written after each, and one line per subnet."""

    def __init__(self, out: Path, config: SpaceConfig, trials: int, quiet: bool, rows: Sequence[dict] = ()) -> None:
        self.out, self.config, self.trials, self.quiet = out, config, trials, quiet
        self.labels = list(config.labels())
        self.rows: list[dict] = list(rows)

    def add(self, sample: Mapping[str, Any], accuracy: float, seconds: float) -> dict:
        cost = arch_cost(sample_to_arch(self.config, sample))
        row = {"trial": len(self.rows) + 1, "status": "succeeded", "val_accuracy": round(accuracy, 6),
               "params": cost.params, "flops": cost.flops, "seconds": round(seconds, 2), "reason": "", **sample}
        self.rows.append(row)
        write_trials_csv(self.out / "trials.csv", self.rows, self.labels)
        if not self.quiet:
            best = self.best()
            print(f"[subnet {row['trial']}/{self.trials}] inherited val_acc {accuracy:.4f}  params {cost.params:,}  "
                  f"flops {cost.flops:,} | best {best['val_accuracy']:.4f} (subnet {best['trial']})", flush=True)
        return row

    def best(self) -> Optional[dict]:
        return max(self.rows, key=lambda r: (r["val_accuracy"], -r["flops"])) if self.rows else None


def evolve_subnets(config: SpaceConfig, evaluate: Callable[[dict], float], fits: Callable[[dict], bool],
                   log: SubnetLog, seed: int, patience: int = 1000) -> None:
    """Budgeted regularised evolution over subnets until ``log`` holds ``log.trials`` rows: every
    candidate is checked against the budget before it is evaluated, and an architecture already
    evaluated (after the repair rules) is not evaluated again."""
    rng = random.Random(seed)
    labels = config.labels()
    population_size = max(2, min(10, log.trials // 2))
    seen = {sample_to_arch(config, {k: row[k] for k in labels}) for row in log.rows}
    population = [({k: row[k] for k in labels}, row["val_accuracy"]) for row in log.rows][-population_size:]

    def candidate() -> Optional[dict]:
        for _ in range(patience):
            if len(population) < population_size:
                sample = {label: rng.choice(values) for label, values in labels.items()}
            else:
                contenders = rng.sample(population, max(1, population_size // 2))
                parent = max(contenders, key=lambda item: item[1])[0]
                label = rng.choice(list(labels))
                sample = dict(parent, **{label: rng.choice(labels[label])})
            arch = sample_to_arch(config, sample)
            if arch not in seen and fits(sample):
                seen.add(arch)
                return sample
        return None

    while len(log.rows) < log.trials:
        sample = candidate()
        if sample is None:
            print(f"no new architecture within the budget after {patience} proposals: stopping at "
                  f"{len(log.rows)} subnets", file=sys.stderr, flush=True)
            return
        started = time.time()
        accuracy = evaluate(sample)
        log.add(sample, accuracy, time.time() - started)
        population.append((sample, accuracy))
        if len(population) > population_size:
            population.pop(0)  # regularised: the oldest leaves, not the worst


def run_oneshot_search(settings) -> dict:
    """Train the supernet of ``settings.space`` with the one-shot ``settings.strategy``, pick the best
    subnet within the budget, write the artifacts; returns the summary."""
    from mpn_nas.data import DataShape, dataset_shape
    from mpn_nas.training import training_data
    from search_spaces.spaces import make_space

    from .middleware import SampleFits
    from .search import SUMMARY_FORMAT
    from .search import check_output, create_output, load_previous_rows, search_training_record, \
        sigterm_as_interrupt, space_config_of

    if settings.engine != "sequential" or settings.concurrency > 1 or settings.gpus:
        raise UserError(f"--strategy {settings.strategy} trains one supernet in this process: use the default "
                        "--engine sequential without --concurrency or --gpus (pick the GPU with --device cuda)")
    check_output(settings)
    config = space_config_of(settings)
    if len(config.block_kinds) > 1 or config.block_kinds[0] != DEFAULT_BLOCK:
        raise UserError(f"--strategy {settings.strategy} shares weights between the {DEFAULT_BLOCK!r} blocks of one "
                        f"supernet; the other block kinds change the weights' shapes: use a multi-trial strategy "
                        f"for space config block_kinds {list(config.block_kinds)}")
    dataset_shape(settings.dataset, settings.data_dir)
    require_feasible(config, settings.budget)
    create_output(settings, config)
    out, train_config = settings.out, settings.training
    device = resolve_device(train_config.device)
    pl.seed_everything(train_config.seed, workers=True, verbose=False)
    data = training_data(settings.dataset, DataShape(config.in_channels, config.input_size, config.num_classes),
                         train_config, settings.data_dir)
    fits = SampleFits(config, settings.budget)
    space = make_space(settings.space, config=config.to_dict())
    strategy = make_oneshot_strategy(settings.strategy, None if settings.budget.unlimited else fits)
    supernet = strategy.mutate_model(space)
    penalty = None
    differentiable = strategy_kind(settings.strategy).differentiable
    if differentiable:
        example = next(iter(data.train_dataloader()))[0][:2]
        penalty = BudgetPenalty(supernet, settings.budget, example)
    on_gpu, convolutional = device == "cuda", config.family == "resnet"
    if on_gpu and convolutional:
        supernet = supernet.to(memory_format=torch.channels_last)
    module = strategy.configure_oneshot_module(
        SupernetClassifier(supernet, config.num_classes, train_config, on_gpu and convolutional, penalty))
    report = EpochReport(train_config.epochs, settings.quiet, penalty)
    trainer = make_trainer(train_config, out, [report], progress=False)
    checkpoint = out / "checkpoints" / "last.ckpt"
    resume_from = str(checkpoint) if settings.resume and checkpoint.is_file() else None
    if not settings.quiet:
        print(f"{'resuming' if resume_from else 'training'} the {settings.space} supernet ({config.size():,} "
              f"architectures) on {settings.dataset} with {settings.strategy} for {train_config.epochs} epochs on "
              f"{device}", flush=True)
    started = time.time()
    with sigterm_as_interrupt():
        try:
            trainer.fit(module, train_dataloaders=strategy.train_dataloader(data.train_dataloader, data.val_dataloader),
                        val_dataloaders=strategy.val_dataloader(data.train_dataloader, data.val_dataloader),
                        ckpt_path=resume_from, weights_only=False)
        except SystemExit:
            if not trainer.interrupted:
                raise
        except KeyboardInterrupt:
            pass
        if trainer.interrupted:
            print(f"interrupted: supernet checkpoint kept in {out / 'checkpoints'}; continue with "
                  f"'mpn-nas search --resume {out}'", file=sys.stderr, flush=True)
            raise KeyboardInterrupt
    supernet = supernet.cpu().to(memory_format=torch.contiguous_format)
    torch.save(supernet.state_dict(), out / "supernet.pt")
    train_seconds = time.time() - started

    def evaluate(sample: dict) -> float:
        return recalibrated_accuracy(space.freeze(sample), data, device)

    previous = load_previous_rows(out, config) if settings.resume and not differentiable else []
    log = SubnetLog(out, config, settings.trials, settings.quiet, previous)  # spos continues its evolution
    note = None
    with sigterm_as_interrupt():
        if not differentiable:  # spos: evolution over subnets with the supernet's weights
            evolve_subnets(config, evaluate, fits, log, train_config.seed)
            best = log.best()
            chosen = {k: best[k] for k in log.labels}
        else:
            probabilities = module.export_probs()
            argmax = {label: max(values, key=values.get) for label, values in probabilities.items()}
            ranked = _distinct_architectures(config, (s for s in most_probable_samples(probabilities) if fits(s)))
            chosen = next(ranked, None)
            if chosen is None:
                raise UserError("no architecture within the budget among the most probable ones; raise the budget")
            if sample_to_arch(config, chosen) != sample_to_arch(config, argmax):
                note = "the most probable architecture is over the budget; exported the most probable one within it"
                print(note, file=sys.stderr, flush=True)
            for sample in [chosen, *(s for _, s in zip(range(settings.trials - 1), ranked))]:
                started_subnet = time.time()
                log.add(sample, evaluate(sample), time.time() - started_subnet)
    arch = sample_to_arch(config, chosen)
    # retrain trains on the search's data set with its recipe (the supernet's epochs recorded as such)
    with_training_record(arch, search_training_record(settings, arch)).to_json(out / "best_arch.json")
    chosen_row = next(r for r in log.rows if sample_to_arch(config, {k: r[k] for k in log.labels}) == arch)
    plot_pareto(out / "pareto.png", log.rows, objective=settings.objective)
    summary = {"supernet_seconds": round(train_seconds, 1), "seconds": round(time.time() - started, 1),
               "subnets_evaluated": len(log.rows), "supernet_file": "supernet.pt",
               "best": {**{k: chosen_row[k] for k in ("trial", "val_accuracy", "params", "flops")},
                        "arch_file": "best_arch.json", "val_accuracy_is": "inherited weights, recalibrated batch norm"}}
    if differentiable:
        summary["probabilities"] = _plain_probabilities(module.export_probs())
        summary["probabilities_per_epoch"] = report.history
        summary["export_note"] = note
        plot_probabilities(out / "probabilities.png", report.history)
    summary = {"format": SUMMARY_FORMAT, "version": 1,
               "settings": settings.to_dict() | {"space_config": config.to_dict()},
               "trials_requested": settings.trials, **summary}
    write_json(out / "summary.json", summary)
    if not settings.quiet:
        print(f"best: subnet {chosen_row['trial']} inherited val_accuracy {chosen_row['val_accuracy']:.4f} params "
              f"{chosen_row['params']:,} flops {chosen_row['flops']:,}\nwrote {out / 'best_arch.json'}, trials.csv, "
              f"summary.json, pareto.png, supernet.pt" + (", probabilities.png" if penalty is not None else ""),
              flush=True)
    return summary
