"""Multi-objective search: the Pareto front of validation accuracy (maximised) against FLOPs or
parameters (minimised), NSGA-II style, as an NNI ``Strategy``; and the front's artifacts.

:class:`ParetoEvolution` is steady-state NSGA-II (a "(mu + 1)" scheme, so it works with one trial at a
time as well as with concurrent trials): the first ``population_size`` individuals are random; each
later one is a child of two binary-tournament winners (lower front, then larger crowding distance),
crossed over choice by choice and mutated; when a child's accuracy arrives the population is cut back
to ``population_size`` by non-dominated sorting and crowding distance. The cost of a sample is known
without training (counted on the architecture), so only accuracy waits for the trial.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from numpy.random import RandomState

from nni.mutable import MutableAnnotation, Sample
from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import ModelEvent, ModelEventType
from nni.nas.space import ExecutableModelSpace, ModelStatus
from nni.nas.strategy import Strategy
from nni.nas.strategy.utils import DeduplicationHelper, RetrySamplingHelper

from mpn_nas.arch import Arch
from mpn_nas.errors import UserError

from search_spaces.budget import arch_cost
from search_spaces.config import SpaceConfig, sample_to_arch

from .budgeted import FeasibleSampling, SampleFits
from .dominance import nsga2_ranking, nsga2_survivors, pareto_front
from .evolution import SAMPLING_RETRIES
from .registry import check_objective
from .state import plain_sample, random_state_from_plain, random_state_to_plain

_logger = logging.getLogger(__name__)

FRONT_FOLDER = "pareto"


class SampleCost:
    """``cost(sample)``: the FLOPs or parameters of a sample's architecture, as ``mpn_nas.profile`` counts them."""

    def __init__(self, config: SpaceConfig, objective: str = "flops") -> None:
        check_objective(objective)
        self.config, self.objective = config, objective

    def __call__(self, sample: Mapping[str, Any]) -> float:
        return float(getattr(arch_cost(sample_to_arch(self.config, sample)), self.objective))

    def __repr__(self) -> str:
        return f"SampleCost({self.objective})"


@dataclass
class Evaluated:
    """A trained sample with its two objectives."""

    sample: dict
    accuracy: float
    cost: float

    @property
    def point(self) -> tuple[float, float]:
        return self.accuracy, self.cost


class ParetoEvolution(FeasibleSampling, Strategy):
    """NSGA-II over the choices of an NNI model space: accuracy (the trial's metric, maximised) against
    ``cost(sample)`` (minimised).

    Parameters
    ----------
    cost
        Cost of a sample, e.g. :class:`SampleCost` (FLOPs or parameters).
    population_size
        Individuals kept between generations; also the number of random individuals to start with.
    mutation_prob
        Probability that each choice of a child is drawn again.
    crossover
        Whether a child takes each choice from one of two tournament winners (else from one parent).
    fits
        Optional budget check: over-budget candidates are drawn again, never trained.
    dedup
        Never train one sample twice.
    seed
        Random seed: the same seed and the same metrics give the same search.
    """

    def __init__(self, cost: Callable[[Mapping[str, Any]], float], *, population_size: int = 20,
                 mutation_prob: float = 0.2, crossover: bool = True, fits: Optional[SampleFits] = None,
                 dedup: bool = True, seed: Optional[int] = None, retries: int = SAMPLING_RETRIES) -> None:
        super().__init__()
        if population_size < 2:
            raise ValueError(f"population_size must be >= 2, got {population_size}")
        if not 0.0 < mutation_prob <= 1.0:
            raise ValueError(f"mutation_prob must be in (0, 1], got {mutation_prob}")
        self.cost, self.fits = cost, fits
        self.population_size, self.mutation_prob, self.crossover = population_size, mutation_prob, crossover
        self.screened_out = 0
        self._dedup = DeduplicationHelper(raise_on_dup=True) if dedup else None
        self._retry = RetrySamplingHelper(retries)
        self._random_state = RandomState(seed)
        self._population: list[Evaluated] = []
        self._history: list[Evaluated] = []  # every trained individual: the front is taken over all of them
        self._submitted: list[dict] = []  # every sample handed to the engine (the dedup history, as plain data)
        self._running: list[ExecutableModelSpace] = []
        self._individual_counter = 0

    def extra_repr(self) -> str:
        return (f"cost={self.cost!r}, population_size={self.population_size}, mutation_prob={self.mutation_prob}, "
                f"crossover={self.crossover}, fits={self.fits!r}, dedup={self._dedup is not None}")

    # Results ---------------------------------------------------------------------------------------------

    def front(self) -> list[Evaluated]:
        """Non-dominated trained individuals, cheapest first."""
        members = [self._history[i] for i in pareto_front([e.point for e in self._history])]
        return sorted(members, key=lambda e: (e.cost, -e.accuracy))

    @property
    def population(self) -> list[Evaluated]:
        return list(self._population)

    @property
    def history(self) -> list[Evaluated]:
        return list(self._history)

    # Sampling --------------------------------------------------------------------------------------------

    def random(self) -> ExecutableModelSpace:
        """A random feasible, new sample."""
        sample: Sample = {}
        model = self.model_space.random(memo=sample, random_state=self._random_state)
        return self._accept(sample, model, "Random")

    def new_individual(self) -> ExecutableModelSpace:
        """A mutated child of binary-tournament winners."""
        parent = self._tournament()
        if self.crossover:
            other = self._tournament()
            parent = {key: (other[key] if self._random_state.uniform() < 0.5 else value)
                      for key, value in parent.items()}
        child = copy.copy(parent)
        for key, mutable in self.model_space.simplify().items():
            if isinstance(mutable, MutableAnnotation):
                continue
            if self._random_state.uniform() < self.mutation_prob:
                child[key] = mutable.random(random_state=self._random_state)
        return self._accept(child, None, "Mutated")

    def _accept(self, sample: Sample, model: Optional[ExecutableModelSpace], how: str) -> ExecutableModelSpace:
        # Budget before dedup, so that the dedup history (saved in the state) holds submitted samples only.
        self.require_fits(sample)
        if self._dedup is not None:
            self._dedup.dedup(sample)
        model = model if model is not None else self.model_space.freeze(sample)
        self._submitted.append(plain_sample(sample))
        self._individual_counter += 1
        _logger.info("[Individual %4d] %s: %s", self._individual_counter, how, sample)
        return model

    def _tournament(self) -> dict:
        """Binary tournament on NSGA-II's crowded comparison."""
        ranking = nsga2_ranking([e.point for e in self._population])
        first, second = self._random_state.randint(len(self._population), size=2)
        better = min((first, second), key=lambda i: (ranking[i][0], -ranking[i][1], i))
        return dict(self._population[better].sample)

    # Running ---------------------------------------------------------------------------------------------

    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._training_end)
        return model_space

    def _cleanup(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._training_end)

    def _run(self) -> None:
        while self.wait_for_resource():
            spawning = not self._population or len(self._population) + len(self._running) < self.population_size
            model = self._retry.retry(self.random if spawning else self.new_individual)
            if model is None:
                _logger.warning("Cannot find a new feasible sample to submit. Stop.")
                return
            self._running.append(model)
            self.engine.submit_models(model)
        self.engine.wait_models()

    def _training_end(self, event: ModelEvent) -> None:
        if event.model not in self._running:
            return
        self._running.remove(event.model)
        metric = event.model.metric
        if metric is None:
            if event.status != ModelStatus.Invalid:  # invalid: screened out by a filter below, not a failure
                _logger.warning("%s has no metric; it does not join the population.", event.model)
            return
        individual = Evaluated(plain_sample(event.model.sample), _accuracy(metric), self.cost(event.model.sample))
        self._history.append(individual)
        self._population.append(individual)
        if len(self._population) > self.population_size:
            keep = nsga2_survivors([e.point for e in self._population], self.population_size)
            self._population = [self._population[i] for i in keep]

    # Checkpointing (NNI saves and restores this with the experiment; plain data, see strategies.state) -----

    def state_dict(self) -> dict:
        return {
            "population": [asdict(e) for e in self._population],
            "history": [asdict(e) for e in self._history],
            "submitted": list(self._submitted),
            "individual_counter": self._individual_counter,
            "screened_out": self.screened_out,
            "random_state": random_state_to_plain(self._random_state),
            "num_running_models": len(self._running),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("num_running_models", 0):
            _logger.warning("%d models were running when the state was saved; they are not resumed.",
                            state_dict["num_running_models"])
        self._population = [Evaluated(**e) for e in state_dict["population"]]
        self._history = [Evaluated(**e) for e in state_dict["history"]]
        self._submitted = list(state_dict["submitted"])
        self._individual_counter = state_dict["individual_counter"]
        self.screened_out = state_dict.get("screened_out", 0)
        self._random_state.set_state(random_state_from_plain(state_dict["random_state"]))
        if self._dedup is not None:
            self._dedup.reset()
            for sample in self._submitted:
                self._dedup.dedup(sample)


def _accuracy(metric: Any) -> float:
    return float(metric["default"] if isinstance(metric, Mapping) else metric)


# Artifacts -----------------------------------------------------------------------------------------------

def front_rows(rows: Sequence[Mapping[str, Any]], objective: str) -> list[Mapping[str, Any]]:
    """The succeeded trial rows (as in ``trials.csv``) that no other succeeded row dominates in
    (``val_accuracy``, ``objective``)."""
    check_objective(objective)
    done = [r for r in rows if r["status"] == "succeeded"]
    return [done[i] for i in pareto_front([(float(r["val_accuracy"]), float(r[objective])) for r in done])]


def front_trials(rows: Sequence[Mapping[str, Any]], objective: str) -> list[int]:
    """Trial numbers of :func:`front_rows`, ascending (for the ``pareto`` column of ``trials.csv``)."""
    return sorted(int(r["trial"]) for r in front_rows(rows, objective))


def row_sample(row: Mapping[str, Any], config: SpaceConfig) -> dict:
    """The sample of a trial row; values read back from CSV (strings) are matched to the candidates."""
    sample = {}
    for label, candidates in config.labels().items():
        value = row[label]
        matches = [c for c in candidates if c == value or str(c) == str(value)]
        if not matches:
            raise UserError(f"trial {row.get('trial')}: {label} = {value!r} is not a candidate of the space "
                            f"({candidates})")
        sample[label] = matches[0]
    return sample


def write_front(out_dir: Path, rows: Sequence[Mapping[str, Any]], config: SpaceConfig, objective: str,
                annotate: Callable[[Arch], Arch] = lambda arch: arch) -> list[int]:
    """Write the architecture document of every front member (through ``annotate``, which adds the
    search's training record) to ``out_dir/pareto/trialNNN.json`` (replacing an older front there)
    and return the front's trial numbers, ascending."""
    members = front_rows(rows, objective)
    folder = Path(out_dir) / FRONT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("trial*.json"):
        stale.unlink()
    for row in members:
        annotate(sample_to_arch(config, row_sample(row, config))).to_json(folder / front_file_name(int(row["trial"])))
    return sorted(int(r["trial"]) for r in members)


def front_file_name(trial: int) -> str:
    return f"trial{trial:03d}.json"
