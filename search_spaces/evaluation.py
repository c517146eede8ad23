"""The evaluator NNI runs for each sample: train briefly, report validation accuracy to NNI.

Only importable, picklable things are referenced (the ``ts`` engine serialises the evaluator into
trial processes): the data set is passed by name and settings, never as tensors.
"""
from __future__ import annotations

import sys
from typing import Optional

import pytorch_lightning as pl
from nni.nas.evaluator import FunctionalEvaluator

from mpn_nas import Arch
from mpn_nas.complexity import count_params_and_flops


# Why trials failed, by architecture document. The sequential engine runs trials in this process but
# only tells the strategy "failed"; the search reads the reason from here for trials.csv.
FAILURE_REASONS: dict[str, str] = {}


def describe_failure(error: BaseException) -> str:
    """A one-line reason: NaN loss, out of memory, or the exception's type and message."""
    from mpn_nas.training import NonFiniteLossError

    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, NonFiniteLossError):
        return f"non-finite loss ({text})"
    if isinstance(error, MemoryError) or "out of memory" in text.lower():
        return f"out of memory ({type(error).__name__}: {text})"[:300]
    return f"{type(error).__name__}: {text}"[:300]


class ReportToNNI(pl.Callback):
    """Reports validation accuracy to NNI after every epoch."""

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        import nni

        if not trainer.sanity_checking and "val_acc" in trainer.callback_metrics:
            nni.report_intermediate_result(float(trainer.callback_metrics["val_acc"]))


def train_and_report(model, dataset: str = "digits", epochs: int = 1, batch_size: int = 64, lr: float = 0.05,
                     optimizer: str = "sgd", seed: int = 0, data_dir: Optional[str] = None,
                     device: str = "cpu", threads: Optional[int] = None) -> float:
    """NNI evaluator function: train the architecture of a frozen
    :class:`~search_spaces.spaces.MultiPathSpace` and report its validation accuracy."""
    return train_arch_and_report(model.arch, dataset=dataset, epochs=epochs, batch_size=batch_size, lr=lr,
                                 optimizer=optimizer, seed=seed, data_dir=data_dir, device=device, threads=threads)


def train_arch_and_report(arch: Arch, dataset: str = "digits", epochs: int = 1, batch_size: int = 64,
                          lr: float = 0.05, optimizer: str = "sgd", seed: int = 0, data_dir: Optional[str] = None,
                          device: str = "cpu", threads: Optional[int] = None) -> float:
    """Train ``arch``, report validation accuracy after every epoch and, at the end, the final metric
    ``{"default": val_accuracy, "params": ..., "flops": ...}`` to NNI."""
    import nni
    import torch

    from mpn_nas.data import DataShape, make_data
    from mpn_nas.training import TrainConfig, loader_settings, train

    if threads:  # concurrent trials on one machine must not oversubscribe its cores
        torch.set_num_threads(threads)
    config = TrainConfig(epochs=epochs, optimizer=optimizer, lr=lr, batch_size=batch_size, seed=seed, device=device)
    data = make_data(dataset, data_dir=data_dir, seed=seed, batch_size=batch_size,
                     shape=DataShape(arch.in_channels, arch.input_size, arch.num_classes), **loader_settings(device))
    # The network is built after seeding (same builder and structure as the one NNI froze), so that a
    # trial's result depends only on its architecture and seed, not on when NNI built the space.
    try:
        _, metrics = train(arch, data, config, callbacks=[ReportToNNI()], progress=False, test=False)
    except Exception as error:
        FAILURE_REASONS[arch.to_json()] = reason = describe_failure(error)
        print(f"mpn-nas trial failed: {reason}", file=sys.stderr, flush=True)  # lands in NNI's trial log
        raise
    params, flops = count_params_and_flops(arch)
    accuracy = metrics["val_accuracy"]
    nni.report_final_result({"default": accuracy, "params": params, "flops": flops})
    return accuracy


def make_evaluator(**settings) -> FunctionalEvaluator:
    """NNI evaluator training each sample with :func:`train_and_report` and ``settings``."""
    return FunctionalEvaluator(train_and_report, **settings)
