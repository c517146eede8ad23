"""NNI's regularized (aging) evolution whose individuals are always within the complexity budget."""
from __future__ import annotations

from typing import Any, Optional

from nni.nas.space import ExecutableModelSpace
from nni.nas.strategy import RegularizedEvolution
from nni.nas.strategy.utils import RetrySamplingHelper

from .budgeted import FeasibleSampling, OverBudget, SampleFits

# Consecutive rejected candidates before evolution gives up on one individual (NNI's default is 500;
# a tight budget can leave far fewer than 1 in 500 random samples feasible).
SAMPLING_RETRIES = 5000


class FeasibleEvolution(FeasibleSampling, RegularizedEvolution):
    """:class:`~nni.nas.strategy.RegularizedEvolution` that checks every random or mutated candidate
    against ``fits`` before submitting it.

    An over-budget candidate raises :class:`~strategies.budgeted.OverBudget`; NNI's
    ``RetrySamplingHelper`` then draws again (the initial population) or mutates the parent again, so
    every population slot holds a trained, feasible individual and mutation walks toward feasible
    children. Rejections are counted in ``screened_out`` (kept in the strategy state).
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
        return {**super().state_dict(), "screened_out": self.screened_out}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.screened_out = state_dict.get("screened_out", 0)
