from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from helpers import EXAMPLE_ARCHS, arch_doc, assert_clean_error
from mpn_nas import Arch, build_model
from mpn_nas.checkpoint import load_model, save_model
from mpn_nas.data import make_data
from mpn_nas.errors import UserError


def test_model_file_round_trip_and_foreign_files(tmp_path):
    arch = Arch.from_dict(arch_doc())
    model = build_model(arch).eval()
    save_model(tmp_path / "model.pt", arch, model)
    loaded_arch, loaded = load_model(tmp_path / "model.pt")
    x = torch.randn(2, 1, 8, 8)
    assert loaded_arch == arch
    torch.testing.assert_close(loaded(x), model(x))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not an mpn-nas model"):
        load_model(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(UserError, match="not an mpn-nas model"):
        load_model(tmp_path / "text.pt")


def test_digits_split_is_seeded_and_disjoint():
    a, b = make_data("digits", seed=3), make_data("digits", seed=3)
    assert a.train_set.indices == b.train_set.indices
    splits = [set(a.train_set.indices), set(a.val_set.indices), set(a.test_set.indices)]
    assert sum(map(len, splits)) == 1797 and len(set.union(*splits)) == 1797
    assert make_data("digits", seed=4).train_set.indices != a.train_set.indices


def test_retrain_rejects_mismatched_data_and_unknown_dataset(tmp_path, capsys):
    from mpn_nas.cli import main

    def retrain(*args: str) -> SimpleNamespace:  # in-process: the same main() as the console script
        capsys.readouterr()
        return SimpleNamespace(returncode=main(["retrain", str(EXAMPLE_ARCHS / "cifar10_routed.json"), *args]),
                               stderr=capsys.readouterr().err)

    assert_clean_error(retrain("--dataset", "digits", "--out", str(tmp_path / "a")), 2, "architecture expects")
    assert_clean_error(retrain("--dataset", "mnist", "--out", str(tmp_path / "b")), 2, "unknown dataset")
    assert_clean_error(retrain("--dataset", "cifar10", "--data-dir", str(tmp_path / "none"), "--out",
                               str(tmp_path / "c")), 2, "--download")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()  # nothing written


def test_routers_train_in_their_own_group_without_weight_decay():
    from mpn_nas.training import TrainConfig, parameter_groups

    model = build_model(Arch.from_dict(arch_doc()))
    config = TrainConfig(lr=0.1, weight_decay=1e-3, router_lr_scale=5.0)
    others, routers = parameter_groups(model, config)
    router_params = {id(p) for name, p in model.named_parameters() if ".router." in name}
    assert {id(p) for p in routers["params"]} == router_params and router_params
    assert routers["weight_decay"] == 0.0 and routers["lr"] == pytest.approx(0.5)
    assert others["weight_decay"] == 1e-3 and not router_params & {id(p) for p in others["params"]}
    assert len(routers["params"]) + len(others["params"]) == len(list(model.parameters()))
    with pytest.raises(UserError, match="router-lr-scale"):
        TrainConfig(router_lr_scale=0)


def test_glibc_accepts_the_cpu_allocator_settings():
    import platform

    from mpn_nas import cpu_allocator

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    # mallopt rejects (returns 0 for) a threshold above glibc's maximum: the settings must be accepted.
    assert cpu_allocator.keep_freed_memory() is expected
    assert cpu_allocator.keep_freed_memory() is expected  # idempotent


class _EpochLog(pl.Callback):
    """Records the epochs that start; raises KeyboardInterrupt (as Ctrl-C would) when ``stop_at`` starts."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at, self.started = stop_at, []

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.stop_at:
            raise KeyboardInterrupt
        self.started.append(trainer.current_epoch)


def _assert_same_weights(expected: torch.nn.Module, got: torch.nn.Module) -> None:
    expected_state, got_state = expected.state_dict(), got.state_dict()
    assert expected_state.keys() == got_state.keys()
    differing = [name for name in expected_state if not torch.equal(expected_state[name], got_state[name])]
    assert not differing, differing


def test_resumed_retrain_runs_only_the_remaining_epochs_and_ends_bit_identical(tmp_path):
    from mpn_nas.training import TrainConfig, train

    arch = Arch.from_json(EXAMPLE_ARCHS / "digits_single.json")
    config = TrainConfig(epochs=3, batch_size=64, device="cpu", seed=5)
    straight_log = _EpochLog()
    straight, straight_metrics = train(arch, make_data("digits", batch_size=64), config, tmp_path / "straight",
                                       callbacks=[straight_log], progress=False, test=False)
    assert straight_log.started == [0, 1, 2]

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train(arch, make_data("digits", batch_size=64), config, out, callbacks=[_EpochLog(stop_at=1)],
              progress=False, test=False)
    checkpoint = out / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == 1

    resumed_log = _EpochLog()
    resumed, resumed_metrics = train(arch, make_data("digits", batch_size=64), config, out, callbacks=[resumed_log],
                                     progress=False, test=False, resume_from=checkpoint)
    # Only epochs 1 and 2 ran, yet the weights equal the uninterrupted run's: the checkpoint's weights,
    # optimiser and schedule were used, and epoch 1 drew epoch 1's shuffle (not epoch 0's again).
    assert resumed_log.started == [1, 2]
    _assert_same_weights(straight, resumed)
    assert resumed_metrics["val_accuracy"] == straight_metrics["val_accuracy"]

    # A checkpoint of the last epoch: nothing left to train, the model is the finished one.
    finished_log = _EpochLog()
    finished, _ = train(arch, make_data("digits", batch_size=64), config, tmp_path / "straight",
                        callbacks=[finished_log], progress=False, test=False,
                        resume_from=tmp_path / "straight" / "checkpoints" / "last.ckpt")
    assert finished_log.started == []
    _assert_same_weights(straight, finished)


def test_epoch_seed_refuses_a_resume_point_it_did_not_seed_for():
    from mpn_nas.resume import EpochSeed

    seed = EpochSeed(0)
    seed.on_load_checkpoint(None, None, {"loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 2}}}}})
    seed.on_fit_start(None, None)
    first_draw = torch.rand(3)
    with pytest.raises(RuntimeError, match="resumed at epoch 1 but seeded its shuffle for epoch 2"):
        seed.on_train_epoch_start(SimpleNamespace(current_epoch=1), None)
    seed = EpochSeed(0)
    seed.on_train_epoch_start(SimpleNamespace(current_epoch=2), None)
    assert torch.equal(torch.rand(3), first_draw)  # the RNG state depends on (seed, epoch) alone
