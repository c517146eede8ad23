"""NNI model spaces of multi-path networks: ``ResNetSpace`` and ``MLPSpace``.

Each space registers one labelled ``nni.choice`` per knob (see :mod:`search_spaces.config` for the
labels and repair rules). Under a sample, the space *is* ``mpn_nas.build_model(space.to_arch(sample))``:
the network a trial trains and the one ``mpn-nas retrain`` rebuilds come from the same builder.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import nni
import torch
from nni.mutable import ensure_frozen
from nni.nas.nn.pytorch import ModelSpace
from torch import nn

from mpn_nas import Arch, build_model

from .config import SpaceConfig, config_from_dict, load_config, sample_to_arch


class MultiPathSpace(ModelSpace):
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
        self.choices = {label: self.add_mutable(nni.choice(label, values))
                        for label, values in self.config.labels().items()}
        # Default values in a dry run; the trial's sample inside a frozen context.
        self.sample = {label: ensure_frozen(choice) for label, choice in self.choices.items()}
        self.arch = self.to_arch(self.sample)
        self.network = build_model(self.arch)

    def to_arch(self, sample: Mapping[str, Any]) -> Arch:
        """The architecture document a sample describes (extra keys in ``sample`` are ignored)."""
        return sample_to_arch(self.config, sample)

    def freeze(self, sample: Mapping[str, Any]) -> nn.Module:
        """The plain mpn_nas network of ``sample``: exactly ``build_model(self.to_arch(sample))``."""
        return build_model(self.to_arch(sample))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, num_classes)`` logits of the current (default or frozen) network."""
        return self.network(x)


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
