"""``mpn-nas search``: an NNI ``NasExperiment`` over a multi-path space under a complexity budget,
with artifacts written as trials finish, and ``--resume`` after an interruption."""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Optional

from mpn_nas.errors import UserError
from mpn_nas.limits import check_value

from search_spaces.budget import Budget, arch_cost, require_feasible
from search_spaces.config import DATASET_SHAPES, SpaceConfig, config_from_dict, load_config, sample_to_arch

from .artifacts import plot_pareto, read_trials_csv, write_json, write_trials_csv
from .middleware import TrialRecord, sample_key
from .pareto import row_sample, front_trials, write_front
from .registry import check_objective, check_strategy_name

SUMMARY_FORMAT = "mpn-nas/search"
SETTINGS_FILE = "search.json"  # written first: what --resume needs, even after a hard kill
ENGINES = ("sequential", "ts")


@dataclass
class SearchSettings:
    out: Path
    space: str = "resnet"
    space_config: Any = None  # path of a JSON file, or (when resuming) the saved dict of fields
    dataset: str = "digits"
    data_dir: Optional[str] = None
    strategy: str = "random"
    objective: str = "flops"  # what the pareto strategy and pareto.png trade accuracy against
    budget: Budget = field(default_factory=Budget)
    trials: int = 8
    epochs: int = 2
    engine: str = "sequential"
    concurrency: int = 1
    gpus: Optional[list[int]] = None
    port: int = 8080
    seed: int = 0
    batch_size: int = 64
    lr: float = 0.05
    device: str = "auto"
    force: bool = False
    quiet: bool = False
    resume: bool = False

    def to_dict(self) -> dict:
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("out", "force", "quiet", "resume")}
        doc["budget"] = self.budget.to_dict()
        return doc

    @classmethod
    def resumed(cls, out: Path, quiet: bool = False) -> "SearchSettings":
        """The settings an earlier search in ``out`` was started with."""
        path = Path(out) / SETTINGS_FILE
        if not path.is_file():
            raise UserError(f"{out} holds no search to resume ({SETTINGS_FILE} missing); start one with --out")
        try:
            doc = json.loads(path.read_text())["settings"]
            doc["budget"] = Budget(**doc["budget"])
            return cls(out=Path(out), quiet=quiet, resume=True, **doc)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"{path} is not an mpn-nas search file ({type(err).__name__}); cannot resume") from None


def dataset_shape(dataset: str, data_dir: Optional[str]) -> tuple[int, int, int]:
    """``(in_channels, input_size, num_classes)``; fails early on unknown names and missing files."""
    from mpn_nas.data import DataShape, check_dataset_name, make_data

    check_dataset_name(dataset)
    if dataset in ("digits", "digits-contexts"):  # bundled: nothing to check on disk
        return DATASET_SHAPES[dataset]
    shape = make_data(dataset, data_dir=data_dir, shape=DataShape(3, 32, 10)).shape
    return shape.in_channels, shape.input_size, shape.num_classes


def validate(settings: SearchSettings) -> None:
    check_strategy_name(settings.strategy)
    check_objective(settings.objective)
    if settings.engine not in ENGINES:
        raise UserError(f"unknown engine {settings.engine!r}; allowed: {', '.join(ENGINES)}")
    for name in ("trials", "epochs", "concurrency", "batch_size", "port", "lr", "seed"):
        check_value("--" + name.replace("_", "-"), getattr(settings, name))
    if settings.engine == "sequential" and (settings.concurrency > 1 or settings.gpus):
        raise UserError("--concurrency and --gpus need --engine ts (the sequential engine trains one trial at a time "
                        "in this process)")
    if settings.engine == "ts" and not port_is_free(settings.port):
        raise UserError(f"port {settings.port} is already in use; pass another --port for NNI's manager")


def port_is_free(port: int) -> bool:
    """Whether NNI's manager could listen on ``port`` (it binds every interface)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Node does: TIME_WAIT is no conflict
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


def check_output(settings: SearchSettings) -> None:
    """Refuse a directory holding a previous search unless ``--force`` or ``--resume``."""
    out = settings.out
    if not settings.resume and not settings.force and ((out / SETTINGS_FILE).exists() or (out / "summary.json").exists()):
        raise UserError(f"{out} already holds a search; pass --resume {out} to continue it, --force to overwrite "
                        "it, or choose another --out")


def create_output(settings: SearchSettings, config: SpaceConfig) -> None:
    out = settings.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not settings.resume:
            for stale in ("trials.csv", "summary.json", "best_arch.json", "pareto.png"):
                (out / stale).unlink(missing_ok=True)
            saved = settings.to_dict() | {"space_config": config.to_dict()}  # contents, not a path that may move
            write_json(out / SETTINGS_FILE, {"format": "mpn-nas/search-settings", "version": 1, "settings": saved})
    except OSError as err:
        raise UserError(f"output directory {out} is not writable ({err.strerror}); pass another --out") from None


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the search like Ctrl-C does (NNI manager stopped, artifacts kept)."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class SearchLog:
    """Writes ``trials.csv`` after every trial and prints progress (trial i of N, best so far)."""

    def __init__(self, settings: SearchSettings, config: SpaceConfig, previous_rows: list[dict]) -> None:
        self.settings, self.config = settings, config
        self.rows: list[dict] = list(previous_rows)
        self.labels = list(config.labels())

    def trial_ended(self, record: TrialRecord) -> None:
        from search_spaces.evaluation import FAILURE_REASONS

        arch = sample_to_arch(self.config, record.sample)
        cost = arch_cost(arch)
        reason = FAILURE_REASONS.pop(arch.to_json(), "") if record.status == "failed" else ""
        if record.status == "failed" and not reason:
            reason = f"{record.reason}; see the trial's log under {self.settings.out / 'nni'}"
        row = {"trial": record.index, "status": record.status, "params": cost.params, "flops": cost.flops,
               "val_accuracy": None if record.val_accuracy is None else round(record.val_accuracy, 6),
               "seconds": record.seconds, "reason": reason, **record.sample}
        self.rows.append(row)
        write_trials_csv(self.settings.out / "trials.csv", self.rows, self.labels, front=self.front())
        if not self.settings.quiet:
            best = self.best()
            shown = "failed: " + reason if record.status == "failed" else f"val_acc {record.val_accuracy:.4f}"
            best_text = f"best {best['val_accuracy']:.4f} (trial {best['trial']})" if best else "no success yet"
            print(f"[trial {record.index}/{self.settings.trials}] {shown}  params {cost.params:,}  "
                  f"flops {cost.flops:,}  {record.seconds:.1f}s | {best_text}", flush=True)

    def front(self) -> Optional[list[int]]:
        """Trial numbers on the Pareto front (marked in trials.csv) when searching for the front."""
        if self.settings.strategy != "pareto":
            return None
        return front_trials(self.rows, self.settings.objective)

    def best(self) -> Optional[dict]:
        done = [r for r in self.rows if r["status"] == "succeeded"]
        return max(done, key=lambda r: (r["val_accuracy"], -r["flops"])) if done else None

    def replay_table(self) -> dict[str, tuple[str, Optional[float]]]:
        """Finished samples of an earlier run, for :class:`~strategies.middleware.TrialRecorder`."""
        return {sample_key({k: row[k] for k in self.labels}): (row["status"], row["val_accuracy"]) for row in self.rows}


def load_previous_rows(out: Path, config: SpaceConfig) -> list[dict]:
    """Rows of ``trials.csv`` with numbers and choices converted back from text."""
    path = out / "trials.csv"
    if not path.is_file():
        return []
    return [{"trial": int(row["trial"]), "status": row["status"], "params": int(row["params"]),
             "flops": int(row["flops"]), "val_accuracy": float(row["val_accuracy"]) if row["val_accuracy"] else None,
             "seconds": float(row["seconds"]) if row["seconds"] else None, "reason": row["reason"],
             **row_sample(row, config)} for row in read_trials_csv(path)]


def experiment_config(settings: SearchSettings, trials: int):
    from nni.nas.experiment import NasExperimentConfig

    config = NasExperimentConfig(settings.engine, "simplified", "local")
    config.max_trial_number = trials
    config.experiment_working_directory = str((settings.out / "nni").resolve())
    if settings.engine == "sequential":
        config.execution_engine.continue_on_failure = True
    else:
        config.trial_concurrency = settings.concurrency
        config.trial_code_directory = str(Path.cwd())
        if settings.gpus:
            config.trial_gpu_number = 1
            config.training_service.gpu_indices = settings.gpus
            config.training_service.use_active_gpu = True
            config.training_service.max_trial_number_per_gpu = 1
        else:
            config.trial_gpu_number = 0
    return config


def trial_threads(settings: SearchSettings) -> Optional[int]:
    """CPU threads per trial process when several trials share this machine's cores."""
    if settings.engine != "ts" or settings.gpus:
        return None
    return max(1, (os.cpu_count() or 1) // settings.concurrency)


def space_config_of(settings: SearchSettings) -> SpaceConfig:
    if isinstance(settings.space_config, dict):  # resumed: the saved contents
        return config_from_dict(settings.space_config)
    in_channels, input_size, num_classes = dataset_shape(settings.dataset, settings.data_dir)
    return load_config(settings.space, settings.space_config, in_channels=in_channels, input_size=input_size,
                       num_classes=num_classes)


def run_search(settings: SearchSettings) -> dict:
    """Run (or resume) the search; returns the summary written to ``OUT/summary.json``."""
    from nni.nas.experiment import NasExperiment

    from search_spaces.evaluation import make_evaluator
    from search_spaces.spaces import make_space

    from .budgeted import with_budget
    from .middleware import TrialRecorder
    from .registry import make_strategy

    validate(settings)
    check_output(settings)
    config = space_config_of(settings)
    dataset_shape(settings.dataset, settings.data_dir)  # data present (also when resuming)
    smallest = require_feasible(config, settings.budget)
    create_output(settings, config)
    log = SearchLog(settings, config, load_previous_rows(settings.out, config) if settings.resume else [])
    remaining = settings.trials - len(log.rows)
    if remaining <= 0:
        return write_summary(settings, config, log, 0, 0.0, interrupted=False)
    space = make_space(settings.space, config=config.to_dict())
    recorder = TrialRecorder(on_end=log.trial_ended, replay=log.replay_table(),
                             first_index=max((r["trial"] for r in log.rows), default=0) + 1)
    strategy = with_budget(make_strategy(settings.strategy, settings.trials, settings.seed, config=config,
                                         budget=settings.budget, objective=settings.objective),
                           config, settings.budget, recorder)
    trial_device = settings.device if settings.engine == "ts" or settings.device != "auto" else "cpu"
    evaluator = make_evaluator(dataset=settings.dataset, data_dir=settings.data_dir, epochs=settings.epochs,
                               batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed, device=trial_device,
                               threads=trial_threads(settings))
    experiment = NasExperiment(space, evaluator, strategy, experiment_config(settings, remaining))
    if not settings.quiet:
        print(f"{'resuming' if log.rows else 'searching'} {settings.space} space ({config.size():,} samples, smallest "
              f"{smallest.params:,} params) on {settings.dataset} with {settings.strategy}: {remaining} of "
              f"{settings.trials} trials of {settings.epochs} epochs to go"
              + (f"; web UI on http://127.0.0.1:{settings.port}" if settings.engine == "ts" else ""), flush=True)
    started = time.time()
    interrupted = False
    with sigterm_as_interrupt():
        try:
            interrupted = experiment.run(port=settings.port) is None  # NNI stops itself on Ctrl-C and returns None
            if not interrupted and not recorder.wait_until_recorded(timeout=10):
                recorder.reconcile(experiment._engine.list_models())  # NNI keeps no public handle on its engine
        except KeyboardInterrupt:
            interrupted = True
        finally:
            _stop_quietly(experiment)
    summary = write_summary(settings, config, log, strategy.screened_out, time.time() - started, interrupted)
    if interrupted:
        raise KeyboardInterrupt
    return summary


def _stop_quietly(experiment) -> None:
    try:
        experiment.stop()
    except Exception:  # already stopped (NNI stops on Ctrl-C) or manager gone
        pass


def write_summary(settings: SearchSettings, config: SpaceConfig, log: SearchLog, screened_out: int,
                  seconds: float, interrupted: bool) -> dict:
    out = settings.out
    best = log.best()
    summary = {
        "format": SUMMARY_FORMAT, "version": 1, "settings": settings.to_dict() | {"space_config": config.to_dict()},
        "trials_requested": settings.trials,
        "trials_succeeded": sum(r["status"] == "succeeded" for r in log.rows),
        "trials_failed": sum(r["status"] == "failed" for r in log.rows),
        "screened_out": screened_out, "seconds": round(seconds, 1), "interrupted": interrupted, "best": None,
    }
    if best is not None:
        arch = sample_to_arch(config, {k: best[k] for k in log.labels})
        arch.to_json(out / "best_arch.json")
        summary["best"] = {k: best[k] for k in ("trial", "val_accuracy", "params", "flops")}
        summary["best"]["arch_file"] = "best_arch.json"
        front = log.front()
        if front is not None:
            summary["pareto_front"] = {"objective": settings.objective, "trials": front,
                                       "folder": "pareto"}
            write_front(out, log.rows, config, settings.objective)
        plot_pareto(out / "pareto.png", log.rows, objective=settings.objective, front=front)
    write_json(out / "summary.json", summary)
    if interrupted:
        print(f"interrupted: {len(log.rows)} finished trials kept in {out}; continue with "
              f"'mpn-nas search --resume {out}'", file=sys.stderr, flush=True)
    elif best is None:
        raise RuntimeError(f"all {len(log.rows)} trials failed; see the reason column of {out / 'trials.csv'}")
    elif not settings.quiet:
        print(f"best: trial {best['trial']} val_accuracy {best['val_accuracy']:.4f} params {best['params']:,} "
              f"flops {best['flops']:,}\nwrote {out / 'best_arch.json'}, trials.csv, summary.json, pareto.png",
              flush=True)
    return summary
