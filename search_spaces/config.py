"""Candidate lists of a model space, and the mapping from a sample of choices to an architecture.

Pure Python (no nni import), so tuners, trials and the command line share one mapping.

Labels: ``stage{i}.paths``, ``stage{i}.routing``, ``stage{i}.density``, ``stage{i}.width`` and
``stage{i}.blocks`` (``i`` from 1). With ``shared: true`` one ``paths``, ``routing`` and ``density``
choice serves every stage.

Repair rules (deterministic; applied by :func:`sample_to_arch`, so every sample is buildable and
equivalent samples give the same architecture):
1. routing ``none`` into a stage whose path count differs from the previous stage's becomes
   ``static`` (``none`` cannot connect different path counts; ``static`` is the cheapest routing that can);
2. a stage with one path fed by one path has nothing to route: its routing becomes ``none``;
3. density only matters when a routed connection has more than one candidate: otherwise it becomes 1.0.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Union

from mpn_nas.arch import MEMBER_FAMILIES, Arch, Stage
from mpn_nas.errors import UserError
from mpn_nas.layers.adaptive import BLOCK_KINDS, DEFAULT_BLOCK, block_problem
from mpn_nas.layers.routers import ROUTING_TYPES
from mpn_nas.limits import check_space

FAMILIES = MEMBER_FAMILIES  # a space per single-network family
SHAREABLE = ("paths", "routing", "density")


@dataclass(frozen=True)
class SpaceConfig:
    """Candidate lists of a multi-path model space.

    ``widths[i]`` and ``strides[i]`` describe stage ``i``; the other lists apply to every stage.
    """

    family: str = "resnet"
    in_channels: int = 1
    input_size: int = 8
    num_classes: int = 10
    stem_width: int = 16
    widths: tuple[tuple[int, ...], ...] = ((4, 8, 16), (8, 16, 32))
    strides: tuple[int, ...] = (1, 2)
    blocks: tuple[int, ...] = (1, 2)
    path_counts: tuple[int, ...] = (1, 2, 4)
    routings: tuple[str, ...] = ROUTING_TYPES
    densities: tuple[float, ...] = (0.5, 1.0)
    shared: bool = False
    # Residual block kinds (mpn_nas.layers.BLOCK_KINDS) a resnet stage may use. With one candidate
    # there is no choice (no label): the spaces, their labels and search_space.json stay as before.
    block_kinds: tuple[str, ...] = (DEFAULT_BLOCK,)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def stage_count(self) -> int:
        return len(self.widths)

    def to_dict(self) -> dict:
        return {k: (list(map(list, v)) if k == "widths" else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}

    def labels(self) -> dict[str, list]:
        """Every choice label of the space and its candidates, in a stable order."""
        choices: dict[str, list] = {}
        candidates = {"paths": self.path_counts, "routing": self.routings, "density": self.densities}
        if self.shared:
            for kind in SHAREABLE:
                choices[kind] = list(candidates[kind])
        for i in range(self.stage_count):
            prefix = f"stage{i + 1}."
            if not self.shared:
                for kind in SHAREABLE:
                    choices[prefix + kind] = list(candidates[kind])
            choices[prefix + "width"] = list(self.widths[i])
            choices[prefix + "blocks"] = list(self.blocks)
            if len(self.block_kinds) > 1:
                choices[prefix + "block"] = list(self.block_kinds)
        return choices

    def size(self) -> int:
        """Number of distinct samples (before repairs merge equivalent ones)."""
        total = 1
        for values in self.labels().values():
            total *= len(values)
        return total


def default_config(family: str = "resnet", in_channels: int = 1, input_size: int = 8,
                   num_classes: int = 10) -> SpaceConfig:
    """Sensible candidate lists for the input shape: two stages for small images, three from 16x16 up."""
    if family == "mlp":
        return SpaceConfig("mlp", in_channels, input_size, num_classes, stem_width=64,
                           widths=((16, 32, 64), (16, 32, 64)), strides=(1, 1))
    if family != "resnet":
        raise UserError(f"unknown space {family!r}; allowed: {', '.join(FAMILIES)}")
    if input_size >= 16:
        return SpaceConfig("resnet", in_channels, input_size, num_classes, stem_width=32,
                           widths=((8, 16, 32), (16, 32, 64), (32, 64, 128)), strides=(1, 2, 2))
    return SpaceConfig("resnet", in_channels, input_size, num_classes)


def load_config(family: str, overrides: Union[None, str, Path, Mapping[str, Any]] = None, **shape: int) -> SpaceConfig:
    """The default config of ``family`` for ``shape``, with fields replaced from a JSON file or dict."""
    base = default_config(family, **shape)
    if overrides is None:
        return base
    if not isinstance(overrides, Mapping):
        path = Path(overrides)
        if not path.is_file():
            raise UserError(f"space config {path} not found")
        try:
            overrides = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"space config {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(overrides, Mapping):
            raise UserError(f"space config {path} must be a JSON object")
    names = {f.name for f in fields(SpaceConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise UserError(f"unknown space config field {unknown[0]!r}; allowed: {', '.join(sorted(names))}")
    merged = {**asdict(base), **overrides}
    if "widths" in overrides and "strides" not in overrides and len(merged["widths"]) != len(base.strides):
        merged["strides"] = [1] + [2] * (len(merged["widths"]) - 1) if family == "resnet" else [1] * len(
            merged["widths"])
    return config_from_dict(merged)


def _as_tuple(name: str, value: Any) -> Any:
    if name == "widths" and isinstance(value, (list, tuple)):
        return tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in value)
    return tuple(value) if isinstance(value, list) else value


def _validate(cfg: SpaceConfig) -> None:
    def fail(name: str, allowed: str, got: Any) -> None:
        raise UserError(f"space config field {name!r} must be {allowed}, got {got!r}")

    def positive_ints(name: str, values: Any) -> None:
        if not isinstance(values, tuple) or not values or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
            fail(name, "a non-empty list of integers >= 1", values)

    if cfg.family not in FAMILIES:
        fail("family", " or ".join(FAMILIES), cfg.family)
    for name in ("in_channels", "input_size", "num_classes", "stem_width"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            fail(name, "an integer >= 1", value)
    if not isinstance(cfg.widths, tuple) or not cfg.widths:
        fail("widths", "a non-empty list (one list of widths per stage)", cfg.widths)
    for i, stage_widths in enumerate(cfg.widths):
        positive_ints(f"widths[{i}]", stage_widths)
    positive_ints("strides", cfg.strides)
    if len(cfg.strides) != len(cfg.widths):
        fail("strides", f"a list of {len(cfg.widths)} strides (one per stage)", list(cfg.strides))
    positive_ints("blocks", cfg.blocks)
    positive_ints("path_counts", cfg.path_counts)
    if not cfg.routings or any(r not in ROUTING_TYPES for r in cfg.routings):
        fail("routings", f"a non-empty list of {', '.join(ROUTING_TYPES)}", cfg.routings)
    if not cfg.densities or any(isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d <= 1
                                for d in cfg.densities):
        fail("densities", "a non-empty list of numbers in (0, 1]", cfg.densities)
    if not isinstance(cfg.shared, bool):
        fail("shared", "true or false", cfg.shared)
    if cfg.family == "mlp" and any(s != 1 for s in cfg.strides):
        fail("strides", "all 1 for the mlp family", list(cfg.strides))
    if not isinstance(cfg.block_kinds, tuple) or not cfg.block_kinds or any(
            k not in BLOCK_KINDS for k in cfg.block_kinds):
        fail("block_kinds", f"a non-empty list of {', '.join(BLOCK_KINDS)}", cfg.block_kinds)
    if cfg.family == "mlp" and cfg.block_kinds != (DEFAULT_BLOCK,):
        fail("block_kinds", f"[{DEFAULT_BLOCK!r}] for the mlp family", list(cfg.block_kinds))
    for kind in cfg.block_kinds:  # every block input of every sample: the stem and each stage's widths
        for width in (cfg.stem_width, *(w for stage in cfg.widths for w in stage)):
            problem = block_problem(kind, width)
            if problem:
                fail("block_kinds", f"kinds every width of the space can take ({problem})", list(cfg.block_kinds))
    for kind, values in (("path_counts", cfg.path_counts), ("routings", cfg.routings), ("densities", cfg.densities),
                         ("blocks", cfg.blocks), ("block_kinds", cfg.block_kinds), *((f"widths[{i}]", w) for i, w in enumerate(cfg.widths))):
        if len(set(values)) != len(values):
            fail(kind, "a list without repeats", list(values))
    check_space(cfg)  # candidates within the limits table, largest architecture within memory


def _choice(sample: Mapping[str, Any], cfg: SpaceConfig, stage: int, kind: str) -> Any:
    label = kind if cfg.shared and kind in SHAREABLE else f"stage{stage + 1}.{kind}"
    try:
        return sample[label]
    except KeyError:
        raise UserError(f"parameters lack the choice {label!r}; expected labels: "
                        f"{', '.join(cfg.labels())}") from None


def sample_to_arch(cfg: SpaceConfig, sample: Mapping[str, Any]) -> Arch:
    """The (repaired) architecture a sample of the space's choices describes."""
    allowed = cfg.labels()
    for label, values in allowed.items():
        if label in sample and sample[label] not in values:
            raise UserError(f"choice {label!r} = {sample[label]!r} is not a candidate; allowed: {values}")
    stages, previous_paths = [], None
    for i in range(cfg.stage_count):
        paths, routing, density = (_choice(sample, cfg, i, kind) for kind in SHAREABLE)
        in_paths = paths if previous_paths is None else previous_paths
        routing = repaired_routing(routing, in_paths, paths)
        block = _choice(sample, cfg, i, "block") if len(cfg.block_kinds) > 1 else cfg.block_kinds[0]
        stages.append(Stage(blocks=_choice(sample, cfg, i, "blocks"), width=_choice(sample, cfg, i, "width"),
                            paths=paths, routing=routing, density=float(repaired_density(density, routing, in_paths,
                                                                                         paths)),
                            stride=cfg.strides[i], block=block))
        previous_paths = paths
    return Arch(cfg.family, cfg.in_channels, cfg.input_size, cfg.num_classes, cfg.stem_width, tuple(stages))


# The repair rules are written once, with operators that work on plain values (``sample_to_arch``)
# and on NNI choices alike: the model spaces pass choices and get the expressions their layers take.

def _when(condition: Any, then: Any, otherwise: Any) -> Any:
    """``then if condition else otherwise``, symbolic when ``condition`` is an expression of choices."""
    if hasattr(condition, "freeze"):  # an nni MutableExpression (no nni import here)
        return type(condition).condition(condition, then, otherwise)
    return then if condition else otherwise


def repaired_routing(routing: Any, in_paths: Any, paths: Any) -> Any:
    """Rules 1 and 2 of the module docstring."""
    return _when((in_paths == 1) & (paths == 1), "none",
                 _when((routing == "none") & (in_paths != paths), "static", routing))


def repaired_density(density: Any, routing: Any, in_paths: Any, paths: Any) -> Any:
    """Rule 3 of the module docstring, for the already repaired ``routing``."""
    return _when((routing == "none") | (_candidates(routing, in_paths, paths) == 1), 1.0, density)


def _candidates(routing: Any, in_paths: Any, paths: Any) -> Any:
    """How many connections the density chooses among: sources per destination, or destinations
    per source for cross-prediction."""
    return _when(routing == "cross_prediction", paths, in_paths)


def config_from_dict(doc: Mapping[str, Any]) -> SpaceConfig:
    """Inverse of :meth:`SpaceConfig.to_dict` (lists back to tuples)."""
    return SpaceConfig(**{k: _as_tuple(k, v) for k, v in doc.items()})


