"""The ``mpn-nas`` command line: thin subcommands over the library.

Bad input exits with status 2 and one line on stderr; a runtime failure exits with 1; ``--debug``
shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from .datasets import add_data_options, check_dataset_name
from .distributed import launch_rank
from .errors import EXIT_BAD_INPUT, UserError
from .limits import max_memory_set, memory_flag
from .recipe import RECIPE_FIELDS, add_training_options, training_config

EXIT_FAILURE = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage too; keep to one line
        raise UserError(f"{message} (see '{self.prog} --help')")


def cmd_profile(args: argparse.Namespace) -> int:
    from . import Arch, profile

    arch = Arch.from_json(args.arch)
    result = profile(arch, device=args.device)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"params      {result.params:,}\nflops       {result.flops:,}\nlatency_ms  {result.latency_ms:.3f}")
    return 0


# Options retrain takes from the architecture's training record (``best_arch.json`` of a search) when
# the command line leaves them out: the data set and the recipe.
RECORDED_OPTIONS = ("dataset", "data_dir", *RECIPE_FIELDS)


def apply_training_record(args: argparse.Namespace, arch) -> str:
    """Fill the options the command line left out from ``arch``'s training record, else their
    defaults; returns one line saying what training uses and where it came from."""
    from .recipe import recorded_training

    record = recorded_training(arch, args.arch) or {}
    recorded = {"dataset": record.get("dataset"), "data_dir": record.get("data_dir"), **record.get("recipe", {})}
    taken = []
    for name, default in args.recorded_defaults.items():
        if getattr(args, name) is not None:
            continue
        value = recorded.get(name)
        if name == "data_dir" and "dataset" not in taken:  # a data directory only goes with its data set
            value = None
        setattr(args, name, default if value is None else value)
        if value is not None:
            taken.append(name)
    used = f"training {args.epochs} epochs on {args.dataset} with {args.optimizer}, " + ", ".join(
        f"{name.replace('_', '-')} {getattr(args, name)}" for name in RECIPE_FIELDS if name != "optimizer")
    if not record:
        return f"{used} ({Path(args.arch).name} records no training: command line and defaults)"
    origin = ", ".join(name.replace("_", "-") for name in taken) or "nothing"
    return f"{used}; from the search's record in {Path(args.arch).name}: {origin} (options given here override it)"


def cmd_retrain(args: argparse.Namespace) -> int:
    from . import Arch
    from .checkpoint import save_model
    from .complexity import count_params_and_flops
    from .files import atomic_write_text
    from .history import EpochHistory
    from .run_logs import EpochLogs
    from .limits import check_training
    from .training import check_data_matches, check_resumable, shape_of, train, training_data

    arch = Arch.from_json(args.arch)
    used = apply_training_record(args, arch)
    check_dataset_name(args.dataset)
    config = training_config(args)
    check_training(arch, config.batch_size)  # before data is loaded or anything written
    out = Path(args.out)
    last_checkpoint = out / "checkpoints" / "last.ckpt"
    writer = launch_rank(config) == 0  # the other processes of a distributed run train and write nothing
    if args.resume:
        check_resumable(last_checkpoint, arch)
    elif writer and (last_checkpoint.exists() or (out / "model.pt").exists()) and not args.force:
        raise UserError(f"{out} already holds a retrain; pass --resume to continue it, --force to start again, "
                        "or choose another --out")
    data = training_data(args.dataset, shape_of(arch), config, args.data_dir, args.download)
    check_data_matches(arch, data)  # before --out is created
    if writer:
        _ensure_writable(out)
    if writer and args.force and not args.resume:
        for stale in ("checkpoints", "logs"):
            shutil.rmtree(out / stale, ignore_errors=True)
    params, flops = count_params_and_flops(arch)
    print(used, flush=True)
    started = time.perf_counter()
    # Lightning's progress bar on a terminal; redirected, one line per epoch (the bar would flood the log).
    progress = not args.quiet and sys.stdout.isatty()
    history = EpochHistory(out / "metrics.csv", echo=not args.quiet and not progress)
    model, metrics = train(arch, data, config, out_dir=out, progress=progress,
                           callbacks=[history, EpochLogs(out / "logs")],
                           resume_from=last_checkpoint if args.resume else None)
    if not writer:
        return 0
    metrics.update(params=params, flops=flops, dataset=args.dataset, seconds=round(time.perf_counter() - started, 2))
    save_model(out / "model.pt", arch, model)
    arch.to_json(out / "arch.json")
    written = [out / "model.pt"]
    if args.export:
        from .export import export_model

        exported = export_model(model, arch, args.export, out / f"model.{args.export}")
        metrics["exported"] = exported.name
        written.append(exported)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    written += [out / "metrics.json", out / "metrics.csv"]
    print(f"test_accuracy {metrics['test_accuracy']:.4f}  val_accuracy {metrics['val_accuracy']:.4f}  "
          f"params {params:,}  flops {flops:,}\nwrote {', '.join(map(str, written))}")
    return 0


def _ensure_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".mpn-nas-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(f"output directory {out} is not writable ({err.strerror}); pass another --out") from None


# Packages add subcommands through this entry-point group (declared in their setup.py), e.g.
#   entry_points={"mpn_nas.commands": ["name = your_package.cli:register"]}
# ``register(commands)`` adds parsers to ``commands``; it must not import nni at import time (handlers
# import what they need), so that ``retrain`` and ``profile`` start without it.
COMMANDS_GROUP = "mpn_nas.commands"


def register_commands(commands) -> None:
    """This package's subcommands, then those of every installed package's ``mpn_nas.commands`` entry point."""
    from importlib.metadata import entry_points

    from .analysis_cli import register as register_analysis

    _register_core(commands)
    register_analysis(commands)
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda entry: entry.name):
        entry.load()(commands)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mpn-nas", description="Multi-path networks with data-dependent routing, searchable with NNI.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    register_commands(commands)
    for command in commands.choices.values():  # also after the subcommand; SUPPRESS keeps the top level's value
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    for command in (parser, *commands.choices.values()):  # accepted before or after the subcommand
        command.add_argument("--max-memory", type=memory_flag, default=argparse.SUPPRESS, metavar="SIZE",
                             help="memory one network may need, e.g. 8G (default: half of this machine's); "
                                  "larger documents are refused before anything is built")
        for action in command._actions:  # every range-checked flag shows its range from the limits table
            if hasattr(action.type, "limit"):
                action.help = f"{action.help or ''} (allowed: {action.type.limit.describe()})".strip()
    return parser


def _register_core(commands) -> None:
    profile = commands.add_parser("profile", help="parameters, FLOPs and latency of an architecture")
    profile.add_argument("arch", help="architecture JSON file")
    profile.add_argument("--json", action="store_true", help='print {"params", "flops", "latency_ms"} as JSON')
    profile.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    profile.set_defaults(handler=cmd_profile)

    retrain = commands.add_parser("retrain", help="train an architecture standalone (no nni needed)",
                                  description="Train an architecture standalone. The data set and training recipe "
                                  "recorded in the file by 'mpn-nas search' (best_arch.json) are used unless "
                                  "given here.")
    retrain.add_argument("arch", help="architecture JSON file (e.g. DIR/best_arch.json)")
    add_data_options(retrain, download=True)
    add_training_options(retrain, distributed=True)
    # Left out on the command line, these come from the architecture's training record, else these defaults.
    retrain.set_defaults(recorded_defaults={name: retrain.get_default(name) for name in RECORDED_OPTIONS},
                         **{name: None for name in RECORDED_OPTIONS})
    retrain.add_argument("--out", required=True, help="output directory for model.pt and metrics.json")
    retrain.add_argument("--export", choices=("onnx", "pt2"), default=None,
                         help="also write model.onnx or model.pt2 (torch.export), runnable without mpn_nas")
    retrain.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    retrain.add_argument("--force", action="store_true", help="start again, overwriting a previous retrain in OUT")
    retrain.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    retrain.set_defaults(handler=cmd_retrain)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .process import configure_process

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    configure_process(show_warnings=debug)
    try:
        args = build_parser().parse_args(argv)
        from .devices import check_gpu_request  # before any work: a missing GPU is one line, for every command

        check_gpu_request(getattr(args, "device", None), getattr(args, "gpus", None))
        handler: Callable[[argparse.Namespace], int] = args.handler
        with max_memory_set(getattr(args, "max_memory", None)):
            return handler(args)
    except UserError as err:
        if debug:
            raise
        print(f"mpn-nas: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("mpn-nas: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one line unless --debug: users of a CLI should not need a traceback
        if debug:
            raise
        print(f"mpn-nas: failed: {type(err).__name__}: {err}".splitlines()[0], file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
