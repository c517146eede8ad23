import json

import pytest

from helpers import run_cli


@pytest.mark.slow
def test_nni_random_strategy_exports_an_architecture_retrain_accepts(tmp_path):
    from nni.nas.experiment import NasExperiment, NasExperimentConfig
    from nni.nas.strategy import Random

    from search_spaces import ResNetSpace
    from strategies.evaluation import make_evaluator

    space = ResNetSpace(in_channels=1, input_size=8, num_classes=10,
                        config={"widths": [[4], [8]], "blocks": [1]})  # tiny nets, quick trials
    config = NasExperimentConfig("sequential", "simplified", "local")
    config.max_trial_number = 3
    config.experiment_working_directory = str(tmp_path / "nni")
    experiment = NasExperiment(space, make_evaluator(dataset="digits", recipe={"epochs": 1}), Random(seed=0), config)
    try:
        experiment.run()
        [best] = experiment.export_top_models(top_k=1, formatter="dict")
        finished = [m for m in experiment.strategy.list_models() if m.metric is not None]
    finally:
        experiment.stop()
    assert len(finished) == 3 and all(0.0 <= m.metric <= 1.0 for m in finished)
    arch_path = tmp_path / "best_arch.json"
    space.to_arch(best).to_json(arch_path)
    result = run_cli("retrain", str(arch_path), "--epochs", "1", "--out", str(tmp_path / "retrain"), "--quiet",
                     "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "retrain" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0.0 <= metrics["test_accuracy"] <= 1.0
