"""``mpn-nas show-routing``: what the routers of a trained network do, as heatmaps and scores."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from .errors import UserError
from .limits import flag_type

SPLITS = ("test", "val", "train")


def _seed_of(model_path: Path, seed: Optional[int]) -> int:
    """The data seed: as given, else the one ``retrain`` recorded beside the model (its split and,
    on ``digits-contexts``, its contexts), else 0."""
    if seed is not None:
        return seed
    metrics = model_path.parent / "metrics.json"
    try:
        return int(json.loads(metrics.read_text()).get("seed", 0))
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


def cmd_show_routing(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .data import check_dataset_name, make_data, sample_contexts
    from .files import atomic_write_text
    from .routing_analysis import analyse_routing, plot_routing, routing_points
    from .training import check_data_matches, shape_of

    image_path = Path(args.output)
    if image_path.suffix.lower() != ".png":
        raise UserError(f"-o {image_path} must name a .png file")
    json_path = Path(args.json) if args.json else image_path.with_suffix(".json")
    check_dataset_name(args.dataset)
    model_path = Path(args.model)
    arch, model = load_model(model_path)
    if not any(True for _ in routing_points(model)):
        raise UserError(f"{model_path} has no multi-path layers to analyse")
    seed = _seed_of(model_path, args.seed)
    data = make_data(args.dataset, data_dir=args.data_dir, seed=seed, batch_size=args.batch_size,
                     shape=shape_of(arch))
    check_data_matches(arch, data)
    dataset = {"test": data.test_set, "val": data.val_set, "train": data.train_set}[args.split]
    report = analyse_routing(model, dataset, arch.num_classes, contexts=sample_contexts(dataset),
                             batch_size=args.batch_size)
    for path in (image_path, json_path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot write {path} ({err.strerror}); pass another path") from None
    plot_routing(report, image_path)
    doc = {"model": str(model_path), "dataset": args.dataset, "split": args.split, "seed": seed, **report.to_dict()}
    atomic_write_text(json_path, json.dumps(doc, indent=1) + "\n")
    print(f"{'layer':<28} {'routing':<18} {'paths':<7} {'class MI bits':>13} {'context MI bits':>15}")
    for layer in report.layers:
        context = "" if layer.context_score is None else f"{layer.context_score:.3g}"
        paths = f"{layer.by_class.shape[1]}->{layer.by_class.shape[2]}"
        print(f"{layer.name:<28} {layer.routing:<18} {paths:<7} {layer.class_score:>13.3g} {context:>15}")
    print(f"{report.samples} {args.split} samples of {args.dataset} (seed {seed}); wrote {image_path} and {json_path}")
    return 0


def register(commands) -> None:
    """Add ``show-routing`` to the ``mpn-nas`` subcommands."""
    show = commands.add_parser("show-routing", help="heatmaps of the routing per class/context and "
                                                    "path-specialisation scores of a trained model")
    show.add_argument("model", help="model.pt written by 'mpn-nas retrain'")
    show.add_argument("--dataset", default="digits", help="digits | digits-contexts | cifar10 | cifar100 | "
                                                          "imagefolder:PATH | fake")
    show.add_argument("--data-dir", default=None, help="where cifar files are (default ./data)")
    show.add_argument("--split", default="test", choices=SPLITS)
    show.add_argument("--seed", type=flag_type("--seed"), default=None,
                      help="data seed (split, contexts); default: the one in metrics.json beside the model, else 0")
    show.add_argument("--batch-size", type=flag_type("--batch-size"), default=256)
    show.add_argument("-o", "--output", default="routing.png", help="heatmap PNG (default routing.png)")
    show.add_argument("--json", default=None, help="scores and mean matrices (default: the PNG path with .json)")
    show.set_defaults(handler=cmd_show_routing)
