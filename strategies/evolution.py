"""NNI's regularized (aging) evolution whose individuals are always within the complexity budget."""
from __future__ import annotations

from typing import Any, Optional

from nni.nas.space import ExecutableModelSpace
from nni.nas.strategy import RegularizedEvolution
from nni.nas.strategy.evolution import Individual
from nni.nas.strategy.utils import RetrySamplingHelper

from .budgeted import FeasibleSampling, OverBudget, SampleFits
from .state import (dedup_history_from_plain, dedup_history_to_plain, plain_sample, random_state_from_plain,
                    random_state_to_plain)

# Consecutive rejected candidates before evolution gives up on one individual (NNI's default is 500;
# a tight budget can leave far fewer than 1 in 500 random samples feasible).
SAMPLING_RETRIES = 5000


class FeasibleEvolution(FeasibleSampling, RegularizedEvolution):
    """:class:`~nni.nas.strategy.RegularizedEvolution` that checks every random or mutated candidate
    against ``fits`` before submitting it.

    An over-budget candidate raises :class:`~strategies.budgeted.OverBudget`; NNI's
    ``RetrySamplingHelper`` then draws again (the initial population) or mutates the parent again, so
    every population slot holds a trained, feasible individual and mutation walks toward feasible
    children. Rejections are counted in ``screened_out``. The state is plain data (see
    :mod:`strategies.state`), so NNI's experiment resume works with it under current torch.
    """

    def __init__(self, fits: Optional[SampleFits] = None, *, retries: int = SAMPLING_RETRIES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fits, self.screened_out = fits, 0
        self._retry_helper = RetrySamplingHelper(retries)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fits={self.fits!r}"

    def random(self) -> ExecutableModelSpace:
        return self._checked(super().random())

    def new_individual(self) -> ExecutableModelSpace:
        return self._checked(super().new_individual())

    def _checked(self, model: ExecutableModelSpace) -> ExecutableModelSpace:
        try:
            self.require_fits(model.sample)
        except OverBudget:
            self._individual_counter -= 1  # NNI counted it as an individual; it never becomes one
            raise
        return model

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["population"] = [{"x": plain_sample(i.x), "y": i.y} for i in state["population"]]
        state["random_state"] = random_state_to_plain(self._random_state)
        if "dedup_history" in state:
            state["dedup_history"] = dedup_history_to_plain(state["dedup_history"])
        return {**state, "screened_out": self.screened_out}

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict, population=[Individual(i["x"], i["y"]) for i in state_dict["population"]],
                     random_state=random_state_from_plain(state_dict["random_state"]))
        if "dedup_history" in state:
            state["dedup_history"] = dedup_history_from_plain(state["dedup_history"])
        super().load_state_dict(state)
        self.screened_out = state_dict.get("screened_out", 0)
