"""TrialRecorder beyond duplicates: intermediate and final metrics, the end-of-search reconciliation with the
engine's database, its checkpoint state, and the event plumbing between the strategy and the engine."""
from types import SimpleNamespace

from nni.nas.execution.event import ModelEventType
from nni.nas.space import ModelStatus

from strategies.middleware import AWAITING_METRIC, TrialRecorder, _Event
from test_duplicates import FakeEngine, _model


def _recorder():
    ended = []
    recorder = TrialRecorder(on_end=ended.append, first_index=7)
    engine = FakeEngine()
    recorder.set_engine(engine)
    return recorder, engine, ended


def test_metrics_are_recorded_as_floats_from_numbers_and_dicts():
    recorder, engine, ended = _recorder()
    a, b = _model(width=4), _model(width=8)
    recorder.submit_models(a, b)
    engine.dispatch_model_event(ModelEventType.IntermediateMetric, metric=0.25, model=a)
    engine.dispatch_model_event(ModelEventType.IntermediateMetric, metric={"default": 0.5, "loss": 1.0}, model=a)
    engine.dispatch_model_event(ModelEventType.IntermediateMetric, metric=0.9, model=_model(width=99))  # not ours
    engine.finish(a, {"default": 0.75, "params": 100})
    engine.finish(b, 0.5)
    assert [(r.index, r.sample, r.status, r.val_accuracy, r.reason) for r in ended] == [
        (7, {"width": 4}, "succeeded", 0.75, ""), (8, {"width": 8}, "succeeded", 0.5, "")]
    assert all(r.model is None and r.seconds is not None and r.seconds >= 0 for r in ended)


def test_a_trials_seconds_are_its_wall_time_to_the_hundredth(monkeypatch):
    import strategies.middleware as middleware

    recorder, engine, ended = _recorder()
    model = _model(width=4)
    recorder.submit_models(model)
    recorder.records[id(model)].started = 1000.0
    monkeypatch.setattr(middleware.time, "time", lambda: 1012.3456)
    engine.finish(model, 0.5)
    assert ended[0].seconds == 12.35


def test_reconcile_completes_trials_whose_end_never_arrived_from_the_engine_database():
    recorder, engine, ended = _recorder()
    waiting, trained, failed, never_started = (_model(width=w) for w in (1, 2, 3, 4))
    recorder.submit_models(waiting, never_started, trained, failed)  # the dropped one is not the last
    engine.dispatch_model_event(ModelEventType.TrainingEnd, status=ModelStatus.Trained, model=waiting)
    assert recorder.records[id(waiting)].status == AWAITING_METRIC  # its end came, its metric did not
    database = [SimpleNamespace(sample={"width": 3}, status=ModelStatus.Failed, metric=None),
                SimpleNamespace(sample={"width": 2}, status=ModelStatus.Trained, metric=0.625),
                SimpleNamespace(sample={"width": 4}, status=ModelStatus.Training, metric=None)]  # not completed
    recorder.reconcile(database)
    assert [(r.index, r.sample, r.status, r.val_accuracy, r.reason) for r in ended] == [
        (7, {"width": 1}, "failed", None, "training ended without reporting a metric"),
        (8, {"width": 2}, "succeeded", 0.625, ""),
        (9, {"width": 3}, "failed", None, f"training ended with status {ModelStatus.Failed.value}")]
    assert sorted((r.sample["width"], r.status) for r in recorder.records.values()) == [
        (1, "failed"), (2, "succeeded"), (3, "failed")]
    assert id(never_started) not in recorder.records  # dropped: to be trained again on --resume
    assert recorder.wait_until_recorded(timeout=0)


def test_reconcile_uses_each_database_entry_once():
    recorder, engine, ended = _recorder()
    first, second = _model(width=5, routing="a"), _model(width=5, routing="a")
    recorder.network_key = lambda sample: str(id(sample))  # two trainings of equal samples (as after a repair)
    recorder.submit_models(first, second)
    recorder.reconcile([SimpleNamespace(sample={"width": 5, "routing": "a"}, status=ModelStatus.Trained, metric=0.5)])
    assert [(r.status, r.val_accuracy) for r in ended] == [("succeeded", 0.5)]
    assert [r.status for r in recorder.records.values()] == ["succeeded"]  # the other, never started, dropped


def test_next_trial_number_survives_a_checkpoint():
    recorder, _, _ = _recorder()
    assert recorder.state_dict() == {"next_index": 7}
    recorder.load_state_dict({"next_index": 12})
    assert recorder.state_dict() == {"next_index": 12}
    recorder.load_state_dict({})  # a checkpoint of an older version: keep counting from here
    assert recorder.state_dict() == {"next_index": 12}


def test_wait_until_recorded_gives_up_at_its_deadline():
    recorder, _, _ = _recorder()
    recorder.submit_models(_model(width=1))
    assert not recorder.wait_until_recorded(timeout=0.3)


def test_callbacks_registered_above_hear_the_engine_until_unregistered():
    recorder, engine, _ = _recorder()
    heard = []

    def callback(event):
        heard.append(event.metric)

    recorder.register_model_event_callback(ModelEventType.FinalMetric, callback)
    model = _model(width=1)
    recorder.submit_models(model)
    engine.dispatch_model_event(ModelEventType.FinalMetric, metric=0.5, model=model)
    recorder.unregister_model_event_callback(ModelEventType.FinalMetric, callback)
    engine.dispatch_model_event(ModelEventType.FinalMetric, metric=0.75, model=model)
    recorder.dispatch_model_event(ModelEventType.FinalMetric, metric=0.875, model=model)
    assert heard == [0.5]


class _FilteringEngine(FakeEngine):
    def list_models(self, status=None):
        return [m for m in self.submitted if status is None or m.status == status]


def test_list_models_adds_the_replayed_ones_filtered_by_status():
    trained = _model(width=1)
    recorder = TrialRecorder(replay={'{"width": 1}': ("succeeded", 0.5)})
    engine = _FilteringEngine()
    recorder.set_engine(engine)
    fresh = _model(width=2)
    recorder.submit_models(trained, fresh)
    assert engine.submitted == [fresh] and recorder.replayed == [trained]
    trained.status = ModelStatus.Trained
    assert list(recorder.list_models()) == [fresh, trained]
    assert list(recorder.list_models(ModelStatus.Trained)) == [trained]
    assert list(recorder.list_models(ModelStatus.Frozen)) == [fresh]  # the engine's, asked with the status
    assert list(recorder.list_models(ModelStatus.Failed)) == []


def test_the_recorder_stops_listening_to_the_engine_at_cleanup():
    recorder, engine, ended = _recorder()
    model = _model(width=1)
    recorder.submit_models(model)
    recorder._cleanup()
    engine.finish(model, 0.5)
    assert ended == [] and recorder.records[id(model)].status == "running"
    event = _Event(model, metric=0.5)
    recorder._on_final_metric(event)
    assert recorder.records[id(model)].val_accuracy == 0.5


def test_each_duplicate_is_counted_and_reported_with_its_own_sample():
    duplicates = []
    recorder = TrialRecorder(on_duplicate=duplicates.append, network_key=lambda sample: str(sample["width"]))
    engine = FakeEngine()
    recorder.set_engine(engine)
    first = _model(width=4, routing="a")
    recorder.submit_models(first)
    engine.finish(first, 0.5)
    recorder.submit_models(_model(width=4, routing="b"), _model(width=4, routing="c"))
    assert recorder.duplicates == 2
    assert [(d.sample, d.of_trial, d.status, d.val_accuracy) for d in duplicates] == [
        ({"width": 4, "routing": "b"}, 1, "succeeded", 0.5), ({"width": 4, "routing": "c"}, 1, "succeeded", 0.5)]


def test_replayed_trials_end_with_their_recorded_status():
    ends = []
    recorder = TrialRecorder(replay={'{"width": 1}': ("succeeded", 0.5), '{"width": 2}': ("failed", None)})
    recorder.set_engine(FakeEngine())
    recorder.register_model_event_callback(ModelEventType.TrainingEnd,
                                           lambda event: ends.append((event.model.sample, event.status)))
    recorder.submit_models(_model(width=1), _model(width=2))
    assert ends == [({"width": 1}, ModelStatus.Trained), ({"width": 2}, ModelStatus.Failed)]


def test_a_failed_trial_reports_its_reason_before_or_after_its_end(monkeypatch):
    import strategies.middleware as middleware
    from strategies.failures import failure_metric

    monkeypatch.setattr(middleware, "REASON_WAIT_SECONDS", 0.2)
    recorder, engine, ended = _recorder()
    before, after, silent = (_model(width=w) for w in (1, 2, 3))
    recorder.submit_models(before, after, silent)
    engine.dispatch_model_event(ModelEventType.IntermediateMetric, metric=failure_metric(ValueError("bad batch")),
                                model=before)
    engine.dispatch_model_event(ModelEventType.TrainingEnd, status=ModelStatus.Failed, model=before)
    engine.dispatch_model_event(ModelEventType.TrainingEnd, status=ModelStatus.Failed, model=after)
    engine.dispatch_model_event(ModelEventType.TrainingEnd, status=ModelStatus.Failed, model=silent)
    assert recorder.records[id(after)].status == middleware.AWAITING_REASON  # its end came first
    engine.dispatch_model_event(ModelEventType.IntermediateMetric, metric=failure_metric(MemoryError("no room")),
                                model=after)
    assert recorder.wait_until_recorded(timeout=10)
    assert [(r.sample["width"], r.status, r.reason) for r in ended] == [
        (1, "failed", "ValueError: bad batch"), (2, "failed", "out of memory (MemoryError: no room)"),
        (3, "failed", f"training ended with status {ModelStatus.Failed.value}")]  # it never said why


def test_reconcile_takes_a_dropped_failed_trials_reason_from_its_reported_metrics():
    from strategies.failures import failure_metric

    recorder, engine, ended = _recorder()
    failed = _model(width=3)
    recorder.submit_models(failed)
    metrics = SimpleNamespace(intermediates=[0.5, failure_metric(ValueError("bad input"))])
    recorder.reconcile([SimpleNamespace(sample={"width": 3}, status=ModelStatus.Failed, metric=None, metrics=metrics)])
    assert [(r.index, r.status, r.reason) for r in ended] == [(7, "failed", "ValueError: bad input")]


def test_a_rejected_network_hands_its_waiting_duplicates_back_and_an_interrupted_one_drops_them():
    for status, resubmitted in ((ModelStatus.Invalid, True), (ModelStatus.Interrupted, False)):
        recorder, engine, ended = _recorder()
        first, duplicate = _model(width=6), _model(width=6)
        recorder.submit_models(first, duplicate)  # the duplicate waits for the first one's end
        assert engine.submitted == [first]
        engine.dispatch_model_event(ModelEventType.TrainingEnd, status=status, model=first)
        # Invalid: the filter below rejected it, and answers the duplicates too; Interrupted: run again on --resume.
        assert engine.submitted == ([first, duplicate] if resubmitted else [first]), status
        assert recorder.records == {} and recorder.waiting == {} and ended == [], status
