"""``mpn-nas search`` (and the nnictl trial command): thin wrappers over :mod:`strategies.search`."""
from __future__ import annotations

import argparse
from pathlib import Path


from mpn_nas.datasets import add_data_options
from mpn_nas.limits import flag_type, gpu_list
from mpn_nas.recipe import add_training_options, training_config

from .registry import STRATEGY_USAGE

# search and trial train each sample briefly; retrain's defaults are for the final network.
TRIAL_DEFAULTS = {"epochs": 2, "device": "auto"}
TRIAL_HELPS = {"epochs": "training epochs per trial (one-shot: supernet epochs)", "device": "trial device"}


def add_budget_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-params", type=flag_type("--max-params"), default=None, help="parameter budget")
    parser.add_argument("--max-flops", type=flag_type("--max-flops"), default=None, help="FLOPs budget (one sample)")
    parser.add_argument("--max-latency-ms", type=flag_type("--max-latency-ms"), default=None,
                        help="batch-1 CPU latency budget")


def budget_from(args: argparse.Namespace):
    from search_spaces.budget import Budget

    return Budget(args.max_params, args.max_flops, args.max_latency_ms)


def cmd_search(args: argparse.Namespace) -> int:
    from mpn_nas.errors import UserError

    from .search import SearchSettings, run_search

    if args.resume:
        check_resume_options(args)
        run_search(SearchSettings.resumed(Path(args.resume), quiet=args.quiet, verbose=args.verbose,
                                          trials=args.trials if "trials" in args.given else None))
        return 0
    if not args.out:
        raise UserError("pass --out DIR for a new search, or --resume DIR to continue one")
    settings = SearchSettings(
        out=Path(args.out), space=args.space, space_config=args.space_config, dataset=args.dataset,
        data_dir=args.data_dir, strategy=args.strategy, objective=args.objective, budget=budget_from(args),
        trials=args.trials, training=training_config(args), engine=args.engine, concurrency=args.concurrency,
        gpus=args.gpus, port=args.port, training_service=args.training_service, remote_hosts=args.remote_hosts,
        force=args.force, quiet=args.quiet, verbose=args.verbose, warm_trials=args.warm_trials)
    run_search(settings)
    return 0


# What may go with --resume DIR: the number of trials (to extend the search) and how much to print.
RESUME_OPTIONS = ("resume", "trials", "quiet", "verbose", "debug")


def check_resume_options(args: argparse.Namespace) -> None:
    """Refuse settings given with ``--resume``: the search keeps the ones it was started with."""
    from mpn_nas.errors import UserError

    from .search import SearchSettings, kept_settings_text

    refused = sorted(set(args.given) - set(RESUME_OPTIONS))
    if refused:
        kept = kept_settings_text(SearchSettings.resumed(Path(args.resume)))
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise UserError(f"--resume keeps the settings of the search in {args.resume} ({kept}); only --trials N "
                        f"(to extend it), --quiet and --verbose go with it: drop {flags}")


def record_given_options(parser: argparse.ArgumentParser) -> None:
    """After parsing, ``args.given`` names the options the command line gave (defaults filled in
    afterwards), so that ``--resume`` can refuse any setting given with it, even one equal to its default."""
    defaults = {}
    for action in parser._actions:  # argparse has no public way to tell a default from a given value
        if action.option_strings and action.dest not in ("help", "debug"):
            defaults[action.dest], action.default = action.default, argparse.SUPPRESS
    handler = parser.get_default("handler")

    def with_defaults(args: argparse.Namespace) -> int:
        args.given = [dest for dest in defaults if hasattr(args, dest)]
        for dest, value in defaults.items():
            if not hasattr(args, dest):
                setattr(args, dest, value)
        return handler(args)

    parser.set_defaults(handler=with_defaults)


def cmd_trial(args: argparse.Namespace) -> int:
    from .trial import run_trial

    run_trial(args.space, args.space_config, args.dataset, args.data_dir, training_config(args), budget_from(args))
    return 0


def register(commands) -> None:
    from search_spaces.cli import add_space_options

    search = commands.add_parser("search", help="search a multi-path space with an NNI strategy under a budget")
    add_space_options(search)
    add_data_options(search)
    search.add_argument("--strategy", default="random", help=STRATEGY_USAGE)
    search.add_argument("--objective", default="flops", help="flops | params: the cost the pareto strategy "
                        "trades accuracy against (and pareto.png's x axis)")
    add_budget_options(search)
    search.add_argument("--trials", type=flag_type("--trials"), default=8, help="trials to train (over-budget samples "
                        "do not count); one-shot: subnets evaluated with the supernet's weights")
    search.add_argument("--engine", default="sequential", help="sequential (in-process) | ts (NNI manager, web UI)")
    search.add_argument("--concurrency", type=flag_type("--concurrency"), default=1, help="trials at once (ts engine)")
    search.add_argument("--gpus", type=gpu_list, default=None, help="GPU indices for trials, e.g. 0,1 (ts engine)")
    search.add_argument("--port", type=flag_type("--port"), default=8080, help="NNI manager / web UI port (ts engine)")
    search.add_argument("--training-service", default="local", choices=("local", "remote"),
                        help="where the ts engine runs trials: this machine, or over SSH on --remote-hosts")
    search.add_argument("--remote-hosts", metavar="HOSTS.yml", default=None,
                        help="worker machines as NNI's machineList (host, user, sshKeyFile, pythonPath), optionally "
                             "under machineList: with nniManagerIp")
    search.add_argument("--cold-trials", dest="warm_trials", action="store_false",
                        help="ts engine: start every trial as a fresh Python (default: fork trials from a process "
                             "that has imported torch and Lightning once)")
    add_training_options(search, TRIAL_DEFAULTS, TRIAL_HELPS)
    search.add_argument("--out", help="directory for best_arch.json, trials.csv, summary.json, ...")
    search.add_argument("--resume", metavar="DIR", help="continue an interrupted search in DIR, or extend a finished "
                        "one with --trials N (its other settings are kept)")
    search.add_argument("--force", action="store_true", help="overwrite a previous search in --out")
    output = search.add_mutually_exclusive_group()
    output.add_argument("--quiet", action="store_true", help="print only errors and the final summary")
    output.add_argument("--verbose", action="store_true", help="also show NNI's log (always in OUT/nni.log)")
    search.set_defaults(handler=cmd_search)
    record_given_options(search)

    trial = commands.add_parser("trial", help="trial command for nnictl experiments (reads NNI's parameters)")
    add_space_options(trial)
    add_data_options(trial)
    add_budget_options(trial)
    add_training_options(trial, TRIAL_DEFAULTS, TRIAL_HELPS)
    trial.set_defaults(handler=cmd_trial)
