"""The architecture document: one versioned JSON description from which every network is built.

```json
{"format": "mpn-nas/arch", "version": 1, "family": "resnet",
 "in_channels": 1, "input_size": 8, "num_classes": 10, "stem_width": 16,
 "stages": [{"blocks": 1, "width": 16, "paths": 4, "routing": "feature_dependent",
             "density": 1.0, "stride": 1, "se": false, "block": "basic"}]}
```
A stage's optional ``block`` names its residual block (:data:`mpn_nas.layers.BLOCK_KINDS`): ``basic``
(the default, left out of written documents), ``selective_kernel`` (SKNet) or ``split_attention``
(ResNeSt, whose input channels per path must be even).
``family`` is ``resnet``, ``mlp`` or ``ensemble`` (``ensemble_size`` copies of ``member_family``
networks averaging their logits). Widths are per path: ``stem_width`` is the width of each of the
first stage's ``paths`` parallel stem operations, ``width`` that of each path of a stage.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

from .errors import UserError
from .files import atomic_write_text
from .layers.adaptive import BLOCK_KINDS, DEFAULT_BLOCK, block_problem
from .layers.routers import ROUTING_TYPES
from .limits import check_document, check_field

ARCH_FORMAT = "mpn-nas/arch"
ARCH_VERSION = 1
# The single-network families (one skeleton each in mpn_nas.models, one space each in search_spaces)
# and the ensemble of them. mpn_nas.models.FAMILY_SKELETONS builds each; a test keeps the two equal.
MEMBER_FAMILIES = ("resnet", "mlp")
FAMILIES = (*MEMBER_FAMILIES, "ensemble")


class ArchError(UserError):
    """An architecture document that cannot be built; the message names the field."""


@dataclass(frozen=True)
class Stage:
    """One stage: ``blocks`` blocks of ``paths`` parallel operations of ``width`` channels each."""

    blocks: int = 1
    width: int = 16
    paths: int = 1
    routing: str = "none"
    density: float = 1.0
    stride: int = 1
    se: bool = False
    block: str = DEFAULT_BLOCK


def _stage_dict(stage: Stage) -> dict:
    """A stage's fields; ``block`` only when not the default, so documents of basic blocks stay as before."""
    doc = asdict(stage)
    if doc["block"] == DEFAULT_BLOCK:
        del doc["block"]
    return doc


@dataclass(frozen=True)
class Arch:
    """A validated architecture document (see the module docstring for the JSON form)."""

    family: str
    in_channels: int
    input_size: int
    num_classes: int
    stem_width: int
    stages: tuple[Stage, ...]
    ensemble_size: int = 1
    member_family: str = "resnet"
    extra: dict = field(default_factory=dict, compare=False)  # free-form metadata, ignored by the builder

    def __post_init__(self) -> None:
        validate(self)

    @property
    def member(self) -> "Arch":
        """The single network an ensemble repeats (itself for other families)."""
        if self.family != "ensemble":
            return self
        return Arch(self.member_family, self.in_channels, self.input_size, self.num_classes, self.stem_width,
                    self.stages)

    def to_dict(self) -> dict:
        doc: dict[str, Any] = {"format": ARCH_FORMAT, "version": ARCH_VERSION, "family": self.family,
                               "in_channels": self.in_channels, "input_size": self.input_size,
                               "num_classes": self.num_classes, "stem_width": self.stem_width,
                               "stages": [_stage_dict(stage) for stage in self.stages]}
        if self.family == "ensemble":
            doc.update(ensemble_size=self.ensemble_size, member_family=self.member_family)
        if self.extra:
            doc["extra"] = dict(self.extra)
        return doc

    def to_json(self, path: Union[str, Path, None] = None) -> str:
        """The JSON text; also written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

    @classmethod
    def from_json(cls, source: Union[str, Path, Mapping[str, Any]]) -> "Arch":
        """From a dict, a path to a JSON file, or JSON text."""
        if isinstance(source, Mapping):
            return cls.from_dict(source)
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = Path(text)
            where = _shown(text)
            try:
                if not path.is_file():
                    raise ArchError(f"architecture file {where} not found")
                _within("document size", path.stat().st_size, f"the size of {where} in bytes")
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as err:  # a name too long, a directory, binary content
                raise ArchError(f"cannot read architecture file {where} ({type(err).__name__}); pass a JSON "
                                "file") from None
        else:
            where = "architecture JSON"
            _within("document size", len(text), f"the size of {where} in bytes")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise ArchError(f"{where} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
        except RecursionError:
            raise ArchError(f"{where} is nested too deeply to be an architecture document") from None
        except ValueError as err:  # e.g. an integer of more digits than Python converts
            raise ArchError(f"{where} is not a valid document ({str(err).splitlines()[0][:120]})") from None
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "Arch":
        if not isinstance(doc, Mapping):
            raise ArchError(f"architecture document must be a JSON object, got {type(doc).__name__}")
        if doc.get("format") != ARCH_FORMAT:
            raise ArchError(f"field 'format' must be {ARCH_FORMAT!r}, got {_shown(doc.get('format'))}")
        if doc.get("version") != ARCH_VERSION:
            raise ArchError(f"field 'version' must be {ARCH_VERSION} (this mpn-nas reads version {ARCH_VERSION}), "
                            f"got {_shown(doc.get('version'))}")
        known = {"format", "version", "family", "in_channels", "input_size", "num_classes", "stem_width", "stages",
                 "ensemble_size", "member_family", "extra"}
        unknown = sorted(str(key) for key in set(doc) - known)
        if unknown:
            raise ArchError(f"unknown field {_shown(unknown[0])}; allowed fields: {', '.join(sorted(known))}")
        for name in ("family", "in_channels", "input_size", "num_classes", "stem_width", "stages"):
            if name not in doc:
                raise ArchError(f"missing field {name!r}")
        stages = doc["stages"]
        if not isinstance(stages, list) or not stages:
            raise ArchError("field 'stages' must be a non-empty list of stage objects")
        _within("stages (count)", len(stages), "stages")  # before building thousands of stages
        extra = doc.get("extra")
        if extra is not None and not isinstance(extra, Mapping):
            raise ArchError(f"field 'extra' must be an object (free-form metadata), got {_shown(extra)}")
        return cls(family=doc["family"], in_channels=doc["in_channels"], input_size=doc["input_size"],
                   num_classes=doc["num_classes"], stem_width=doc["stem_width"],
                   stages=tuple(_stage_from_dict(i, s) for i, s in enumerate(stages)),
                   ensemble_size=doc.get("ensemble_size", 1), member_family=doc.get("member_family", "resnet"),
                   extra=dict(extra or {}))


def _stage_from_dict(index: int, doc: Any) -> Stage:
    where = f"stages[{index}]"
    if not isinstance(doc, Mapping):
        raise ArchError(f"{where} must be an object with fields {', '.join(Stage.__dataclass_fields__)}")
    known = set(Stage.__dataclass_fields__)
    unknown = sorted(str(key) for key in set(doc) - known)
    if unknown:
        name = _shown(str(unknown[0]), 40)[1:-1]  # escaped and cut short, without repr's quotes
        raise ArchError(f"unknown field '{where}.{name}'; allowed: {', '.join(sorted(known))}")
    return Stage(**doc)


def _within(limit: str, value: int, where: str) -> None:
    """:func:`~mpn_nas.limits.check_field`, refusing with an :class:`ArchError`."""
    try:
        check_field(limit, value, where)
    except UserError as err:
        raise ArchError(str(err)) from None


def _shown(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut short: a hostile document must not turn the one-line answer into pages."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # very deep nesting, or an int of too many digits
        text = f"<{type(value).__name__}>"
    return text if len(text) <= width else text[:width - 3] + "..."


def _require_int(where: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ArchError(f"field {where!r} must be an integer >= {minimum}, got {_shown(value)}")


def validate(arch: Arch) -> None:
    """Raise :class:`ArchError` naming the first bad field and its allowed values."""
    if arch.family not in FAMILIES:
        raise ArchError(f"field 'family' must be one of {', '.join(FAMILIES)}, got {_shown(arch.family)}")
    if arch.member_family not in MEMBER_FAMILIES:
        raise ArchError(f"field 'member_family' must be one of {', '.join(MEMBER_FAMILIES)}, "
                        f"got {_shown(arch.member_family)}")
    for name in ("in_channels", "input_size", "num_classes", "stem_width", "ensemble_size"):
        _require_int(name, getattr(arch, name), 2 if name == "num_classes" else 1)
    if arch.family == "ensemble" and arch.ensemble_size < 2:
        raise ArchError(f"field 'ensemble_size' must be >= 2 for family 'ensemble', got {arch.ensemble_size}")
    convolutional = arch.member.family == "resnet"
    previous_paths, channels = None, arch.stem_width
    for i, stage in enumerate(arch.stages):
        where = f"stages[{i}]"
        for name in ("blocks", "width", "paths", "stride"):
            _require_int(f"{where}.{name}", getattr(stage, name), 1)
        if stage.routing not in ROUTING_TYPES:
            raise ArchError(f"field '{where}.routing' must be one of {', '.join(ROUTING_TYPES)}, "
                            f"got {_shown(stage.routing)}")
        density = stage.density
        if isinstance(density, bool) or not isinstance(density, (int, float)) or not math.isfinite(density) \
                or not 0.0 < density <= 1.0:
            raise ArchError(f"field '{where}.density' must be a number in (0, 1], got {_shown(density)}")
        if not isinstance(stage.se, bool):
            raise ArchError(f"field '{where}.se' must be true or false, got {_shown(stage.se)}")
        if not isinstance(stage.block, str) or stage.block not in BLOCK_KINDS:
            raise ArchError(f"field '{where}.block' must be one of {', '.join(BLOCK_KINDS)}, got {_shown(stage.block)}")
        if not convolutional and (stage.stride != 1 or stage.se or stage.block != DEFAULT_BLOCK):
            name = "stride" if stage.stride != 1 else "se" if stage.se else "block"
            raise ArchError(f"field '{where}.{name}' applies to the resnet family only; use stride 1, se false "
                            f"and block {DEFAULT_BLOCK!r} for mlp")
        if convolutional:  # the first block takes the previous width, later blocks the stage's own
            inputs = (channels, stage.width) if stage.blocks > 1 else (channels,)
            problem = next(filter(None, (block_problem(stage.block, width) for width in inputs)), None)
            if problem:
                raise ArchError(f"field '{where}.block': {problem} (set by stem_width and the stage widths)")
        channels = stage.width
        if stage.routing == "none" and previous_paths not in (None, stage.paths):
            raise ArchError(f"field '{where}.routing' is 'none' but the path count changes from {previous_paths} "
                            f"to {stage.paths}; use static, cross_prediction or feature_dependent, or equal paths")
        previous_paths = stage.paths
    if convolutional:
        reduction = math.prod(stage.stride for stage in arch.stages)
        if reduction > arch.input_size:
            raise ArchError(f"field 'stages[*].stride' reduces input_size {arch.input_size} by {_shown(reduction)}; "
                            f"the product of strides must be <= input_size")
    try:  # limits, FLOPs and memory, from the fields alone: before anything is built
        check_document(arch)
    except UserError as err:
        raise ArchError(str(err)) from None
