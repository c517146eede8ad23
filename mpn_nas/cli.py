"""The ``mpn-nas`` command line: thin subcommands over the library.

Bad input exits with status 2 and one line on stderr; a runtime failure exits with 1; ``--debug``
shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

from .distributed import add_distributed_options, config_fields, launch_rank
from .errors import EXIT_BAD_INPUT, UserError
from .limits import flag_type, max_memory_set, memory_flag

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


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that trains."""
    parser.add_argument("--dataset", default="digits", help="digits | digits-contexts | cifar10 | cifar100 | imagefolder:PATH | fake")
    parser.add_argument("--data-dir", default=None, help="where cifar files are (default ./data)")
    parser.add_argument("--download", action="store_true", help="download cifar files when absent")
    parser.add_argument("--epochs", type=flag_type("--epochs"), default=10)
    parser.add_argument("--batch-size", type=flag_type("--batch-size"), default=64)
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"))
    parser.add_argument("--lr", type=flag_type("--lr"), default=0.05)
    parser.add_argument("--weight-decay", type=flag_type("--weight-decay"), default=5e-4,
                        help="L2 factor of the non-router weights (default 5e-4)")
    parser.add_argument("--router-lr-scale", type=flag_type("--router-lr-scale"), default=10.0,
                        help="routers' learning rate as a multiple of --lr (default 10; routers get no weight decay)")
    parser.add_argument("--seed", type=flag_type("--seed"), default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def train_config(args: argparse.Namespace):
    from .training import TrainConfig

    return TrainConfig(epochs=args.epochs, optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                       router_lr_scale=args.router_lr_scale, batch_size=args.batch_size, seed=args.seed,
                       device=args.device, **getattr(args, "recorded_recipe", {}), **config_fields(args))


# Options retrain takes from the architecture's training record (``best_arch.json`` of a search) when
# the command line leaves them out; the record's other recipe fields (no options) are used as they are.
RECORDED_OPTIONS = ("dataset", "data_dir", "optimizer", "lr", "weight_decay", "router_lr_scale", "batch_size", "seed")


def apply_training_record(args: argparse.Namespace, arch) -> str:
    """Fill the options the command line left out from ``arch``'s training record, else their
    defaults; returns one line saying what training uses and where it came from."""
    from .recipe import recorded_training

    record = recorded_training(arch, args.arch) or {}
    recipe = dict(record.get("recipe", {}))
    recorded = {"dataset": record.get("dataset"), "data_dir": record.get("data_dir"), **recipe}
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
    args.recorded_recipe = {k: v for k, v in recipe.items() if k not in RECORDED_OPTIONS}
    used = (f"training {args.epochs} epochs on {args.dataset} with {args.optimizer}, lr {args.lr}, weight-decay "
            f"{args.weight_decay}, router-lr-scale "
            f"{args.router_lr_scale}, batch-size {args.batch_size}, seed {args.seed}")
    if not record:
        return f"{used} ({Path(args.arch).name} records no training: command line and defaults)"
    origin = ", ".join(name.replace("_", "-") for name in [*taken, *args.recorded_recipe]) or "nothing"
    return f"{used}; from the search's record in {Path(args.arch).name}: {origin} (options given here override it)"


def make_data_for(arch, args: argparse.Namespace):
    """The data module ``args.dataset`` names, shaped for ``arch`` where the data set allows."""
    from .data import DataShape, make_data
    from .training import loader_settings

    return make_data(args.dataset, data_dir=args.data_dir, download=args.download, seed=args.seed,
                     batch_size=args.batch_size, shape=DataShape(arch.in_channels, arch.input_size, arch.num_classes),
                     **loader_settings(args.device))


def cmd_retrain(args: argparse.Namespace) -> int:
    from . import Arch
    from .checkpoint import save_model
    from .complexity import count_params_and_flops
    from .data import check_dataset_name
    from .files import atomic_write_text
    from .history import EpochHistory
    from .run_logs import EpochLogs
    from .limits import check_training
    from .training import check_resumable, train

    arch = Arch.from_json(args.arch)
    used = apply_training_record(args, arch)
    check_dataset_name(args.dataset)
    config = train_config(args)
    check_training(arch, config.batch_size)  # before data is loaded or anything written
    out = Path(args.out)
    last_checkpoint = out / "checkpoints" / "last.ckpt"
    writer = launch_rank(config) == 0  # the other processes of a distributed run train and write nothing
    if args.resume:
        check_resumable(last_checkpoint, arch)
    elif writer and (last_checkpoint.exists() or (out / "model.pt").exists()) and not args.force:
        raise UserError(f"{out} already holds a retrain; pass --resume to continue it, --force to start again, "
                        "or choose another --out")
    data = make_data_for(arch, args)
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


# Modules whose ``register(commands)`` adds subcommands. They must not import nni at import time:
# handlers import what they need, so ``retrain`` keeps working where nni is absent.
COMMAND_MODULES: tuple[str, ...] = ("search_spaces.cli", "mpn_nas.analysis_cli", "strategies.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mpn-nas", description="Multi-path networks with data-dependent routing, searchable with NNI.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _register_core(commands)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
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
    add_train_options(retrain)
    # Left out on the command line, these come from the architecture's training record, else these defaults.
    retrain.set_defaults(recorded_defaults={name: retrain.get_default(name) for name in RECORDED_OPTIONS},
                         **{name: None for name in RECORDED_OPTIONS})
    retrain.add_argument("--out", required=True, help="output directory for model.pt and metrics.json")
    retrain.add_argument("--export", choices=("onnx", "pt2"), default=None,
                         help="also write model.onnx or model.pt2 (torch.export), runnable without mpn_nas")
    retrain.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    retrain.add_argument("--force", action="store_true", help="start again, overwriting a previous retrain in OUT")
    retrain.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    add_distributed_options(retrain)
    retrain.set_defaults(handler=cmd_retrain)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if not debug:  # library warnings (NNI's among them) are not for the command line's users
        warnings.filterwarnings("ignore")
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
