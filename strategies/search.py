"""``mpn-nas search``: an NNI ``NasExperiment`` over a multi-path space under a complexity budget,
with artifacts written as trials finish, and ``--resume`` after an interruption."""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Optional

from mpn_nas.data import dataset_shape
from mpn_nas.devices import check_gpu_request
from mpn_nas.errors import UserError
from mpn_nas.limits import check_value
from mpn_nas.recipe import TrainConfig, training_record, with_training_record

from search_spaces.budget import Budget, arch_cost, require_feasible
from search_spaces.config import SpaceConfig, config_from_dict, load_config, sample_to_arch

from .artifacts import plot_pareto, read_trials_csv, write_json, write_trials_csv
from .console import NNI_LOG_FILE, nni_log_routing, say, verbosity_of
from .middleware import DuplicateRecord, TrialRecord, sample_key
from .pareto import row_sample, front_trials, write_front
from .registry import ONE_SHOT, check_objective, check_strategy_name, strategy_kind
from .remote import check_training_service, use_remote_training_service

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
    # How every trial trains (epochs per trial; one-shot: supernet epochs); its seed also seeds the strategy.
    training: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=TRIAL_EPOCHS))
    engine: str = "sequential"
    concurrency: int = 1
    gpus: Optional[list[int]] = None
    training_service: str = "local"  # or "remote": trials over SSH on the machines of remote_hosts (strategies.remote)
    remote_hosts: Optional[str] = None
    port: int = 8080
    force: bool = False
    quiet: bool = False
    verbose: bool = False
    resume: bool = False
    # ts engine: trials fork from a process that has imported torch and Lightning (strategies.warm_trials)
    warm_trials: bool = True
    # The trials the strategy's population was sized for: kept when --resume extends --trials, so the
    # resumed strategy proposes what it proposed before and gets the recorded results back.
    strategy_trials: Optional[int] = None

    def to_dict(self) -> dict:
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RUN_ONLY_SETTINGS}
        doc["budget"] = self.budget.to_dict()
        doc["training"] = asdict(self.training)
        return doc

    @property
    def verbosity(self) -> str:
        return verbosity_of(self.quiet, self.verbose)

    @classmethod
    def resumed(cls, out: Path, quiet: bool = False, verbose: bool = False,
                trials: Optional[int] = None) -> "SearchSettings":
        """The settings an earlier search in ``out`` was started with; ``trials`` extends (or shortens) it."""
        path = Path(out) / SETTINGS_FILE
        if not path.is_file():
            raise UserError(f"{out} holds no search to resume ({SETTINGS_FILE} missing); start one with --out")
        try:
            doc = json.loads(path.read_text())["settings"]
            doc["budget"] = Budget(**doc["budget"])
            doc["training"] = TrainConfig(**doc.get("training", _flat_training(doc)))
            settings = cls(out=Path(out), quiet=quiet, verbose=verbose, resume=True, **doc)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"{path} is not an mpn-nas search file ({type(err).__name__}); cannot resume") from None
        if trials is not None and trials != settings.trials:
            settings.strategy_trials = settings.strategy_trials or settings.trials
            settings.trials = trials
        return settings


# Settings of one invocation, not of the search (never saved, never compared on --resume).
RUN_ONLY_SETTINGS = ("out", "force", "quiet", "verbose", "resume", "warm_trials")
TRIAL_EPOCHS = 2  # a search trains each trial briefly: its default --epochs


def _flat_training(doc: dict) -> dict:
    """The training settings of a search file written before they were nested under ``training``."""
    return {name: doc.pop(name) for name in ("epochs", "seed", "batch_size", "lr", "device") if name in doc}


def kept_settings_text(settings: SearchSettings) -> str:
    """The saved settings a resumed search keeps, as ``name value`` pairs for a one-line message."""
    doc = settings.to_dict()
    doc.update(doc.pop("training"))
    budget = ", ".join(f"{k} {v}" for k, v in doc.pop("budget").items() if v is not None) or "no budget"
    doc.pop("space_config", None)
    doc.pop("strategy_trials", None)
    return ", ".join(f"{k.replace('_', '-')} {v}" for k, v in doc.items() if v is not None) + f", {budget}"


def validate(settings: SearchSettings) -> None:
    check_strategy_name(settings.strategy)
    check_objective(settings.objective)
    if settings.engine not in ENGINES:
        raise UserError(f"unknown engine {settings.engine!r}; allowed: {', '.join(ENGINES)}")
    for name in ("trials", "concurrency", "port"):  # the training settings check themselves
        check_value("--" + name.replace("_", "-"), getattr(settings, name))
    if settings.engine == "sequential" and (settings.concurrency > 1 or settings.gpus):
        raise UserError("--concurrency and --gpus need --engine ts (the sequential engine trains one trial at a time "
                        "in this process)")
    check_training_service(settings.training_service, settings.remote_hosts, settings.engine)
    check_gpu_request(settings.training.device, settings.gpus)  # also for resumed settings, before NNI's manager starts
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
            for stale in ("trials.csv", "summary.json", "best_arch.json", "pareto.png", NNI_LOG_FILE):
                (out / stale).unlink(missing_ok=True)
        # Also on --resume: --trials may have extended the search.
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
        cost = arch_cost(sample_to_arch(self.config, record.sample))
        reason = record.reason
        if record.status == "failed" and reason.startswith("training ended"):  # the trial could not say why
            reason = f"{reason}; see the trial's log under {self.settings.out / 'nni'}"
        row = {"trial": record.index, "status": record.status, "params": cost.params, "flops": cost.flops,
               "val_accuracy": None if record.val_accuracy is None else round(record.val_accuracy, 6),
               "seconds": record.seconds, "reason": reason, **record.sample}
        self.rows.append(row)
        write_trials_csv(self.settings.out / "trials.csv", self.rows, self.labels, front=self.front())
        best = self.best()
        shown = "failed: " + reason if record.status == "failed" else f"val_acc {record.val_accuracy:.4f}"
        best_text = f"best {best['val_accuracy']:.4f} (trial {best['trial']})" if best else "no success yet"
        say(self.settings.verbosity, f"[trial {record.index}/{self.settings.trials}] {shown}  params {cost.params:,}  "
                                     f"flops {cost.flops:,}  {record.seconds:.1f}s | {best_text}")

    def duplicate_proposed(self, duplicate: DuplicateRecord) -> None:
        """A row for a proposal of a network already trained (not a trial: it has no trial number)."""
        cost = arch_cost(sample_to_arch(self.config, duplicate.sample))
        self.rows.append({"trial": None, "status": DUPLICATE, "params": cost.params, "flops": cost.flops,
                          "val_accuracy": None if duplicate.val_accuracy is None else round(duplicate.val_accuracy, 6),
                          "seconds": None,
                          "reason": f"duplicate of trial {duplicate.of_trial}", **duplicate.sample})
        write_trials_csv(self.settings.out / "trials.csv", self.rows, self.labels, front=self.front())

    @property
    def trials_done(self) -> int:
        """Trained trials (duplicates excluded)."""
        return sum(r["status"] != DUPLICATE for r in self.rows)

    @property
    def duplicates(self) -> int:
        return sum(r["status"] == DUPLICATE for r in self.rows)

    def trained_networks(self) -> dict[str, tuple[int, str, Optional[float]]]:
        """Networks trained by an earlier run, for the recorder's duplicate check."""
        return {network_key(self.config, {k: row[k] for k in self.labels}): (row["trial"], row["status"],
                                                                             row["val_accuracy"])
                for row in self.rows if row["status"] != DUPLICATE}

    def front(self) -> Optional[list[int]]:
        """Trial numbers on the Pareto front (marked in trials.csv) when searching for the front."""
        if not strategy_kind(self.settings.strategy).finds_front:
            return None
        return front_trials(self.rows, self.settings.objective)

    def best(self) -> Optional[dict]:
        done = [r for r in self.rows if r["status"] == "succeeded"]
        return max(done, key=lambda r: (r["val_accuracy"], -r["flops"])) if done else None

    def replay_table(self) -> dict[str, tuple[str, Optional[float]]]:
        """Finished samples of an earlier run, for :class:`~strategies.middleware.TrialRecorder`."""
        return {sample_key({k: row[k] for k in self.labels}): (_replayed_status(row), row["val_accuracy"])
                for row in self.rows}


def _replayed_status(row: dict) -> str:
    """A duplicate row replays the result of the network it duplicates."""
    if row["status"] != DUPLICATE:
        return row["status"]
    return "failed" if row["val_accuracy"] is None else "succeeded"


DUPLICATE = "duplicate"  # the status in trials.csv of a proposal of a network already trained


def network_key(config: SpaceConfig, sample: dict) -> str:
    """Equal for samples that build the same network (after the space's repair rules)."""
    return sample_to_arch(config, sample).to_json()


def load_previous_rows(out: Path, config: SpaceConfig) -> list[dict]:
    """Rows of ``trials.csv`` with numbers and choices converted back from text."""
    path = out / "trials.csv"
    if not path.is_file():
        return []
    return [{"trial": int(row["trial"]) if row["trial"] else None, "status": row["status"], "params": int(row["params"]),
             "flops": int(row["flops"]), "val_accuracy": float(row["val_accuracy"]) if row["val_accuracy"] else None,
             "seconds": float(row["seconds"]) if row["seconds"] else None, "reason": row["reason"],
             **row_sample(row, config)} for row in read_trials_csv(path)]


def experiment_config(settings: SearchSettings, trials: int, python: Optional[str] = None):
    from nni.nas.experiment import NasExperimentConfig

    config = NasExperimentConfig(settings.engine, "simplified", "local")
    config.max_trial_number = trials
    config.experiment_working_directory = str((settings.out / "nni").resolve())
    if settings.engine == "sequential":
        config.execution_engine.continue_on_failure = True
    else:
        config.trial_concurrency = settings.concurrency
        config.trial_code_directory = str(Path.cwd())
        if python:  # NNI's trial command is "{python} -m nni.nas.execution.training_service trial"
            config._trial_command_params = {"python": python}
        if settings.gpus:
            config.trial_gpu_number = 1
            config.training_service.gpu_indices = settings.gpus
            config.training_service.use_active_gpu = True
            config.training_service.max_trial_number_per_gpu = 1
        else:
            config.trial_gpu_number = 0
        if settings.training_service == "remote":
            use_remote_training_service(config, settings.remote_hosts)
    return config


def trial_training(settings: SearchSettings) -> TrainConfig:
    """How each trial trains: the search's recipe; ``auto`` trains sequential trials on the CPU (a
    search's trials are small; the ts engine's processes get ``--gpus``)."""
    if settings.engine == "sequential" and settings.training.device == "auto":
        return replace(settings.training, device="cpu")
    return settings.training


def warm_trials_for(settings: SearchSettings):
    """The zygote of warm trial processes, for trials NNI starts on this machine (ts engine, local
    training service; a remote worker starts its trials as NNI does)."""
    if settings.engine != "ts" or not settings.warm_trials or settings.training_service != "local":
        return None
    from .warm_trials import WarmTrials

    return WarmTrials(settings.out / "nni")


def trial_threads(settings: SearchSettings) -> Optional[int]:
    """CPU threads per trial process when several trials share this machine's cores."""
    if settings.engine != "ts" or settings.gpus or settings.training_service != "local":
        return None
    return max(1, (os.cpu_count() or 1) // settings.concurrency)


def space_config_of(settings: SearchSettings) -> SpaceConfig:
    if isinstance(settings.space_config, dict):  # resumed: the saved contents
        return config_from_dict(settings.space_config)
    shape = dataset_shape(settings.dataset, settings.data_dir)
    return load_config(settings.space, settings.space_config, in_channels=shape.in_channels,
                       input_size=shape.input_size, num_classes=shape.num_classes)


def run_search(settings: SearchSettings) -> dict:
    """Run (or resume) the search; returns the summary written to ``OUT/summary.json``."""
    validate(settings)
    if strategy_kind(settings.strategy).kind == ONE_SHOT:
        from .oneshot import run_oneshot_search

        return run_oneshot_search(settings)
    check_output(settings)
    config = space_config_of(settings)
    dataset_shape(settings.dataset, settings.data_dir)  # data present (also when resuming)
    smallest = require_feasible(config, settings.budget)
    create_output(settings, config)
    log = SearchLog(settings, config, load_previous_rows(settings.out, config) if settings.resume else [])
    remaining = settings.trials - log.trials_done
    if remaining <= 0:
        say("normal", f"{settings.out} already holds {log.trials_done} trials; pass --trials N (more than "
                      f"{log.trials_done}) with --resume to extend the search")
        return write_summary(settings, config, log, 0, 0.0, interrupted=False)
    with nni_log_routing(settings.out, settings.verbosity):  # from the first NNI object on
        return run_multi_trial(settings, config, log, smallest, remaining)


def run_multi_trial(settings: SearchSettings, config: SpaceConfig, log: SearchLog, smallest, remaining: int) -> dict:
    """A ``NasExperiment`` training ``remaining`` trials of the strategy under the budget."""
    from nni.nas.experiment import NasExperiment

    from search_spaces.spaces import make_space

    from .budgeted import with_budget
    from .evaluation import make_evaluator
    from .middleware import TrialRecorder
    from .registry import make_strategy

    space = make_space(settings.space, config=config.to_dict())
    recorder = TrialRecorder(on_end=log.trial_ended, replay=log.replay_table(),
                             first_index=max((r["trial"] for r in log.rows if r["trial"]), default=0) + 1,
                             network_key=partial(network_key, config), trained=log.trained_networks(),
                             on_duplicate=log.duplicate_proposed)
    strategy = with_budget(make_strategy(settings.strategy, settings.strategy_trials or settings.trials,
                                         settings.training.seed, config=config, budget=settings.budget,
                                         objective=settings.objective),
                           config, settings.budget, recorder)
    evaluator = make_evaluator(dataset=settings.dataset, data_dir=settings.data_dir,
                               recipe=asdict(trial_training(settings)), threads=trial_threads(settings))
    warm = warm_trials_for(settings)
    experiment = NasExperiment(space, evaluator, strategy,
                               experiment_config(settings, remaining, warm.python_command if warm else None))
    say(settings.verbosity,
        f"{'resuming' if log.rows else 'searching'} {settings.space} space ({config.size():,} samples, smallest "
        f"{smallest.params:,} params) on {settings.dataset} with {settings.strategy}: {remaining} of "
        f"{settings.trials} trials of {settings.training.epochs} epochs to go"
        + (f"; web UI on http://127.0.0.1:{settings.port}" if settings.engine == "ts" else "")
        + f"; NNI's log: {settings.out / NNI_LOG_FILE}")
    started = time.time()
    interrupted = False
    with sigterm_as_interrupt(), warm or nullcontext():
        try:
            interrupted = experiment.run(port=settings.port) is None  # NNI stops itself on Ctrl-C and returns None
            if not interrupted and not recorder.wait_until_recorded(timeout=10):
                recorder.reconcile(experiment._engine.list_models())  # NNI keeps no public handle on its engine
        except KeyboardInterrupt:
            interrupted = True
        finally:
            _stop_quietly(experiment)
    if not interrupted and log.trials_done < settings.trials:
        why = (f"proposed {recorder.patience} networks in a row that were already trained" if recorder.exhausted
               else "had no new samples left")
        print(f"stopped after {log.trials_done} of {settings.trials} trials: the strategy {why} ({log.duplicates} "
              "proposals were duplicates of trained networks); this space holds few distinct networks within the "
              "budget", flush=True)
    summary = write_summary(settings, config, log, strategy.screened_out, time.time() - started, interrupted,
                            exhausted=recorder.exhausted)
    if interrupted:
        raise KeyboardInterrupt
    return summary


def _stop_quietly(experiment) -> None:
    try:
        experiment.stop()
    except Exception:  # already stopped (NNI stops on Ctrl-C) or manager gone
        pass


def search_training_record(settings: SearchSettings, arch) -> dict:
    """The data set and recipe the search's trials trained ``arch`` with (the evaluator's settings),
    for ``retrain`` to follow."""
    return training_record(settings.dataset, settings.data_dir, settings.training, arch)


def write_summary(settings: SearchSettings, config: SpaceConfig, log: SearchLog, screened_out: int,
                  seconds: float, interrupted: bool, exhausted: bool = False) -> dict:
    out = settings.out
    best = log.best()
    summary = {
        "format": SUMMARY_FORMAT, "version": 1, "settings": settings.to_dict() | {"space_config": config.to_dict()},
        "trials_requested": settings.trials,
        "trials_succeeded": sum(r["status"] == "succeeded" for r in log.rows),
        "trials_failed": sum(r["status"] == "failed" for r in log.rows),
        "screened_out": screened_out, "duplicates": log.duplicates, "space_exhausted": exhausted,
        "seconds": round(seconds, 1), "interrupted": interrupted, "best": None,
    }
    if best is not None:
        arch = sample_to_arch(config, {k: best[k] for k in log.labels})
        with_training_record(arch, search_training_record(settings, arch)).to_json(out / "best_arch.json")
        summary["best"] = {k: best[k] for k in ("trial", "val_accuracy", "params", "flops")}
        summary["best"]["arch_file"] = "best_arch.json"
        front = log.front()
        if front is not None:
            summary["pareto_front"] = {"objective": settings.objective, "trials": front,
                                       "folder": "pareto"}
            write_front(out, log.rows, config, settings.objective,
                        annotate=lambda arch: with_training_record(arch, search_training_record(settings, arch)))
        plot_pareto(out / "pareto.png", log.rows, objective=settings.objective, front=front)
    write_json(out / "summary.json", summary)
    if interrupted:
        print(f"interrupted: {len(log.rows)} finished trials kept in {out}; continue with "
              f"'mpn-nas search --resume {out}'", file=sys.stderr, flush=True)
    elif best is None:
        raise RuntimeError(f"all {len(log.rows)} trials failed; see the reason column of {out / 'trials.csv'}")
    else:  # the final summary: printed even with --quiet
        print(f"best: trial {best['trial']} val_accuracy {best['val_accuracy']:.4f} params {best['params']:,} "
              f"flops {best['flops']:,} (trials trained {log.trials_done}, over-budget samples skipped {screened_out}, "
              f"duplicate networks not retrained {log.duplicates})\n"
              f"wrote {out / 'best_arch.json'}, trials.csv, summary.json, pareto.png, {NNI_LOG_FILE}", flush=True)
    return summary
