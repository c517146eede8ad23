"""The evaluator NNI runs for each sample: train briefly, report validation accuracy to NNI (or,
on failure, why: :mod:`strategies.failures`).

Only importable, picklable things are referenced (the ``ts`` engine serialises the evaluator into
trial processes): the data set is passed by name and the recipe as a plain dict, never tensors.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Optional

import pytorch_lightning as pl
from nni.nas.evaluator import FunctionalEvaluator

from mpn_nas import Arch
from mpn_nas.complexity import count_params_and_flops
from mpn_nas.recipe import TrainConfig

from .failures import describe_failure, failure_metric

class ReportToNNI(pl.Callback):
    """Reports validation accuracy to NNI after every epoch."""

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        import nni

        if not trainer.sanity_checking and "val_acc" in trainer.callback_metrics:
            nni.report_intermediate_result(float(trainer.callback_metrics["val_acc"]))


def train_and_report(model, dataset: str = "digits", data_dir: Optional[str] = None,
                     recipe: Optional[Mapping[str, Any]] = None, threads: Optional[int] = None) -> float:
    """NNI evaluator function: train the architecture of a frozen
    :class:`~search_spaces.spaces.MultiPathSpace` with ``recipe`` (:class:`~mpn_nas.recipe.TrainConfig`
    fields) and report its validation accuracy."""
    if os.environ.get("NNI_PLATFORM"):  # a trial process NNI started: this function is its program
        from mpn_nas.process import configure_process

        configure_process()
    return train_arch_and_report(model.arch, TrainConfig(**(recipe or {})), dataset=dataset, data_dir=data_dir,
                                 threads=threads)


def train_trial(arch: Arch, config: TrainConfig, dataset: str = "digits", data_dir: Optional[str] = None,
                threads: Optional[int] = None):
    """Train ``arch`` as a trial does (validation accuracy to NNI after every epoch, no test);
    returns ``(model, metrics)``."""
    import torch

    from mpn_nas.training import shape_of, train, training_data

    if threads:  # concurrent trials on one machine must not oversubscribe its cores
        torch.set_num_threads(threads)
    data = training_data(dataset, shape_of(arch), config, data_dir)
    # The network is built after seeding (same builder and structure as the one NNI froze), so that a
    # trial's result depends only on its architecture and seed, not on when NNI built the space.
    return train(arch, data, config, callbacks=[ReportToNNI()], progress=False, test=False)


def train_arch_and_report(arch: Arch, config: TrainConfig, dataset: str = "digits", data_dir: Optional[str] = None,
                          threads: Optional[int] = None) -> float:
    """Train ``arch``, report validation accuracy after every epoch and, at the end, the final metric
    ``{"default": val_accuracy, "params": ..., "flops": ...}`` to NNI (or, on failure, the reason)."""
    import nni

    try:
        _, metrics = train_trial(arch, config, dataset, data_dir, threads)
    except Exception as error:
        nni.report_intermediate_result(failure_metric(error))
        print(f"mpn-nas trial failed: {describe_failure(error)}", file=sys.stderr, flush=True)  # NNI's trial log
        raise
    params, flops = count_params_and_flops(arch)
    accuracy = metrics["val_accuracy"]
    nni.report_final_result({"default": accuracy, "params": params, "flops": flops})
    return accuracy


def make_evaluator(dataset: str = "digits", data_dir: Optional[str] = None, recipe: Optional[Mapping[str, Any]] = None,
                   threads: Optional[int] = None) -> FunctionalEvaluator:
    """NNI evaluator training each sample with :func:`train_and_report`."""
    return FunctionalEvaluator(train_and_report, dataset=dataset, data_dir=data_dir, recipe=dict(recipe or {}),
                               threads=threads)
