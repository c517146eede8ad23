"""Running NNI strategies on a tiny space in-process (sequential engine), with real or proxy training."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from helpers import TINY_SPACE


def tiny_space():
    from search_spaces import ResNetSpace

    return ResNetSpace(in_channels=1, input_size=8, num_classes=10, config=TINY_SPACE)


def proxy_accuracy(model) -> float:
    """Deterministic stand-in for training (milliseconds instead of seconds per trial), for tests of
    search logic: grows with capacity and favours routing, so accuracy and cost really trade off."""
    import nni

    arch = model.arch
    capacity = sum(stage.width * stage.paths for stage in arch.stages) / 100.0
    routed = sum(stage.routing in ("feature_dependent", "cross_prediction") for stage in arch.stages)
    accuracy = round(min(1.0, 0.2 + 0.5 * capacity / (1.0 + capacity) + 0.03 * routed), 6)
    nni.report_final_result(accuracy)
    return accuracy


def proxy_evaluator():
    from nni.nas.evaluator import FunctionalEvaluator

    return FunctionalEvaluator(proxy_accuracy)


def training_evaluator():
    from strategies.evaluation import make_evaluator

    return make_evaluator(dataset="digits", recipe={"epochs": 1, "batch_size": 128, "device": "cpu"})


def run_experiment(space, strategy, trials: int, work_dir: Path, evaluator=None, resume_id: Optional[str] = None):
    """Run ``strategy`` for ``trials`` trained trials in-process; returns the stopped experiment."""
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    config = NasExperimentConfig("sequential", "simplified", "local")
    config.max_trial_number = trials
    config.experiment_working_directory = str(work_dir)
    experiment = NasExperiment(space, evaluator or proxy_evaluator(), strategy, config, id=resume_id)
    try:
        experiment.resume() if resume_id else experiment.run()
    finally:
        experiment.stop()
    return experiment


def trained_models(strategy) -> list:
    """Models the engine trained (a ``Chain`` also lists those its filter marked invalid)."""
    from nni.nas.space import ModelStatus

    return [m for m in strategy.list_models(sort=False) if m.status == ModelStatus.Trained]


MAX_PARAMS = 5_500  # parameter budgets of the strategy tests on the tiny space
# About 10% fit: evolution has to retry most mutations.
TIGHT_PARAMS = 4_000


def measured_params(config, model) -> int:
    """Parameters of a sampled model's network, counted on the built network."""
    from mpn_nas import profile
    from search_spaces.config import sample_to_arch

    return profile(sample_to_arch(config, model.sample), latency=False).params
