"""The training recipe: one table of training settings (:class:`TrainConfig`) that ``retrain``,
``search``, ``trial`` and the benchmarks share, the command-line options generated from it, and the
record of how an architecture was trained (``extra["trained_with"]`` of its document), so that
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

import argparse
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Optional

from .arch import Arch
from .distributed import BATCH_RULE, STRATEGIES
from .distributed import check_config as check_distributed
from .errors import UserError
from .limits import check_value, flag_type

RECORD_KEY = "trained_with"
OPTIMIZERS = ("sgd", "adamw")
DEVICES = ("auto", "cpu", "cuda")


def setting(default: Any, help: str, *, choices: Optional[tuple] = None, recipe: bool = True,
            distributed: bool = False) -> Any:
    """A field of :class:`TrainConfig` and the ``--flag`` that sets it. ``recipe`` fields travel with
    an architecture's training record; the others (epochs, device) belong to one run. ``distributed``
    fields (:mod:`mpn_nas.distributed`) are options of ``retrain`` only: trials train on one device."""
    return field(default=default, metadata={"help": help, "choices": choices, "recipe": recipe,
                                            "distributed": distributed})


@dataclass
class TrainConfig:
    """How a network is trained. Every command that trains reads these settings, and their
    command-line options are generated from this table (:func:`add_training_options`)."""

    epochs: int = setting(10, "training epochs", recipe=False)
    optimizer: str = setting("sgd", "sgd (Nesterov momentum 0.9) or adamw", choices=OPTIMIZERS)
    lr: float = setting(0.05, "learning rate, annealed to 0 by a cosine schedule")
    weight_decay: float = setting(5e-4, "L2 factor of the non-router weights")
    router_lr_scale: float = setting(10.0, "routers' learning rate as a multiple of --lr (routers get no weight "
                                           "decay)")
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy loss")
    batch_size: int = setting(64, "examples per step")
    seed: int = setting(0, "seed of the data split, the initial weights and the data order")
    device: str = setting("auto", "auto (the GPU when one is visible), cpu or cuda", choices=DEVICES, recipe=False)
    devices: int = setting(1, "processes per machine: GPUs with --device cuda, else CPU processes (gloo)",
                           recipe=False, distributed=True)
    distributed: str = setting("auto", "Lightning strategy when devices x num-nodes > 1 (auto: ddp; fsdp: CUDA only)",
                               choices=tuple(STRATEGIES), recipe=False, distributed=True)
    num_nodes: int = setting(1, "machines; each runs the same command with MASTER_ADDR, MASTER_PORT and NODE_RANK "
                                "set", recipe=False, distributed=True)
    sync_batchnorm: bool = setting(False, "batch norm statistics over the global batch (CUDA only)", recipe=False,
                                   distributed=True)

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.metadata["choices"]:
                if value not in spec.metadata["choices"]:
                    raise UserError(f"unknown {spec.name} {value!r}; allowed: {', '.join(spec.metadata['choices'])}")
            elif not isinstance(spec.default, bool):
                check_value(flag_of(spec.name), value)
        from .devices import check_gpu_request, visible_gpu_count

        if self.device == "cuda":
            check_gpu_request("cuda", None)
        resolved = self.device if self.device != "auto" else ("cuda" if visible_gpu_count() else "cpu")
        check_distributed(self, resolved)

    def recipe(self) -> dict:
        """The settings that travel with an architecture's training record."""
        return {name: getattr(self, name) for name in RECIPE_FIELDS}


RECIPE_FIELDS = tuple(spec.name for spec in fields(TrainConfig) if spec.metadata["recipe"])
SETTINGS = tuple(spec.name for spec in fields(TrainConfig))


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_training_options(parser: argparse.ArgumentParser, defaults: Optional[Mapping[str, Any]] = None,
                         helps: Optional[Mapping[str, str]] = None, distributed: bool = False) -> None:
    """One ``--flag`` per :class:`TrainConfig` field, range-checked from :mod:`mpn_nas.limits`;
    ``defaults`` and ``helps`` change a command's default or help text (``search``'s ``--epochs`` is per
    trial); ``distributed`` adds the distributed fields, in a group that states the batch rule."""
    defaults, helps = dict(defaults or {}), dict(helps or {})
    group = parser.add_argument_group("distributed training", BATCH_RULE) if distributed else None
    for spec in fields(TrainConfig):
        if spec.metadata["distributed"] and not distributed:
            continue
        target = group if spec.metadata["distributed"] else parser
        flag = flag_of(spec.name)
        default = defaults.get(spec.name, spec.default)
        text = f"{helps.get(spec.name, spec.metadata['help'])} (default {default})"
        if isinstance(spec.default, bool):
            target.add_argument(flag, action="store_true", default=default, help=text)
        elif spec.metadata["choices"]:
            target.add_argument(flag, default=default, choices=spec.metadata["choices"], help=text)
        else:
            target.add_argument(flag, type=flag_type(flag), default=default, help=text)


def training_config(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    """The :class:`TrainConfig` that parsed options (of :func:`add_training_options`) ask for."""
    return TrainConfig(**{name: getattr(args, name) for name in SETTINGS if getattr(args, name, None) is not None},
                       **overrides)


def training_record(dataset: str, data_dir: Optional[str], config: TrainConfig, arch: Arch) -> dict:
    """The record of training ``arch`` on ``dataset`` with ``config``."""
    return {"dataset": dataset, "data_dir": data_dir, "shape": _shape_record(arch), "recipe": config.recipe(),
            "epochs": config.epochs}


def _shape_record(arch: Arch) -> dict:
    return {"in_channels": arch.in_channels, "input_size": arch.input_size, "num_classes": arch.num_classes}


def with_training_record(arch: Arch, record: dict) -> Arch:
    """``arch`` with ``record`` in its document's ``extra``."""
    return replace(arch, extra={**arch.extra, RECORD_KEY: record})


def recorded_training(arch: Arch, source: str) -> Optional[dict]:
    """The record in ``arch`` (``None`` when it has none), checked: its shape must be the architecture's."""
    record = arch.extra.get(RECORD_KEY)
    if record is None:
        return None
    if not isinstance(record, Mapping) or not isinstance(record.get("recipe", {}), Mapping):
        raise UserError(f"{source}: extra.{RECORD_KEY} must be an object with dataset, shape and recipe")
    shape = record.get("shape") or {}
    expected = _shape_record(arch)
    if shape and dict(shape) != expected:
        raise UserError(f"{source}: extra.{RECORD_KEY}.shape {dict(shape)} does not match the architecture "
                        f"{expected}; fix or remove the record")
    unknown = sorted(set(record.get("recipe", {})) - set(RECIPE_FIELDS))
    if unknown:
        raise UserError(f"{source}: unknown recipe field {unknown[0]!r} in extra.{RECORD_KEY}.recipe; allowed: "
                        f"{', '.join(RECIPE_FIELDS)}")
    return dict(record)
