"""Resuming a retrain: what goes into Lightning's checkpoints, the check that a checkpoint is ours, and
per-epoch seeding, so that a resumed run ends where the uninterrupted one does."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
import torch

from .arch import Arch
from .errors import UserError


class EpochSeed(pl.Callback):
    """Seeds every RNG from (seed, epoch) right before each epoch draws its shuffle, so a run resumed
    from a checkpoint shuffles and augments exactly as the uninterrupted run would have.

    Lightning (2.6) creates the train loader's iterator and fetches the first batch of a fit's first
    epoch (epoch 0, or the resumed epoch) before ``on_train_epoch_start``, so that epoch is seeded in
    ``on_fit_start``. At that point ``trainer.current_epoch`` is still 0 on a resume: the loops' progress
    is restored only after ``on_fit_start``. The epoch a resume starts at is therefore read from the
    checkpoint itself (``on_load_checkpoint`` runs before ``on_fit_start``), and checked against
    ``trainer.current_epoch`` when that epoch starts.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._first_epoch = 0  # the epoch this fit starts at: 0, or the one a checkpoint resumes at
        self._seeded_for: Optional[int] = None  # epoch seeded by on_fit_start, until that epoch starts

    def _seed(self, epoch: int) -> None:
        pl.seed_everything(self.seed * 100_003 + epoch, workers=True, verbose=False)

    def on_load_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict) -> None:
        # The fit loop resumes at the number of epochs it had processed (FitLoop.on_run_start sets
        # ``completed = processed``); mpn-nas checkpoints are written at epoch ends only.
        self._first_epoch = int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._seed(self._first_epoch)
        self._seeded_for = self._first_epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self._seeded_for is None:
            self._seed(trainer.current_epoch)
        elif self._seeded_for != trainer.current_epoch:  # a Lightning change moved the resume point
            raise RuntimeError(f"resumed at epoch {trainer.current_epoch} but seeded its shuffle for epoch "
                               f"{self._seeded_for}: the resumed run would not match the uninterrupted one")
        self._seeded_for = None


class ArchInCheckpoint(pl.Callback):
    """Stores the architecture document in Lightning's checkpoints, so a resume can check it."""

    def __init__(self, arch: Arch) -> None:
        self.arch = arch

    def on_save_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint["mpn_nas_arch"] = self.arch.to_dict()


def check_resumable(checkpoint: Path, arch: Arch) -> None:
    """Fail with a clear message unless ``checkpoint`` is a Lightning checkpoint mpn-nas wrote for ``arch``
    (loaded with ``weights_only=True``: nothing in the file is executed)."""
    if not checkpoint.is_file():
        raise UserError(f"no checkpoint to resume from at {checkpoint}; run retrain without --resume")
    try:
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # foreign or corrupt file
        raise UserError(f"{checkpoint} is not an mpn-nas training checkpoint ({type(err).__name__}); "
                        "pass --force to start again") from None
    if not isinstance(payload, dict) or "mpn_nas_arch" not in payload:
        raise UserError(f"{checkpoint} is not an mpn-nas training checkpoint; pass --force to start again")
    if payload["mpn_nas_arch"] != arch.to_dict():
        raise UserError(f"{checkpoint} was trained for a different architecture; pass --force to start again")
