"""Budget-aware tuners for ``nnictl`` experiments: NNI's TPE, Evolution and Random tuners that never
propose an over-budget architecture.

```yaml
tuner:
  className: strategies.tuners.BudgetedTPE
  classArgs: {space: resnet, shape: digits, max_params: 30000}
```

An over-budget proposal is rejected before NNI sees it and fed back to the wrapped tuner with a
penalty result (accuracy 0 by default), so TPE and Evolution learn to avoid that region instead of
proposing it again.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import nni
from nni.tuner import Tuner

from mpn_nas.errors import UserError

from search_spaces.budget import Budget, check_arch, require_feasible
from mpn_nas.datasets import fixed_shapes
from search_spaces.config import SpaceConfig, load_config, sample_to_arch

_logger = logging.getLogger(__name__)


def _inner_tuner(name: str, optimize_mode: str, seed: Optional[int], tuner_args: dict) -> Tuner:
    if name == "tpe":
        from nni.algorithms.hpo.tpe_tuner import TpeTuner
        return TpeTuner(optimize_mode=optimize_mode, seed=seed, **tuner_args)
    if name == "evolution":
        from nni.algorithms.hpo.evolution_tuner import EvolutionTuner
        return EvolutionTuner(optimize_mode=optimize_mode, **tuner_args)
    if name == "random":
        from nni.algorithms.hpo.random_tuner import RandomTuner
        return RandomTuner(seed=seed)
    raise UserError(f"unknown tuner {name!r}; allowed: tpe, evolution, random")


class BudgetedTuner(Tuner):
    """Wraps NNI's ``tuner`` (``tpe``, ``evolution`` or ``random``) with a complexity budget.

    ``space``/``shape``/``space_config`` must match the exported ``search_space.json`` (``mpn-nas
    export-space``). ``max_attempts`` consecutive over-budget proposals end the experiment.
    """

    def __init__(self, tuner: str = "tpe", space: str = "resnet", shape: str = "digits",
                 space_config: Optional[str] = None, max_params: Optional[int] = None,
                 max_flops: Optional[int] = None, max_latency_ms: Optional[float] = None,
                 optimize_mode: str = "maximize", seed: Optional[int] = None, penalty: float = 0.0,
                 max_attempts: int = 2000, **tuner_args: Any) -> None:
        shapes = fixed_shapes()
        if shape not in shapes:
            raise UserError(f"unknown shape {shape!r}; allowed: {', '.join(shapes)}")
        self.config: SpaceConfig = load_config(space, space_config, in_channels=shapes[shape].in_channels,
                                               input_size=shapes[shape].input_size,
                                               num_classes=shapes[shape].num_classes)
        self.budget = Budget(max_params, max_flops, max_latency_ms)
        require_feasible(self.config, self.budget)
        self.inner = _inner_tuner(tuner, optimize_mode, seed, tuner_args)
        self.penalty, self.max_attempts = penalty, max_attempts
        self.rejected = 0

    def update_search_space(self, search_space: dict) -> None:
        expected = set(self.config.labels())
        if set(search_space) != expected:
            raise UserError(f"search space labels {sorted(search_space)} do not match the tuner's space "
                            f"{sorted(expected)}; export it with the same --space/--space-config")
        self.inner.update_search_space(search_space)

    def fits(self, parameters: dict) -> bool:
        return check_arch(sample_to_arch(self.config, parameters), self.budget)[0]

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict:
        # Every attempt reuses parameter_id: a rejected one is closed in the wrapped tuner with the
        # penalty result before the next attempt, so the tuner's bookkeeping stays consistent.
        for _ in range(self.max_attempts):
            parameters = self.inner.generate_parameters(parameter_id, **kwargs)
            if self.fits(parameters):
                return parameters
            self.rejected += 1
            self.inner.receive_trial_result(parameter_id, parameters, self.penalty)
        _logger.warning("%d proposals in a row were over budget; no more trials", self.max_attempts)
        raise nni.NoMoreTrialError(f"{self.max_attempts} proposals in a row were over budget")

    def receive_trial_result(self, parameter_id: int, parameters: dict, value: Any, **kwargs: Any) -> None:
        self.inner.receive_trial_result(parameter_id, parameters, value, **kwargs)

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        self.inner.trial_end(parameter_id, success, **kwargs)

    def import_data(self, data: Any) -> None:
        self.inner.import_data(data)


class BudgetedTPE(BudgetedTuner):
    """NNI's TPE tuner under a complexity budget."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(tuner="tpe", **kwargs)


class BudgetedEvolution(BudgetedTuner):
    """NNI's Evolution tuner under a complexity budget."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(tuner="evolution", **kwargs)


class BudgetedRandom(BudgetedTuner):
    """NNI's Random tuner under a complexity budget."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(tuner="random", **kwargs)
