"""``check_resumable`` and ``ArchInCheckpoint``: which checkpoints a retrain agrees to resume, with the exact
one-line refusal for each file it must not resume from (the CLI turns these into status 2)."""
import os
from types import SimpleNamespace

import pytest
import torch

from helpers import EXAMPLE_ARCHS
from mpn_nas import Arch
from mpn_nas.errors import UserError
from mpn_nas.resume import ArchInCheckpoint, EpochSeed, check_resumable

SINGLE = Arch.from_json(EXAMPLE_ARCHS / "digits_single.json")
ROUTED = Arch.from_json(EXAMPLE_ARCHS / "digits_routed.json")


def _checkpoint_for(arch: Arch, path):
    """What Lightning writes, reduced to what the check reads: the dict ArchInCheckpoint filled."""
    checkpoint = {"state_dict": {"w": torch.zeros(2)}, "epoch": 1}
    ArchInCheckpoint(arch).on_save_checkpoint(None, None, checkpoint)
    torch.save(checkpoint, path)
    return path


def test_arch_in_checkpoint_stores_the_architecture_document():
    checkpoint = {"epoch": 0}
    ArchInCheckpoint(ROUTED).on_save_checkpoint(None, None, checkpoint)
    assert checkpoint == {"epoch": 0, "mpn_nas_arch": ROUTED.to_dict()}
    assert Arch.from_dict(checkpoint["mpn_nas_arch"]) == ROUTED


def test_a_checkpoint_written_for_the_same_architecture_is_accepted(tmp_path):
    assert check_resumable(_checkpoint_for(SINGLE, tmp_path / "last.ckpt"), SINGLE) is None


@pytest.mark.parametrize("write, message", [
    (None, "no checkpoint to resume from at {path}; run retrain without --resume"),
    (lambda path: path.write_bytes(b"not a torch file"),
     "{path} is not an mpn-nas training checkpoint (UnpicklingError); pass --force to start again"),
    (lambda path: torch.save({"state_dict": {}, "epoch": 1}, path),
     "{path} is not an mpn-nas training checkpoint; pass --force to start again"),
    (lambda path: torch.save(["mpn_nas_arch"], path),  # a list holding the key is still not a checkpoint
     "{path} is not an mpn-nas training checkpoint; pass --force to start again"),
    (lambda path: _checkpoint_for(ROUTED, path),
     "{path} was trained for a different architecture; pass --force to start again"),
], ids=["missing", "not torch", "no architecture", "not a dict", "other architecture"])
def test_checkpoints_that_cannot_be_resumed_are_refused_in_one_line(tmp_path, write, message):
    path = tmp_path / "last.ckpt"
    if write:
        write(path)
    with pytest.raises(UserError) as refused:
        check_resumable(path, SINGLE)
    assert str(refused.value) == message.format(path=path)


def test_a_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(UserError, match="^no checkpoint to resume from at"):
        check_resumable(tmp_path, SINGLE)


def _epoch_start(seed: int, epoch: int) -> torch.Tensor:
    """What an epoch of a run with ``seed`` draws first (shuffle, augmentation) when it starts."""
    EpochSeed(seed).on_train_epoch_start(SimpleNamespace(current_epoch=epoch), None)
    return torch.rand(4)


def test_each_epoch_of_each_seed_draws_its_own_numbers_and_the_same_ones_again(monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # Lightning's fallback seed must not be what is used
    draws = {(seed, epoch): _epoch_start(seed, epoch) for seed in (0, 5) for epoch in (0, 1, 2)}
    distinct = {tuple(draw.tolist()) for draw in draws.values()}
    assert len(distinct) == len(draws)  # a shuffle per (seed, epoch): not one per run, not one per epoch
    assert torch.equal(_epoch_start(5, 2), draws[5, 2])
    # A fit resumed at epoch 2 seeds epoch 2 before the loader draws (on_fit_start), as epoch 2 would have.
    resumed = EpochSeed(5)
    resumed.on_load_checkpoint(None, None, {"loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 2}}}}})
    resumed.on_fit_start(None, None)
    assert torch.equal(torch.rand(4), draws[5, 2])
    resumed.on_train_epoch_start(SimpleNamespace(current_epoch=2), None)  # not seeded again: the draws go on
    assert not torch.equal(torch.rand(4), draws[5, 2])
    resumed.on_train_epoch_start(SimpleNamespace(current_epoch=3), None)
    assert torch.equal(torch.rand(4), _epoch_start(5, 3))
    # A fresh fit seeds epoch 0 at its start.
    fresh = EpochSeed(5)
    fresh.on_fit_start(None, None)
    assert torch.equal(torch.rand(4), draws[5, 0])


def test_data_loader_workers_are_seeded_too(monkeypatch):
    """Lightning gives the train loader's worker processes seeds derived from the epoch's seed only when
    seed_everything(workers=True) set PL_SEED_WORKERS (its worker_init_fn reads it)."""
    monkeypatch.setenv("PL_SEED_WORKERS", "0")
    EpochSeed(1).on_fit_start(None, None)
    assert os.environ["PL_SEED_WORKERS"] == "1"


def test_epoch_seeds_stay_what_earlier_versions_drew():
    """Epoch e of --seed s draws as seed s * 100_003 + e: a retrain repeats its shuffles across versions, and a
    checkpoint of an older version resumes with the shuffles it started with."""
    drawn = _epoch_start(5, 2)
    torch.manual_seed(5 * 100_003 + 2)
    assert torch.equal(drawn, torch.rand(4))


def test_seeding_each_epoch_logs_nothing():
    """Lightning's seed_everything logs "Seed set to N" unless told not to: a line per epoch in every run's log."""
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("lightning_fabric.utilities.seed")  # pl.seed_everything is Fabric's
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        EpochSeed(1).on_fit_start(None, None)
        _epoch_start(1, 3)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [record.getMessage() for record in records] == []


class _OpensAFile:
    """Pickled as a call to ``open(path, "w")``: unpickling it without weights_only would create the file."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_checkpoint_is_read_without_running_what_it_holds(tmp_path):
    marker = tmp_path / "was-executed"
    path = tmp_path / "last.ckpt"
    torch.save({"mpn_nas_arch": SINGLE.to_dict(), "payload": _OpensAFile(marker)}, path)
    with pytest.raises(UserError) as refused:
        check_resumable(path, SINGLE)
    assert str(refused.value) == f"{path} is not an mpn-nas training checkpoint (UnpicklingError); pass --force to start again"
    assert not marker.exists()
