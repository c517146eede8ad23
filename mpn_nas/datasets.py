"""The data sets by name: one table that the command line, the spaces, the tuners, the benchmarks
and the docs read. Adding a data set: its loader in :mod:`mpn_nas.data` and a row here.

Light on purpose (no Lightning, no torchvision): parsers and help texts read it at start-up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import UserError


@dataclass(frozen=True)
class DataShape:
    in_channels: int
    input_size: int
    num_classes: int


@dataclass(frozen=True)
class DatasetKind:
    """One data set: its name, what it is, its shape and the function of :mod:`mpn_nas.data` that loads it."""

    name: str
    loader: str  # name of a function of mpn_nas.data taking a DataRequest (imported only when loading)
    about: str  # one line for help texts and docs
    shape: Optional[DataShape] = None  # fixed by the data; None: the caller's (image size, channels, classes)
    bundled: bool = False  # needs no files: its shape is known without looking on disk
    argument: Optional[str] = None  # the metavar of ``name:ARGUMENT`` when the data set takes one

    @property
    def usage(self) -> str:
        return f"{self.name}:{self.argument}" if self.argument else self.name


# In the order help texts list them.
DATASETS: dict[str, DatasetKind] = {kind.name: kind for kind in (
    DatasetKind("digits", "_digits", "scikit-learn's bundled 8x8 digits (the default)", DataShape(1, 8, 10), True),
    DatasetKind("digits-contexts", "_digits_contexts", "the digits, each rendered in one hidden context",
                DataShape(1, 8, 10), True),
    DatasetKind("cifar10", "_cifar", "CIFAR-10 python files under --data-dir", DataShape(3, 32, 10)),
    DatasetKind("cifar100", "_cifar", "CIFAR-100 python files under --data-dir", DataShape(3, 32, 100)),
    DatasetKind("imagefolder", "_imagefolder", "one sub-folder of images per class, resized to the network's input",
                argument="PATH"),
    DatasetKind("fake", "_fake", "random images for smoke runs, shaped as asked", bundled=True),
)}
DATASET_USAGE = " | ".join(kind.usage for kind in DATASETS.values())  # e.g. for --dataset's help


def dataset_kind(name: str) -> DatasetKind:
    """The entry of ``name`` (``imagefolder:PATH`` -> ``imagefolder``); a one-line error otherwise."""
    base, _, argument = name.partition(":")
    kind = DATASETS.get(base)
    if kind is None or bool(kind.argument) != bool(argument):
        raise UserError(f"unknown dataset {name!r}; allowed: {', '.join(k.usage for k in DATASETS.values())}")
    return kind


def check_dataset_name(name: str) -> None:
    """Fail early, before any work, on a data set name that :func:`mpn_nas.data.make_data` would not accept."""
    dataset_kind(name)


def fixed_shapes() -> dict[str, DataShape]:
    """Data sets whose shape the data fixes, by name."""
    return {name: kind.shape for name, kind in DATASETS.items() if kind.shape is not None}


def add_data_options(parser, download: bool = False) -> None:
    """``--dataset`` and ``--data-dir`` (and ``--download``) of a command that reads data."""
    parser.add_argument("--dataset", default="digits", help=DATASET_USAGE + " (default digits)")
    parser.add_argument("--data-dir", default=None, help="where cifar files are (default ./data)")
    if download:
        parser.add_argument("--download", action="store_true", help="download cifar files when absent")
