"""Logs for watching long runs: per epoch the training loss and accuracy, the validation accuracy, the
learning rate and the routing spread of every routed layer, written through Lightning's own loggers.

TensorBoard event files when ``tensorboard`` is installed (``pip install mpn-nas[tensorboard]``: about
20 MB with grpcio, so it is an extra), otherwise Lightning's CSV logger (``metrics.csv``, one row per
epoch). ``retrain`` writes them under ``OUT/logs``; a trial started by NNI writes them under
``$NNI_OUTPUT_DIR/tensorboard``, the folder the NNI web UI's TensorBoard button reads.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl

from .routing_analysis import collect_routing, routing_spread

TRIAL_LOG_FOLDER = "tensorboard"  # under NNI_OUTPUT_DIR: where NNI's TensorBoard manager looks


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None


def make_logger(directory: Path):
    """Lightning's TensorBoard logger writing into ``directory``, or its CSV logger without tensorboard."""
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    if tensorboard_available():
        return TensorBoardLogger(save_dir=str(directory), name="", version="", default_hp_metric=False)
    return CSVLogger(save_dir=str(directory), name="", version="")


class EpochLogs(pl.Callback):
    """Logs one value per epoch of each measure (steps are epochs, counted from 1) into ``directory``;
    on global rank 0 only. The routing spread of a layer is the standard deviation of its routing matrix
    over the validation images, averaged over the matrix's entries (0: routing ignores the input)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.logger = None
        self._loss_sum, self._batches, self._lr = 0.0, 0, float("nan")

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._loss_sum, self._batches = 0.0, 0
        if self.logger is None and trainer.is_global_zero:
            self._start_logger(trainer.current_epoch)
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]  # the epoch's rate: the schedule steps at its end

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_index) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._loss_sum += float(loss.detach())
        self._batches += 1

    def _start_logger(self, done_epochs: int) -> None:
        """Lightning's CSV logger empties its file when it starts: a resumed run (``done_epochs`` restored
        from the checkpoint, known at the first epoch) logs the epochs it keeps again first."""
        previous = []
        if done_epochs and (self.directory / "metrics.csv").is_file():
            previous = [row for row in read_csv_logs(self.directory) if row["step"] <= done_epochs]
        self.logger = make_logger(self.directory)
        for row in previous:
            self.logger.log_metrics({k: v for k, v in row.items() if k != "step" and v is not None},
                                    step=int(row["step"]))

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        values = {"loss/train": self._loss_sum / max(1, self._batches), "lr": self._lr}
        for name, key in (("accuracy/train", "train_acc"), ("accuracy/val", "val_acc")):
            if key in metrics:
                values[name] = float(metrics[key])
        values.update({f"routing_spread/{layer}": spread for layer, spread in self._spreads(trainer, module).items()})
        self.logger.log_metrics(values, step=trainer.current_epoch + 1)
        self.logger.save()

    def _spreads(self, trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, float]:
        val_set = getattr(trainer.datamodule, "val_set", None)
        if val_set is None:
            return {}
        was_training = module.model.training
        try:
            matrices, _ = collect_routing(module.model, val_set)
        finally:
            module.model.train(was_training)
        return {name: routing_spread(routing) for name, routing in matrices.items()}

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.logger is not None:
            self.logger.finalize("success")


def trial_log_callbacks() -> list[pl.Callback]:
    """Epoch logs for a trial NNI started (it sets ``NNI_OUTPUT_DIR``); none elsewhere."""
    output = os.environ.get("NNI_OUTPUT_DIR")
    return [EpochLogs(Path(output) / TRIAL_LOG_FOLDER)] if output else []


def read_csv_logs(directory: Path) -> list[dict[str, Optional[float]]]:
    """The rows of a CSV epoch log (``directory/metrics.csv``), numbers as floats (``None`` where empty)."""
    import csv

    with open(Path(directory) / "metrics.csv", newline="") as handle:
        return [{key: float(value) if value else None for key, value in row.items()} for row in csv.DictReader(handle)]

