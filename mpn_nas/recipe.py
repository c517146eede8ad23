"""How an architecture was trained, kept in its document (``extra["trained_with"]``) so that
``mpn-nas retrain DIR/best_arch.json`` trains on the search's data set with the search's recipe.

The record (written by ``mpn-nas search`` into ``best_arch.json``)::

    {"dataset": "digits-contexts", "data_dir": null,
     "shape": {"in_channels": 1, "input_size": 8, "num_classes": 10},
     "recipe": {"optimizer": "sgd", "lr": 0.05, "weight_decay": 0.0005, "router_lr_scale": 10.0,
                "label_smoothing": 0.1, "batch_size": 64, "seed": 0},
     "epochs": 2}

``epochs`` is what each search trial trained for; ``retrain`` takes its own ``--epochs``.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping, Optional

from .arch import Arch
from .errors import UserError

RECORD_KEY = "trained_with"
# TrainConfig fields that make up a recipe (epochs and device are the run's, not the recipe's).
RECIPE_FIELDS = ("optimizer", "lr", "weight_decay", "router_lr_scale", "label_smoothing", "batch_size", "seed")


def training_record(dataset: str, data_dir: Optional[str], config: Any, arch: Arch) -> dict:
    """The record of training ``arch`` on ``dataset`` with ``config`` (a :class:`~mpn_nas.training.TrainConfig`)."""
    settings = asdict(config)
    return {"dataset": dataset, "data_dir": data_dir,
            "shape": {"in_channels": arch.in_channels, "input_size": arch.input_size, "num_classes": arch.num_classes},
            "recipe": {name: settings[name] for name in RECIPE_FIELDS}, "epochs": settings["epochs"]}


def with_training_record(arch: Arch, record: dict) -> Arch:
    """``arch`` with ``record`` in its document's ``extra``."""
    from dataclasses import replace

    return replace(arch, extra={**arch.extra, RECORD_KEY: record})


def recorded_training(arch: Arch, source: str) -> Optional[dict]:
    """The record in ``arch`` (``None`` when it has none), checked: its shape must be the architecture's."""
    record = arch.extra.get(RECORD_KEY)
    if record is None:
        return None
    if not isinstance(record, Mapping) or not isinstance(record.get("recipe", {}), Mapping):
        raise UserError(f"{source}: extra.{RECORD_KEY} must be an object with dataset, shape and recipe")
    shape = record.get("shape") or {}
    expected = {"in_channels": arch.in_channels, "input_size": arch.input_size, "num_classes": arch.num_classes}
    if shape and dict(shape) != expected:
        raise UserError(f"{source}: extra.{RECORD_KEY}.shape {dict(shape)} does not match the architecture "
                        f"{expected}; fix or remove the record")
    unknown = sorted(set(record.get("recipe", {})) - set(RECIPE_FIELDS))
    if unknown:
        raise UserError(f"{source}: unknown recipe field {unknown[0]!r} in extra.{RECORD_KEY}.recipe; allowed: "
                        f"{', '.join(RECIPE_FIELDS)}")
    return dict(record)
