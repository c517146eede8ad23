"""One-shot search: the primitives' mixed operations (NNI's own checks for mixed operations), the
exactness of sampled subnets, NNI's strategies on the spaces, the expected-cost penalty and budgets."""
import json

import nni
import pytest
import torch
from nni.nas.strategy import DARTS, GumbelDARTS, Proxyless, RandomOneShot

from helpers import figure_pixels, png_size
from oneshot_helpers import SMALL, UserSpace, digits_batch, read_rows
from mpn_nas import Arch, profile
from mpn_nas.recipe import TrainConfig
from search_spaces import MLPSpace, ResNetSpace
from search_spaces.budget import Budget


@pytest.mark.slow
@pytest.mark.parametrize("strategy_cls", [DARTS, GumbelDARTS, RandomOneShot, Proxyless])
def test_nas_experiment_runs_each_oneshot_strategy_on_each_space(strategy_cls):
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.experiment import NasExperiment
    from torch.utils.data import TensorDataset

    images, labels = digits_batch(64)
    data = nni.trace(TensorDataset)(images, labels)
    for space in (ResNetSpace(config=SMALL), MLPSpace(config={"widths": [[8, 16], [8]]}), UserSpace()):
        evaluator = Classification(train_dataloaders=DataLoader(data, batch_size=32),
                                   val_dataloaders=DataLoader(data, batch_size=32), max_epochs=1, num_classes=10,
                                   enable_progress_bar=False, enable_model_summary=False, logger=False,
                                   enable_checkpointing=False)
        experiment = NasExperiment(space, evaluator, strategy_cls())
        experiment.run()
        sample = experiment.export_top_models(formatter="dict")[0]
        assert set(sample) == set(space.simplify())
        network = space.freeze(sample)
        assert network(images[:2]).shape == (2, 10)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["darts", "spos"])
def test_oneshot_search_under_a_tight_budget_exports_an_architecture_within_it(tmp_path, strategy):
    from strategies.search import SearchSettings, run_search

    config = tmp_path / "space.json"
    config.write_text(json.dumps(SMALL))
    out = tmp_path / "out"
    limit = 5_000
    summary = run_search(SearchSettings(out=out, space_config=str(config), strategy=strategy, trials=3,
                                        budget=Budget(max_params=limit), quiet=True,
                                        training=TrainConfig(epochs=1, batch_size=128, device="cpu")))
    arch = Arch.from_json(out / "best_arch.json")
    assert profile(arch, latency=False).params <= limit
    rows = read_rows(out / "trials.csv")
    assert len(rows) == 3 and all(int(row["params"]) <= limit for row in rows)
    assert summary["best"]["params"] == profile(arch, latency=False).params
    supernet = torch.load(out / "supernet.pt", weights_only=True)  # the trained supernet's weights
    floats = [t for t in supernet.values() if t.is_floating_point()]
    assert floats and all(torch.isfinite(t).all() for t in floats)
    if strategy == "darts":
        probabilities = summary["probabilities"]
        assert set(probabilities) == set(ResNetSpace(config=SMALL).config.labels())
        assert all(abs(sum(p.values()) - 1) < 1e-4 for p in probabilities.values())
        assert len(summary["probabilities_per_epoch"]) == 1
        # One panel per choice, five to a row (3.2 x 2.4 inches each, 100 dpi).
        columns = min(5, len(probabilities))
        rows = -(-len(probabilities) // columns)
        assert png_size(out / "probabilities.png") == figure_pixels(3.2 * columns, 2.4 * rows, 100)


@pytest.mark.slow
def test_interrupted_spos_search_resumes_from_the_supernet_checkpoint(tmp_path, monkeypatch):
    """Ctrl-C in the second supernet epoch keeps the first epoch's checkpoint and writes no result;
    --resume trains only the remaining epoch, then evaluates the subnets under the budget."""
    import pytorch_lightning as pl

    from strategies import oneshot
    from strategies.search import SearchSettings, run_search

    config = tmp_path / "space.json"
    config.write_text(json.dumps(SMALL))
    out = tmp_path / "out"
    settings = dict(out=out, space_config=str(config), strategy="spos", trials=2,
                    budget=Budget(max_params=8_000), quiet=True, training=TrainConfig(epochs=2, batch_size=256,
                                                                                      device="cpu"))
    started_epochs = []

    class Interrupt(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            started_epochs.append(trainer.current_epoch)
            if trainer.current_epoch == 1 and not (out / "summary.json").exists() and len(started_epochs) == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(oneshot, "make_trainer", lambda config, out_dir, callbacks, progress: __import__(
        "mpn_nas.training", fromlist=["make_trainer"]).make_trainer(config, out_dir, [*callbacks, Interrupt()], progress))
    with pytest.raises(KeyboardInterrupt):
        run_search(SearchSettings(**settings))
    assert (out / "checkpoints" / "last.ckpt").is_file() and not (out / "best_arch.json").exists()
    assert started_epochs == [0, 1]
    run_search(SearchSettings.resumed(out, quiet=True))
    assert started_epochs == [0, 1, 1]  # only the remaining epoch ran
    rows = read_rows(out / "trials.csv")
    assert len(rows) == 2 and all(int(row["params"]) <= 8_000 for row in rows)
    assert profile(Arch.from_json(out / "best_arch.json"), latency=False).params <= 8_000
