"""What each process of a distributed retrain reads and reports: sharded loaders over the same splits,
and a checksum of the weights every rank ends with (see :mod:`mpn_nas.distributed` for the options)."""
from __future__ import annotations

import hashlib

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .data import ClassificationData


class ShardedData(pl.LightningDataModule):
    """``data``'s splits for one of ``world_size`` processes: the training split shuffled (seeded by
    ``seed`` and the epoch, which Lightning sets on the sampler) and sharded, ``batch_size / world_size``
    images per process and step; validation and test sharded *without repeats*, so that the synchronised
    accuracy counts every image of the split exactly once.

    Lightning's own sampler would pad the evaluation shards with repeated images to equal lengths.
    Uneven evaluation shards are safe: DDP syncs buffers only on the first forward without gradients,
    test steps bypass DDP's forward, and the accuracy metric is reduced across processes once per epoch.
    Every rank reads the same split (the data module is built from the same seed on each).
    """

    def __init__(self, data: ClassificationData, world_size: int, seed: int) -> None:
        super().__init__()
        self.data, self.seed = data, seed
        self.name, self.shape, self.batch_size = data.name, data.shape, data.batch_size // world_size
        self.val_set = data.val_set  # the whole split, for measures one rank computes (mpn_nas.run_logs)

    def _loader(self, dataset: Dataset, sampler: Sampler) -> DataLoader:
        workers = self.data.num_workers
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=workers,
                          pin_memory=self.data.pin_memory, persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data.train_set, DistributedSampler(self.data.train_set, shuffle=True, seed=self.seed))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data.val_set, UnrepeatedDistributedSampler(self.data.val_set, shuffle=False))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data.test_set, UnrepeatedDistributedSampler(self.data.test_set, shuffle=False))


def weights_checksum(state_dict: dict) -> int:
    """A 56-bit digest of a state dict's names and bytes (fits an int64 tensor for ``all_gather``)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(digest.digest()[:7], "big")


class RankChecksums(pl.Callback):
    """At the end of fit, every rank's :func:`weights_checksum` of the network, gathered into
    ``trainer.callback_metrics["weight_checksums"]`` (``(world_size,)`` int64), which ddp_spawn also
    carries back to the main process."""

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        mine = torch.tensor([weights_checksum(module.model.state_dict())], dtype=torch.int64, device=module.device)
        trainer.callback_metrics["weight_checksums"] = trainer.strategy.all_gather(mine).reshape(-1).cpu()


class EndProcessGroup(pl.Callback):
    """Destroys the process group, with every rank still there, when a process's last stage ends: each stage
    of a ``ddp_spawn`` worker (it exits after each), ``last_stage`` of any other process. Left to Lightning's
    ``atexit`` hook, gloo's teardown in an exiting process races with the other ranks' and now and then
    aborts it (``terminate called without an active exception``, SIGABRT), failing a run that trained
    correctly. Nothing after ``teardown`` communicates."""

    def __init__(self, every_stage: bool, last_stage: str) -> None:
        self.every_stage, self.last_stage = every_stage, last_stage

    def teardown(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
        import torch.distributed as dist

        if (self.every_stage or stage == self.last_stage) and dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
