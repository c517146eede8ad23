"""``mpn-nas`` subcommands that need the search spaces (nni is imported only when they run)."""
from __future__ import annotations

import argparse
import json

from mpn_nas.datasets import fixed_shapes

from .config import FAMILIES


def add_space_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", default="resnet", choices=FAMILIES, help="the model space (default resnet)")
    parser.add_argument("--space-config", default=None, help="JSON file of candidate lists to change")


def space_config_for(args: argparse.Namespace, in_channels: int, input_size: int, num_classes: int):
    from .config import load_config

    return load_config(args.space, args.space_config, in_channels=in_channels, input_size=input_size,
                       num_classes=num_classes)


def cmd_export_space(args: argparse.Namespace) -> int:
    from .budget import complexity_range
    from .hpo import write_search_space

    shape = fixed_shapes()[args.shape]
    config = space_config_for(args, shape.in_channels, shape.input_size, shape.num_classes)
    write_search_space(config, args.output)
    extremes = complexity_range(config)
    print(f"wrote {args.output}: {len(config.labels())} choices, {config.size():,} samples; "
          f"params {extremes['smallest'].params:,}..{extremes['largest'].params:,}, "
          f"flops {extremes['smallest'].flops:,}..{extremes['largest'].flops:,}")
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
    return 0


def register(commands) -> None:
    export = commands.add_parser("export-space", help="write the NNI (nnictl) search space of a model space")
    add_space_options(export)
    export.add_argument("--shape", default="digits", choices=sorted(fixed_shapes()),
                        help="input shape and classes the space is built for (default digits)")
    export.add_argument("-o", "--output", required=True, help="search_space.json to write")
    export.add_argument("--print-config", action="store_true", help="also print the effective space config")
    export.set_defaults(handler=cmd_export_space)
