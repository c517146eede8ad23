"""Each network is trained once per search: later proposals of it are answered from the record."""
from types import SimpleNamespace

from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import ModelEventType
from nni.nas.space import ModelStatus
from nni.nas.space.metrics import Metrics

from strategies.middleware import TrialRecorder


class FakeEngine(ExecutionEngine):
    """Takes submitted models; the test decides when they finish."""

    def __init__(self):
        super().__init__()
        self.submitted = []

    def submit_models(self, *models):
        self.submitted.extend(models)

    def finish(self, model, metric):
        self.dispatch_model_event(ModelEventType.FinalMetric, metric=metric, model=model)
        self.dispatch_model_event(ModelEventType.TrainingEnd, status=ModelStatus.Trained, model=model)

    def list_models(self, status=None):
        return list(self.submitted)

    def idle_worker_available(self):
        return True

    def budget_available(self):
        return True

    def shutdown(self):
        pass

    def load_state_dict(self, state_dict):
        pass

    def state_dict(self):
        return {}


def _model(**sample):
    return SimpleNamespace(sample=sample, metrics=Metrics(), status=ModelStatus.Frozen)


def _recorder(**kwargs):
    """A recorder whose networks are named by ``width`` alone (``routing`` is repaired away, say)."""
    ended, duplicates, heard = [], [], []
    recorder = TrialRecorder(on_end=ended.append, on_duplicate=duplicates.append,
                             network_key=lambda sample: str(sample["width"]), **kwargs)
    engine = FakeEngine()
    recorder.set_engine(engine)
    recorder.register_model_event_callback(ModelEventType.FinalMetric,
                                           lambda event: heard.append((event.model.sample, event.metric)))
    return recorder, engine, ended, duplicates, heard


def test_a_network_already_trained_is_answered_from_the_record_not_trained_again():
    recorder, engine, ended, duplicates, heard = _recorder()
    first = _model(width=8, routing="none")
    recorder.submit_models(first)
    engine.finish(first, 0.75)
    again = _model(width=8, routing="static")  # another sample, the same network
    other = _model(width=16, routing="none")
    recorder.submit_models(again, other)
    assert engine.submitted == [first, other]  # the duplicate never reached the engine
    assert [r.index for r in ended] == [1]
    assert [(d.of_trial, d.val_accuracy, d.status) for d in duplicates] == [(1, 0.75, "succeeded")]
    assert ({"width": 8, "routing": "static"}, 0.75) in heard  # the strategy still gets the metric
    assert again.status == ModelStatus.Trained and recorder.duplicates == 1


def test_a_duplicate_of_a_network_in_training_waits_for_its_result():
    recorder, engine, ended, duplicates, heard = _recorder()
    first, twin = _model(width=8, routing="none"), _model(width=8, routing="static")
    recorder.submit_models(first, twin)
    assert engine.submitted == [first] and not duplicates
    engine.finish(first, 0.5)
    assert [(d.of_trial, d.val_accuracy, d.status) for d in duplicates] == [(1, 0.5, "succeeded")]
    assert ({"width": 8, "routing": "static"}, 0.5) in heard and twin.status == ModelStatus.Trained


def test_duplicates_of_a_network_in_training_count_toward_patience():
    recorder, engine, ended, duplicates, heard = _recorder(patience=3)
    first, other = _model(width=8, routing="none"), _model(width=16, routing="none")
    recorder.submit_models(first, _model(width=8, routing="a"), _model(width=8, routing="b"), other)
    assert engine.submitted == [first, other]  # the proposals after a waiting duplicate are handled too
    recorder.submit_models(_model(width=8, routing="c"), _model(width=8, routing="d"))  # after a new network
    assert recorder.budget_available() and not recorder.exhausted  # 2 duplicates in a row, all still waiting
    recorder.submit_models(_model(width=8, routing="e"))
    assert not recorder.budget_available() and recorder.exhausted and not duplicates  # 3 in a row


def test_networks_of_an_earlier_run_count_and_patience_ends_the_search():
    recorder, engine, ended, duplicates, heard = _recorder(trained={"8": (3, "succeeded", 0.9)}, patience=3)
    for routing in ("a", "b"):
        recorder.submit_models(_model(width=8, routing=routing))
    assert recorder.budget_available() and not engine.submitted
    recorder.submit_models(_model(width=8, routing="c"))
    assert not recorder.budget_available() and recorder.exhausted  # 3 duplicates in a row
    assert [d.of_trial for d in duplicates] == [3, 3, 3]
    recorder, engine, *_ = _recorder(patience=2)
    for width in (8, 8, 16, 8):  # a new network resets the count
        model = _model(width=width, routing="x")
        recorder.submit_models(model)
        if model in engine.submitted:
            engine.finish(model, 0.1)
    assert recorder.budget_available()
