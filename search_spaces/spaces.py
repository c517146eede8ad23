"""NNI model spaces of multi-path networks, composed of the mutable primitives.

A space is the same skeleton as :class:`~mpn_nas.models.MultiPathResNet` (or ``MultiPathMLP``): a
per-path stem, one ``Repeat`` of blocks per stage and the path-concatenating classifier, each a
primitive of :mod:`search_spaces.primitives` whose arguments are the choices of
:meth:`SpaceConfig.labels` (declared once there). One label serves every module that depends on it:
``stage2.paths`` is stage 2's path count, stage 3's ``in_paths`` and, for the last stage, the
classifier's; the repair rules of :mod:`search_spaces.config` are expressions of labels.

So the same space serves multi-trial strategies and ``nnictl`` (NNI re-creates it under a sample: it
is then ``build_model(space.to_arch(sample))``) and every one-shot strategy (the primitives become
weight-sharing mixed operations; :meth:`MultiPathSpace.freeze` then also copies the supernet's weights).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import nni
import torch
from nni.nas.nn.pytorch import Repeat
from nni.nas.oneshot.pytorch.strategy import is_supernet
from nni.nas.space import current_model
from torch import nn

from mpn_nas import Arch, build_model

from .config import SpaceConfig, config_from_dict, load_config, repaired_density, repaired_routing, sample_to_arch
from .oneshot import MultiPathModelSpace, frozen_arguments
from .primitives import (
    MutableMultiPathBasicBlock,
    MutableMultiPathDenseStem,
    MutableMultiPathLinear,
    MutableMultiPathStem,
    MutablePathConcatClassifier,
)


class MultiPathSpace(MultiPathModelSpace):
    """A space of multi-path networks of one family, given by a :class:`SpaceConfig`.

    Arguments are plain values (NNI re-creates the space from them in trial processes):
    ``config`` is a :class:`SpaceConfig`, a dict of its fields, or a path to a JSON file of fields to
    change in the defaults for the input shape.
    """

    family = "resnet"

    def __init__(self, in_channels: int = 1, input_size: int = 8, num_classes: int = 10,
                 config: Union[None, str, Mapping[str, Any]] = None) -> None:
        super().__init__()
        if isinstance(config, Mapping) and "family" in config:
            self.config = config_from_dict(config)
        else:
            self.config = load_config(self.family, config, in_channels=in_channels, input_size=input_size,
                                      num_classes=num_classes)
        sample = current_model()
        if sample is not None:  # NNI re-creates the space for a trial: the plain network of the sample
            self.arch = self.to_arch(sample)
            self.network = build_model(self.arch)
            return
        # Registered in the order of SpaceConfig.labels(), so that simplify() lists labels in that order.
        self.choices = {label: self.add_mutable(nni.choice(label, values))
                        for label, values in self.config.labels().items()}
        self._build_supernet()

    def _choice(self, stage: int, kind: str) -> Any:
        shared = self.config.shared and kind in ("paths", "routing", "density")
        return self.choices[kind if shared else f"stage{stage + 1}.{kind}"]

    def _build_supernet(self) -> None:
        cfg = self.config
        paths = self._choice(0, "paths")
        self.stem = self._stem(cfg, paths)
        channels, stages = cfg.stem_width, []
        for i in range(cfg.stage_count):
            in_paths, paths = paths, self._choice(i, "paths")
            width = self._choice(i, "width")
            routing = repaired_routing(self._choice(i, "routing"), in_paths, paths)
            density = repaired_density(self._choice(i, "density"), routing, in_paths, paths)
            stages.append(Repeat(_StageBlocks(self.family, channels, in_paths, width, paths, routing, density,
                                              cfg.strides[i]), self._choice(i, "blocks")))
            channels = width
        self.stages = nn.ModuleList(stages)
        self.head = MutablePathConcatClassifier(in_channels=channels, path_count=paths, num_classes=cfg.num_classes)

    def _stem(self, cfg: SpaceConfig, paths: Any) -> nn.Module:
        if self.family == "mlp":
            return MutableMultiPathDenseStem(in_features=cfg.in_channels * cfg.input_size ** 2, width=cfg.stem_width,
                                             path_count=paths)
        return MutableMultiPathStem(in_channels=cfg.in_channels, width=cfg.stem_width, path_count=paths)

    def to_arch(self, sample: Mapping[str, Any]) -> Arch:
        """The architecture document a sample describes (extra keys in ``sample`` are ignored)."""
        return sample_to_arch(self.config, sample)

    def freeze(self, sample: Mapping[str, Any]) -> nn.Module:
        """The plain mpn_nas network of ``sample``: exactly ``build_model(self.to_arch(sample))``, with
        the supernet's weights when this space has been turned into one by a one-shot strategy."""
        network = build_model(self.to_arch(sample))
        if hasattr(self, "stages") and is_supernet(self):
            network.load_state_dict(self.inherited_state(sample))
        return network

    def inherited_state(self, sample: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """State dict of ``build_model(self.to_arch(sample))`` sliced from the supernet's weights."""
        blocks = [block for stage, stage_arch in zip(self.stages, self.to_arch(sample).stages)
                  for block in list(stage.blocks)[:stage_arch.blocks]]
        pairs = [("stem", self.stem), *((f"blocks.{i}", block) for i, block in enumerate(blocks)), ("head", self.head)]
        state = {}
        for prefix, module in pairs:
            weights = module.freeze_weight(**frozen_arguments(module, sample))
            state.update({f"{prefix}.{key}": value.detach().clone() for key, value in weights.items()})
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, num_classes)`` logits of the trial's network or the supernet."""
        if hasattr(self, "network"):
            return self.network(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


class _StageBlocks:
    """Block ``index`` of a stage for ``Repeat``: the first takes the previous stage's paths, width and
    stride; the others keep the stage's own. (A class, not a lambda: spaces must pickle.)"""

    def __init__(self, family: str, in_channels: Any, in_paths: Any, width: Any, paths: Any, routing: Any,
                 density: Any, stride: int) -> None:
        self.family, self.in_channels, self.in_paths, self.width = family, in_channels, in_paths, width
        self.paths, self.routing, self.density, self.stride = paths, routing, density, stride

    def __call__(self, index: int) -> nn.Module:
        first = index == 0
        in_channels = self.in_channels if first else self.width
        in_paths = self.in_paths if first else self.paths
        if self.family == "mlp":
            return MutableMultiPathLinear(in_features=in_channels, out_features=self.width, path_count=self.paths,
                                          routing=self.routing, density=self.density, in_paths=in_paths)
        return MutableMultiPathBasicBlock(in_channels=in_channels, width=self.width, path_count=self.paths,
                                          in_paths=in_paths, routing=self.routing, density=self.density,
                                          stride=self.stride if first else 1)


class ResNetSpace(MultiPathSpace):
    """Multi-path ResNets: per stage, path count, routing, density, width and block count."""

    family = "resnet"


class MLPSpace(MultiPathSpace):
    """Multi-path MLPs: per stage, path count, routing, density, width and layer count."""

    family = "mlp"


SPACES = {"resnet": ResNetSpace, "mlp": MLPSpace}


def make_space(name: str, in_channels: int = 1, input_size: int = 8, num_classes: int = 10,
               config: Optional[Union[str, Mapping[str, Any]]] = None) -> MultiPathSpace:
    """The space called ``name`` (``resnet`` or ``mlp``) for inputs of the given shape."""
    from mpn_nas.errors import UserError

    if name not in SPACES:
        raise UserError(f"unknown space {name!r}; allowed: {', '.join(SPACES)}")
    return SPACES[name](in_channels=in_channels, input_size=input_size, num_classes=num_classes, config=config)


def arch_from_parameters(space: MultiPathSpace, params: Mapping[str, Any]) -> Arch:
    """Architecture document of a tuner's parameter dict (``nni.get_next_parameter()``) or of what
    ``NasExperiment.export_top_models(formatter="dict")`` returns: both map labels to chosen values."""
    return space.to_arch(params)


__all__ = ["MultiPathSpace", "ResNetSpace", "MLPSpace", "SPACES", "make_space", "arch_from_parameters",
           "SpaceConfig"]
