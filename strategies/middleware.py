"""Strategy middleware (NNI's ``Chain``/``Filter`` mechanism): complexity budgets and trial records.

``Chain(strategy, TrialRecorder(...), BudgetFilter(...))``: the strategy submits to the recorder,
which hands models to the filter, which submits only within-budget models to the engine.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional

from nni.nas.execution.event import ModelEventType
from nni.nas.space import ExecutableModelSpace, ModelStatus
from nni.nas.strategy.middleware import Filter, StrategyMiddleware

from search_spaces.budget import Budget, check_sample
from search_spaces.config import SpaceConfig

from .failures import failure_reason


class SampleFits:
    """``fits(sample)``: whether a sample of the space ``config`` describes is within ``budget``."""

    def __init__(self, config: SpaceConfig, budget: Budget, device: str = "cpu") -> None:
        self.config, self.budget, self.device = config, budget, device

    def __call__(self, sample: Mapping[str, Any]) -> bool:
        return check_sample(self.config, sample, self.budget, self.device)[0]

    def __repr__(self) -> str:
        return f"SampleFits({self.budget})"


class BudgetFilter(Filter):
    """Never submits a sample over ``budget``; counts what it screened out.

    ``patience`` consecutive rejections end the search (the space is then almost all over budget).
    """

    def __init__(self, config: SpaceConfig, budget: Budget, device: str = "cpu", patience: int = 2000) -> None:
        super().__init__(self.fits, patience=patience)
        self.budget = budget
        self.sample_fits = SampleFits(config, budget, device)

    def fits(self, model: ExecutableModelSpace) -> bool:
        return self.sample_fits(model.sample)

    @property
    def screened_out(self) -> int:
        return self._filter_count_total

    def extra_repr(self) -> str:
        return f"budget={self.budget}"


# A trial whose end arrived before its final metric: completed when the metric arrives, or by ``reconcile``.
AWAITING_METRIC = "awaiting metric"
# A failed trial whose end arrived before the metric saying why (see strategies.evaluation): completed
# when it arrives, or after REASON_WAIT_SECONDS without one.
AWAITING_REASON = "awaiting reason"
REASON_WAIT_SECONDS = 5.0


@dataclass
class TrialRecord:
    """What happened to one submitted sample."""

    index: int
    sample: dict
    status: str = "running"
    val_accuracy: Optional[float] = None
    started: float = field(default_factory=time.time)
    seconds: Optional[float] = None
    reason: str = ""
    model: Any = field(default=None, repr=False)  # the engine only keeps weak references to running models
    network: str = ""  # the network's key (see TrialRecorder's ``network_key``)


@dataclass
class DuplicateRecord:
    """A proposal of a network already trained in this search: not trained again."""

    sample: dict
    of_trial: int
    status: str
    val_accuracy: Optional[float]


# Consecutive proposals of networks already trained before the recorder says the budget is spent:
# the strategy is only revisiting what it has (a small or exhausted space).
DUPLICATE_PATIENCE = 200


class TrialRecorder(StrategyMiddleware):
    """Records every trained sample (metrics, duration, status) and calls ``on_end(record)`` after each.

    Models the filter below rejects are not trials: they are not recorded here. ``replay`` maps
    :func:`sample_key` of samples finished by an earlier, interrupted run to ``(status, accuracy)``:
    such samples are not trained again; the strategy receives their old result at once.

    Each network is trained once: ``network_key(sample)`` names the network a sample builds (different
    samples can repair to one network). A later proposal of a network already trained (``trained``
    holds those of an earlier run: key -> ``(trial, status, accuracy)``) gets that result at once and
    ``on_duplicate(DuplicateRecord)``; one proposed while the network trains waits for its result.
    Duplicates are not trials (the engine never sees them, so they use none of its trial budget);
    after ``patience`` in a row, :meth:`budget_available` says no and :attr:`exhausted` is set.
    """

    def __init__(self, on_end: Callable[[TrialRecord], None] = lambda record: None, first_index: int = 1,
                 replay: Optional[Mapping[str, tuple[str, Optional[float]]]] = None,
                 network_key: Optional[Callable[[Mapping[str, Any]], str]] = None,
                 trained: Optional[Mapping[str, tuple[int, str, Optional[float]]]] = None,
                 on_duplicate: Callable[[DuplicateRecord], None] = lambda record: None,
                 patience: int = DUPLICATE_PATIENCE) -> None:
        super().__init__()
        self.on_end, self.on_duplicate = on_end, on_duplicate
        self.records: dict[int, TrialRecord] = {}  # by id(model)
        self.replay = dict(replay or {})
        self.replayed: list[ExecutableModelSpace] = []
        self.network_key = network_key or sample_key
        self.trained: dict[str, tuple[int, str, Optional[float]]] = dict(trained or {})
        self.waiting: dict[str, list[ExecutableModelSpace]] = {}  # network in training -> its duplicates
        self.duplicates, self.patience, self.exhausted = 0, patience, False
        self._duplicates_in_a_row = 0
        self._next_index = first_index
        self._lock = threading.Lock()

    def _initialize_engine(self, engine) -> None:
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)
        engine.register_model_event_callback(ModelEventType.IntermediateMetric, self._on_intermediate)
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)

    def _cleanup(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)
        self.engine.unregister_model_event_callback(ModelEventType.IntermediateMetric, self._on_intermediate)
        self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)

    def submit_models(self, *models: ExecutableModelSpace) -> None:
        to_train = []
        for model in models:
            previous = self.replay.pop(sample_key(model.sample), None)
            if previous is not None:
                self._replay(model, *previous)
                continue
            network = self.network_key(model.sample)
            with self._lock:
                done = self.trained.get(network)
                if done is None and network in self.waiting:  # in training now: answered when it ends
                    self.waiting[network].append(model)
                    self._duplicates_in_a_row += 1
                    continue
                if done is None:
                    self._duplicates_in_a_row = 0
                    self.waiting[network] = []
                    self.records[id(model)] = TrialRecord(0, dict(model.sample), model=model, network=network)
            if done is not None:
                self._duplicates_in_a_row += 1
                self._answer_duplicate(model, *done)
                continue
            to_train.append(model)
        if to_train:
            self.engine.submit_models(*to_train)

    def _answer_duplicate(self, model: ExecutableModelSpace, trial: int, status: str,
                          accuracy: Optional[float]) -> None:
        self.duplicates += 1
        self.on_duplicate(DuplicateRecord(dict(model.sample), trial, status, accuracy))
        self._replay(model, status, accuracy)

    def budget_available(self) -> bool:
        if self._duplicates_in_a_row >= self.patience:
            self.exhausted = True
            return False
        return self.engine.budget_available()

    def _replay(self, model: ExecutableModelSpace, status: str, accuracy: Optional[float]) -> None:
        self.replayed.append(model)
        if accuracy is not None:
            self.dispatch_model_event(ModelEventType.FinalMetric, metric=accuracy, model=model)
        self.dispatch_model_event(ModelEventType.TrainingEnd, model=model,
                                  status=ModelStatus.Trained if status == "succeeded" else ModelStatus.Failed)

    def _record(self, model: ExecutableModelSpace) -> Optional[TrialRecord]:
        return self.records.get(id(model))

    def _on_intermediate(self, event) -> None:
        record, reason = self._record(event.model), failure_reason(event.metric)
        if record is None or not reason:  # only a failing trial's last word matters here
            return
        with self._lock:
            record.reason = reason
            late = record.status == AWAITING_REASON
            if late:
                record.status = "failed"
        if late:
            self._finish(record)

    def _give_up_on_reason(self, record: TrialRecord, status: str) -> None:
        with self._lock:
            if record.status != AWAITING_REASON:
                return
            record.status, record.reason = "failed", f"training ended with status {status}"
        self._finish(record)

    def _on_final_metric(self, event) -> None:
        record = self._record(event.model)
        if record is None:
            return
        record.val_accuracy = _as_float(event.metric)
        with self._lock:
            late = record.status == AWAITING_METRIC
            if late:
                record.status = "succeeded"
        if late:
            self._finish(record)

    def _on_training_end(self, event, await_reason: bool = True) -> None:
        with self._lock:
            record = self.records.get(id(event.model))
            # Screened out below us, or cut short by Ctrl-C (to be run again on --resume): not a finished trial.
            if record is None or event.status in (ModelStatus.Invalid, ModelStatus.Interrupted):
                self.records.pop(id(event.model), None)
                waiting = self.waiting.pop(record.network, []) if record is not None else []
                resubmit = event.status == ModelStatus.Invalid and waiting
            else:
                resubmit = None
        if resubmit is not None:
            if resubmit:  # duplicates of a network the filter rejected: the filter answers them too
                self.engine.submit_models(*waiting)
            return
        with self._lock:
            record.index, self._next_index = self._next_index, self._next_index + 1
            record.seconds = round(time.time() - record.started, 2)
            if event.status == ModelStatus.Trained and record.val_accuracy is None:
                # The training service's manager can deliver a trial's end before its final metric.
                record.status = AWAITING_METRIC
                return
            record.status = "succeeded" if event.status == ModelStatus.Trained else "failed"
            if record.status == "failed" and not record.reason and not await_reason:
                record.reason = f"training ended with status {event.status.value}"
            elif record.status == "failed" and not record.reason:
                # The reason travels as a metric, which the manager can deliver after the end.
                record.status = AWAITING_REASON
                timer = threading.Timer(REASON_WAIT_SECONDS, self._give_up_on_reason, (record, event.status.value))
                timer.daemon = True
                timer.start()
                return
        self._finish(record)

    def _finish(self, record: TrialRecord) -> None:
        record.model = None
        with self._lock:
            self.trained[record.network] = (record.index, record.status, record.val_accuracy)
            waiting = self.waiting.pop(record.network, [])
        self.on_end(record)
        for model in waiting:
            self._answer_duplicate(model, record.index, record.status, record.val_accuracy)

    def state_dict(self) -> dict:
        return {"next_index": self._next_index}

    def load_state_dict(self, state_dict: dict) -> None:
        self._next_index = state_dict.get("next_index", self._next_index)

    def wait_until_recorded(self, timeout: float = 60.0) -> bool:
        """Wait for the end events of submitted trials: NNI's manager reports "done" slightly before
        the last trial's metric and end reach this process."""
        deadline = time.time() + timeout
        while any(r.status in ("running", AWAITING_METRIC, AWAITING_REASON) for r in list(self.records.values())):
            if time.time() > deadline:
                return False
            time.sleep(0.2)
        return True

    def reconcile(self, engine_models: Iterable[ExecutableModelSpace]) -> None:
        """Complete records whose end event never arrived from what the engine's database says
        (NNI 3.0's training-service engine can drop the last trial's events at shutdown); records of
        models that never started are dropped."""
        completed = [m for m in engine_models if m.status.completed()]
        for record in list(self.records.values()):
            if record.status != AWAITING_METRIC:
                continue
            match = next((m for m in completed if m.sample == record.sample and m.metric is not None), None)
            if match is not None:
                completed.remove(match)
                self._on_final_metric(_Event(record.model, match.metric))
            else:
                record.status, record.reason = "failed", "training ended without reporting a metric"
                self._finish(record)
        for key, record in list(self.records.items()):
            if record.status != "running":
                continue
            match = next((m for m in completed if m.sample == record.sample), None)
            if match is None:
                self.records.pop(key)
                continue
            completed.remove(match)
            if match.metric is not None:
                self._on_final_metric(_Event(record.model, match.metric))
            reasons = [failure_reason(m) for m in getattr(getattr(match, "metrics", None), "intermediates", [])]
            record.reason = record.reason or next(filter(None, reasons), "")
            self._on_training_end(_Event(record.model, status=match.status), await_reason=False)  # the search is over


    # The upper level hears events from the engine below and the replays dispatched here.
    def register_model_event_callback(self, event_type, callback) -> None:
        super().register_model_event_callback(event_type, callback)
        self.engine.register_model_event_callback(event_type, callback)

    def unregister_model_event_callback(self, event_type, callback) -> None:
        super().unregister_model_event_callback(event_type, callback)
        self.engine.unregister_model_event_callback(event_type, callback)

    def list_models(self, status: Optional[ModelStatus] = None) -> Iterable[ExecutableModelSpace]:
        yield from self.engine.list_models(status)
        yield from (m for m in self.replayed if status is None or m.status == status)


def sample_key(sample: Mapping[str, Any]) -> str:
    """A canonical text form of a sample, equal for equal choices."""
    return json.dumps({k: sample[k] for k in sorted(sample)}, sort_keys=True)


@dataclass
class _Event:
    model: Any
    metric: Any = None
    status: Any = None


def _as_float(metric: Any) -> Optional[float]:
    if isinstance(metric, dict):
        metric = metric.get("default")
    return None if metric is None else float(metric)
