"""``metrics.csv``: one row per training epoch, rewritten after every epoch, and optionally one
printed line per epoch (instead of Lightning's progress bar, which floods a redirected log)."""
from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl

from .files import atomic_write_text

HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_accuracy", "lr", "seconds")


class EpochHistory(pl.Callback):
    """Writes ``path`` (columns :data:`HISTORY_COLUMNS`, epochs counted from 1) after each epoch.

    A resumed run keeps the rows of the epochs its checkpoint already holds and replaces the rest.
    With ``echo``, prints each row as one line.
    """

    def __init__(self, path: Path, echo: bool = False) -> None:
        self.path, self.echo = Path(path), echo
        self.rows: Optional[list[dict]] = []
        self._started: Optional[float] = None
        self._lr = math.nan

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.rows = None  # read at the first epoch: Lightning restores a checkpoint's progress after on_fit_start

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.rows is None:
            done = trainer.current_epoch  # the epochs the checkpoint resumed from holds (0 when not resuming)
            self.rows = [row for row in _read(self.path) if int(row["epoch"]) <= done] if done else []
        self._started = time.perf_counter()
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]  # the epoch's rate: the schedule steps at its end

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:  # one file per run, written by the rank that writes the others
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1,
               "train_loss": _rounded(metrics.get("train_loss")), "train_accuracy": _rounded(metrics.get("train_acc")),
               "val_accuracy": _rounded(metrics.get("val_acc")),
               "lr": _rounded(self._lr, 8),
               "seconds": round(time.perf_counter() - (self._started or time.perf_counter()), 2)}
        self.rows.append(row)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())
        if self.echo:
            print(f"epoch {row['epoch']}/{trainer.max_epochs}  train_loss {row['train_loss']}  train_acc "
                  f"{row['train_accuracy']}  val_acc {row['val_accuracy']}  lr {row['lr']}  {row['seconds']}s",
                  flush=True)


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _rounded(value, digits: int = 6):
    if value is None:
        return ""
    value = float(value)
    return value if math.isnan(value) else round(value, digits)
