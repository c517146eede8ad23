"""Weight-sharing (one-shot) versions of the multi-path primitives, for NNI's one-shot strategies.

Each mixed operation holds the *largest* layer its choices allow and serves every smaller one from
path-major slices of it: a tensor dimension that stacks ``paths x channels`` is viewed as
``(max_paths, max_channels)`` and cut to ``(paths, channels)``, so path ``j`` of a small layer is path
``j`` of the large one. There is one router per routing candidate; density is only a mask.

Three ways to run, chosen by the strategy (NNI's ``mixed_op_sampling`` policy, or ours for Proxyless):

* sampling (RandomOneShot/SPOS): the sampled layer runs at its own size through the *plain* layer's
  code (``torch.func.functional_call`` on a parameter-free template with the sliced weights), so the
  supernet's output is exactly that of ``freeze(sample)``;
* differentiable (DARTS, GumbelDARTS): the largest layer runs once; routing matrices of the routing
  and density candidates are mixed by their probabilities, and paths and channels are scaled by soft
  masks (``P(path_count > j)``, ``P(width > c)``), so every architecture weight gets a gradient;
* Proxyless: one configuration is sampled from the probabilities and runs exactly, its output scaled
  by ``prob / prob.detach()`` (value 1, gradient to the probabilities of what was sampled).

``MultiPathModelSpace`` (a ``ModelSpace`` base class) hands these hooks to every one-shot strategy.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Optional

import torch
from nni.mutable import Mutable, MutableExpression
from nni.nas.nn.pytorch import ModelSpace, Repeat
from nni.nas.oneshot.pytorch.supermodule._expression_utils import traverse_all_options
from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedRepeat, MixedOpDifferentiablePolicy
from nni.nas.oneshot.pytorch.supermodule.operation import MixedOperation
from torch import nn
from torch.func import functional_call

from mpn_nas.layers import (
    MultiPathConv2d,
    MultiPathDenseStem,
    MultiPathLinear,
    MultiPathStem,
    PathConcatClassifier,
    mix_paths,
)
from mpn_nas.layers.routers import Router, aligned_index, build_router, density_mask, gate_width, masked_softmax

from .primitives import (
    MutableMultiPathBasicBlock,
    MutableMultiPathConv2d,
    MutableMultiPathDenseStem,
    MutableMultiPathLinear,
    MutableMultiPathStem,
    MutablePathConcatClassifier,
)

# A dimension of a weight: None keeps it whole; a tuple of size names is a path-major stack of them.
Dims = tuple[Optional[tuple[str, ...]], ...]
Layout = dict[str, tuple[str, Dims]]  # plain state-dict key -> (supernet key, dims)


def _values(value: Any) -> list:
    """Every value an argument can take (sorted, distinct)."""
    return list(traverse_all_options(value)) if isinstance(value, Mutable) else [value]


def _largest(value: Any) -> Any:
    return max(_values(value))


def _slicing(shape: torch.Size, dims: Dims, sizes: Mapping[str, int], largest: Mapping[str, int]) -> tuple:
    """How to cut a supernet tensor of ``shape``: its path-major expanded shape, the index into
    that, and the cut's expanded and flat shapes."""
    expanded, index, cut, flat = [], [], [], []
    for length, names in zip(shape, dims):
        if names is None:
            expanded.append(length)
            index.append(slice(None))
            cut.append(length)
            flat.append(length)
        else:
            expanded += [largest[name] for name in names]
            index += [slice(0, sizes[name]) for name in names]
            cut += [sizes[name] for name in names]
            flat.append(math.prod(sizes[name] for name in names))
    return expanded, tuple(index), cut, flat


def slice_weight(weight: torch.Tensor, dims: Dims, sizes: Mapping[str, int], largest: Mapping[str, int]) -> torch.Tensor:
    """The part of a supernet ``weight`` that a layer of ``sizes`` uses (gradients flow back to it)."""
    expanded, index, _, flat = _slicing(weight.shape, dims, sizes, largest)
    return weight.reshape(expanded)[index].reshape(flat)


def _write_back(weight: torch.Tensor, dims: Dims, sizes: Mapping[str, int], largest: Mapping[str, int],
                value: torch.Tensor) -> None:
    """Inverse of :func:`slice_weight` for buffers (batch-norm statistics updated on a sliced copy)."""
    expanded, index, cut, _ = _slicing(weight.shape, dims, sizes, largest)
    with torch.no_grad():
        weight.view(expanded)[index].copy_(value.reshape(cut))


def _shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _norm_layout(plain: str, super_: str, channels: tuple[str, ...], bias: bool = True) -> Layout:
    layout = {f"{plain}.weight": (f"{super_}.weight", (channels,)),
              f"{plain}.running_mean": (f"{super_}.running_mean", (channels,)),
              f"{plain}.running_var": (f"{super_}.running_var", (channels,)),
              f"{plain}.num_batches_tracked": (f"{super_}.num_batches_tracked", ())}
    if bias:
        layout[f"{plain}.bias"] = (f"{super_}.bias", (channels,))
    return layout


def _router_layout(plain: str, super_: str, routing: str) -> Layout:
    """Router weights: sources ``pin`` of ``cin`` channels, destinations ``p``, gate width ``hidden``."""
    if routing == "static":
        return {f"{plain}.logits": (f"{super_}.logits", (("pin",), ("p",)))}
    if routing == "cross_prediction":
        return {f"{plain}.weight": (f"{super_}.weight", (("pin",), ("cin",), ("p",))),
                f"{plain}.bias": (f"{super_}.bias", (("pin",), ("p",)))}
    if routing == "feature_dependent":
        return {f"{plain}.gate.0.weight": (f"{super_}.gate.0.weight", (("hidden",), ("pin", "cin"))),
                f"{plain}.gate.0.bias": (f"{super_}.gate.0.bias", (("hidden",),)),
                f"{plain}.gate.2.weight": (f"{super_}.gate.2.weight", (("pin", "p"), ("hidden",))),
                f"{plain}.gate.2.bias": (f"{super_}.gate.2.bias", (("pin", "p"),))}
    return {}


def _conv_layout(plain: str, super_: str, cin: str, cout: str, bias: bool = False) -> Layout:
    layout = {f"{plain}conv.weight": (f"{super_}conv.weight", (("p", cout), (cin,), None, None)),
              **_norm_layout(f"{plain}norm", f"{super_}norm", ("p", cout))}
    if bias:
        layout[f"{plain}conv.bias"] = (f"{super_}conv.bias", (("p", cout),))
    return layout


def _routed_sizes(paths: int, in_paths: Optional[int], in_channels: int, out_channels: int) -> dict[str, int]:
    """Named sizes of a routed layer: paths ``p``, sources ``pin``, channels ``cin``/``cout``, gate ``hidden``."""
    in_paths = paths if in_paths is None else in_paths
    return {"p": paths, "pin": in_paths, "cin": in_channels, "cout": out_channels,
            "hidden": gate_width(in_paths, paths, in_channels)}


def _distribution(value: Any) -> list[tuple[Any, Any]]:
    """``[(value, probability)]`` of a differentiable-mode argument (a plain value has probability 1)."""
    return list(value.items()) if isinstance(value, dict) else [(value, 1.0)]


def _greater_than(value: Any, length: int, device: torch.device) -> torch.Tensor:
    """Soft mask ``m[j] = P(value > j)`` for ``j < length``: ``(length,)``."""
    mask = torch.zeros(length, device=device)
    for option, probability in _distribution(value):
        mask = mask + torch.cat([torch.ones(option, device=device), torch.zeros(length - option, device=device)]) \
            * probability
    return mask


def _probability(pairs: list[tuple[Any, Any]], predicate: Callable[[Any], bool]) -> Any:
    return sum((probability for option, probability in pairs if predicate(option)), 0.0)


@functools.lru_cache(maxsize=None)
def _plain_template(plain_type: type, arguments: tuple) -> nn.Module:
    """A plain layer on the meta device, shared by every mixed operation of the same configuration."""
    with torch.device("meta"):
        return plain_type(**dict(arguments))


class MultiPathMixedOperation(MixedOperation):
    """Shared machinery: slicing by a :data:`Layout`, exact forward through the plain layer's code,
    and the Proxyless gate. Subclasses give ``sizes`` (named sizes of a configuration), ``layout``
    and ``soft_forward`` (the differentiable relaxation)."""

    searchable: tuple[str, ...] = ()
    # Named sizes of the input's path and channel dimensions (None: the input is the image itself).
    input_sizes: Optional[tuple[str, str]] = ("pin", "cin")

    def super_init_argument(self, name: str, value_choice: MutableExpression) -> Any:
        if name == "routing":  # the supernet holds one router per candidate (see __post_init__)
            return "static" if any(value != "none" for value in _values(value_choice)) else "none"
        if name == "density":
            return 1.0
        return _largest(value_choice)

    def __post_init__(self) -> None:
        unsupported = sorted(set(self.mutable_arguments) - set(self.searchable))
        if unsupported:
            raise TypeError(f"{type(self).__name__}: argument {unsupported[0]!r} cannot be searched in a supernet; "
                            f"searchable: {', '.join(self.searchable)}")
        # init_arguments holds the choices themselves: the largest of each size (routing and density stay choices)
        self._largest_arguments = {name: value if name in ("routing", "density") else _largest(value)
                                   for name, value in self.init_arguments.items()}
        self._largest_sizes = self.sizes(self._largest_arguments)
        self._masks: dict[tuple, dict[str, torch.Tensor]] = {}

    # -- what subclasses describe ----------------------------------------------------------------
    def sizes(self, arguments: Mapping[str, Any]) -> dict[str, int]:
        raise NotImplementedError

    def layout(self, arguments: Mapping[str, Any]) -> Layout:
        raise NotImplementedError

    def soft_forward(self, arguments: Mapping[str, Any], x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- routers shared by the subclasses ----------------------------------------------------------
    def _make_routers(self, in_paths: int, out_paths: int, channels: int) -> nn.ModuleDict:
        routings = _values(self.init_arguments["routing"])
        return nn.ModuleDict({routing: build_router(routing, in_paths, out_paths, channels)
                              for routing in routings if routing != "none"})

    def _soft_routing(self, routing: Any, density: Any, x: torch.Tensor) -> torch.Tensor:
        """Routing matrices of every (routing, density) candidate at the largest size, mixed by their
        probabilities: ``x`` ``(B, P_in, C, ...)`` -> ``(B, P_in, P_out)``."""
        in_paths, out_paths = self._largest_sizes["pin"], self._largest_sizes["p"]
        mixed = 0.0
        for option, probability in _distribution(routing):
            if option == "none":  # the aligned source of each destination
                matrix = torch.zeros(in_paths, out_paths, device=x.device, dtype=x.dtype)
                for j in range(out_paths):
                    matrix[aligned_index(j, out_paths, in_paths), j] = 1.0
                mixed = mixed + probability * matrix.expand(x.shape[0], -1, -1)
                continue
            router: Router = self.routers[option]
            scores = router.scores(x)
            for value, weight in _distribution(density):
                mask = density_mask(in_paths, out_paths, value, router.mask_per).to(x.device)
                mixed = mixed + probability * weight * masked_softmax(scores, mask, router.softmax_dim)
        return mixed.expand(x.shape[0], -1, -1)

    # -- exact (sampled) forward -------------------------------------------------------------------
    def freeze_weight(self, **arguments: Any) -> dict[str, torch.Tensor]:
        return self._sliced(arguments)[0]

    def _sliced(self, arguments: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The plain layer's state (sliced from the supernet's) and the supernet's own state."""
        sizes = self.sizes(arguments)
        state = dict(self.state_dict(keep_vars=True))
        return {plain: slice_weight(state[super_], dims, sizes, self._largest_sizes)
                for plain, (super_, dims) in self.layout(arguments).items()}, state

    def _template(self, arguments: Mapping[str, Any]) -> nn.Module:
        """The plain layer of ``arguments`` without storage: its code runs on the supernet's slices."""
        return _plain_template(self.bound_type.__wrapped__, tuple(sorted(arguments.items())))

    def parameter_count(self, arguments: Mapping[str, Any]) -> int:
        """Parameters of the plain layer of ``arguments``, from the layout (no module is built)."""
        sizes, parameters = self.sizes(arguments), dict(self.named_parameters())
        return sum(math.prod(_slicing(parameters[super_].shape, dims, sizes, self._largest_sizes)[3])
                   for super_, dims in self.layout(arguments).values() if super_ in parameters)

    def _router_masks(self, template: nn.Module, key: tuple, device: torch.device) -> dict[str, torch.Tensor]:
        """Density masks of the template's routers (non-persistent buffers, not in the layout)."""
        if (key, device) not in self._masks:
            self._masks[(key, device)] = {
                f"{name}.mask": density_mask(module.in_paths, module.out_paths, module.density, module.mask_per)
                .to(device)
                for name, module in template.named_modules() if isinstance(module, Router) and module.routing != "none"}
        return self._masks[(key, device)]

    def exact_forward(self, arguments: Mapping[str, Any], x: torch.Tensor) -> torch.Tensor:
        template = self._template(arguments)
        weights, state = self._sliced(arguments)
        key = tuple(sorted(arguments.items()))
        template.train(self.training)
        out = functional_call(template, {**weights, **self._router_masks(template, key, x.device)}, (x,))
        if self.training:  # batch norm updated its statistics on sliced copies: store them in the supernet
            sizes = self.sizes(arguments)
            for plain, (super_, dims) in self.layout(arguments).items():
                # A view was updated in place already (and autograd saved it: no second write).
                if plain.endswith(("running_mean", "running_var")) and not _shares_storage(weights[plain],
                                                                                             state[super_]):
                    _write_back(state[super_], dims, sizes, self._largest_sizes, weights[plain])
        return out

    def forward_with_args(self, *values: Any) -> torch.Tensor:
        *values, x = values
        arguments = dict(zip(self.argument_list, values))
        if any(isinstance(value, dict) for value in arguments.values()):
            return self.soft_forward(arguments, x)
        out = self.exact_forward(arguments, x)
        if isinstance(self.sampling_policy, ProxylessMixedOpPolicy):
            out = out * self.sampling_policy.gate(self).to(out.dtype)
        return out


class _BuildsItsOwnLayers(nn.Module):
    """Second base of the mixed operations that build their largest layers in ``__post_init__``
    (``MixedOperation`` passes the layer's arguments on to ``__init__``)."""

    def __init__(self, **_: Any) -> None:
        super().__init__()


class MixedMultiPathConv2d(MultiPathMixedOperation, MultiPathConv2d):
    """Weight-sharing :class:`~mpn_nas.layers.MultiPathConv2d`."""

    bound_type = MutableMultiPathConv2d
    argument_list = ["in_channels", "out_channels", "path_count", "routing", "density", "kernel_size", "stride",
                     "in_paths", "norm", "activation", "bias"]
    searchable = ("in_channels", "out_channels", "path_count", "routing", "density", "in_paths")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self._largest_arguments["norm"]:
            raise TypeError("MixedMultiPathConv2d needs norm=True (its batch norm is sliced per path)")
        sizes = self._largest_sizes
        del self.mix
        self.routers = self._make_routers(sizes["pin"], sizes["p"], sizes["cin"])

    def sizes(self, arguments: Mapping[str, Any]) -> dict[str, int]:
        return _routed_sizes(arguments["path_count"], arguments["in_paths"], arguments["in_channels"],
                             arguments["out_channels"])

    def layout(self, arguments: Mapping[str, Any]) -> Layout:
        return {**_conv_layout("", "", "cin", "cout", bias=arguments["bias"]),
                **_router_layout("mix.router", f"routers.{arguments['routing']}", arguments["routing"])}

    def soft_forward(self, arguments: Mapping[str, Any], x: torch.Tensor) -> torch.Tensor:
        """``(B, P_in, C_in, H, W)`` at the largest size -> ``(B, P, C_out, H', W')``, softly masked."""
        routed = mix_paths(x, self._soft_routing(arguments["routing"], arguments["density"], x))
        out = self.parallel_forward(routed)
        paths = _greater_than(arguments["path_count"], out.shape[1], x.device)
        channels = _greater_than(arguments["out_channels"], out.shape[2], x.device)
        return out * (paths[:, None] * channels[None, :]).view(1, *out.shape[1:3], 1, 1).to(out.dtype)


class MixedMultiPathLinear(MultiPathMixedOperation, _BuildsItsOwnLayers):
    """Weight-sharing :class:`~mpn_nas.layers.MultiPathLinear`."""

    bound_type = MutableMultiPathLinear
    argument_list = ["in_features", "out_features", "path_count", "routing", "density", "in_paths", "norm",
                     "activation", "bias"]
    searchable = ("in_features", "out_features", "path_count", "routing", "density", "in_paths")

    def __post_init__(self) -> None:
        super().__post_init__()
        arguments = dict(self._largest_arguments, routing="static" if "routing" in self.mutable_arguments else
                         self._largest_arguments["routing"], density=1.0)
        if arguments["routing"] == "none" and arguments["in_paths"] not in (None, arguments["path_count"]):
            arguments["routing"] = "static"
        self.largest = MultiPathLinear(**arguments)
        del self.largest.mix
        sizes = self._largest_sizes
        self.routers = self._make_routers(sizes["pin"], sizes["p"], sizes["cin"])

    def sizes(self, arguments: Mapping[str, Any]) -> dict[str, int]:
        return _routed_sizes(arguments["path_count"], arguments["in_paths"], arguments["in_features"],
                             arguments["out_features"])

    def layout(self, arguments: Mapping[str, Any]) -> Layout:
        layout = {"weight": ("largest.weight", (("p",), ("cin",), ("cout",))),
                  **_norm_layout("norm", "largest.norm", ("p", "cout")),
                  **_router_layout("mix.router", f"routers.{arguments['routing']}", arguments["routing"])}
        if arguments["bias"]:
            layout["bias"] = ("largest.bias", (("p",), ("cout",)))
        return layout

    def soft_forward(self, arguments: Mapping[str, Any], x: torch.Tensor) -> torch.Tensor:
        """``(B, P_in, C_in)`` at the largest size -> ``(B, P, C_out)``, softly masked."""
        routed = mix_paths(x, self._soft_routing(arguments["routing"], arguments["density"], x))
        out = self.largest.parallel_forward(routed)
        paths = _greater_than(arguments["path_count"], out.shape[1], x.device)
        channels = _greater_than(arguments["out_features"], out.shape[2], x.device)
        return out * (paths[:, None] * channels[None, :]).unsqueeze(0).to(out.dtype)


class MixedMultiPathBasicBlock(MultiPathMixedOperation, _BuildsItsOwnLayers):
    """Weight-sharing :class:`~mpn_nas.layers.MultiPathBasicBlock`."""

    bound_type = MutableMultiPathBasicBlock
    argument_list = ["in_channels", "width", "path_count", "in_paths", "routing", "density", "stride", "se"]
    searchable = ("in_channels", "width", "path_count", "in_paths", "routing", "density")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self._largest_arguments["se"]:
            raise TypeError("MixedMultiPathBasicBlock does not support se=True")
        sizes = self._largest_sizes
        self.conv1 = MultiPathConv2d(sizes["cin"], sizes["w"], sizes["p"], stride=self.init_arguments["stride"])
        self.conv2 = MultiPathConv2d(sizes["w"], sizes["w"], sizes["p"], activation=False)
        self.routers = self._make_routers(sizes["pin"], sizes["p"], sizes["cin"])
        self.shortcut_options = self._shortcut_expression()
        if any(_values(self.shortcut_options)):
            self.shortcut = MultiPathConv2d(sizes["cin"], sizes["w"], sizes["p"], kernel_size=1,
                                            stride=self.init_arguments["stride"], activation=False)

    def _shortcut_expression(self) -> Any:
        """Whether a configuration needs a projection shortcut (a boolean expression of the choices)."""
        in_channels = self.mutable_arguments.get("in_channels", self.init_arguments["in_channels"])
        width = self.mutable_arguments.get("width", self.init_arguments["width"])
        if self.init_arguments["stride"] != 1:
            return True
        if isinstance(in_channels, Mutable) or isinstance(width, Mutable):
            return MutableExpression.condition(in_channels == width, False, True)
        return in_channels != width

    def sizes(self, arguments: Mapping[str, Any]) -> dict[str, int]:
        sizes = _routed_sizes(arguments["path_count"], arguments["in_paths"], arguments["in_channels"],
                              arguments["width"])
        return {**sizes, "w": sizes["cout"]}

    def layout(self, arguments: Mapping[str, Any]) -> Layout:
        layout = {**_conv_layout("conv1.", "conv1.", "cin", "w"), **_conv_layout("conv2.", "conv2.", "w", "w"),
                  **_router_layout("conv1.mix.router", f"routers.{arguments['routing']}", arguments["routing"])}
        if arguments["stride"] != 1 or arguments["in_channels"] != arguments["width"]:
            layout.update(_conv_layout("shortcut.", "shortcut.", "cin", "w"))
        return layout

    def soft_forward(self, arguments: Mapping[str, Any], x: torch.Tensor) -> torch.Tensor:
        """``(B, P_in, C_in, H, W)`` at the largest size -> ``(B, P, W, H', W')``, softly masked."""
        routed = mix_paths(x, self._soft_routing(arguments["routing"], arguments["density"], x))
        paths = _greater_than(arguments["path_count"], self._largest_sizes["p"], x.device)
        channels = _greater_than(arguments["width"], self._largest_sizes["w"], x.device)
        mask = (paths[:, None] * channels[None, :]).view(1, *paths.shape, *channels.shape, 1, 1).to(x.dtype)
        out = self.conv2.parallel_forward(self.conv1.parallel_forward(routed) * mask)
        projected = _probability(self._shortcut_distribution(), bool)
        shortcut = 0.0
        if isinstance(projected, torch.Tensor) or projected > 0:
            shortcut = projected * self.shortcut(routed)
        if isinstance(projected, torch.Tensor) or projected < 1:  # identity, channels cut or zero-padded
            identity = routed[:, :, :out.shape[2]]
            if identity.shape[2] < out.shape[2]:
                identity = nn.functional.pad(identity, (0, 0, 0, 0, 0, out.shape[2] - identity.shape[2]))
            shortcut = shortcut + (1 - projected) * identity
        return torch.relu(out + shortcut) * mask

    def _shortcut_distribution(self) -> list[tuple[bool, Any]]:
        if not isinstance(self.shortcut_options, Mutable):
            return [(bool(self.shortcut_options), 1.0)]
        weights = {label: self._softmax(alpha) for label, alpha in self._arch_alpha.items()}
        return list(traverse_all_options(self.shortcut_options, weights=weights))


class _MixedStem(MultiPathMixedOperation, _BuildsItsOwnLayers):
    """Shared by the stems: ``path_count`` parallel stems of ``width`` outputs, as one layer whose
    outputs are sliced path-major; the input (the image) is never sliced."""

    searchable = ("width", "path_count")
    input_sizes = None
    plain_type: type
    layer_layout: Layout  # the stem's own weights, by the plain stem's keys

    def __post_init__(self) -> None:
        super().__post_init__()
        sizes = self._largest_sizes
        self.largest = self.plain_type(self.init_arguments[self.argument_list[0]], sizes["w"], sizes["p"])

    def sizes(self, arguments: Mapping[str, Any]) -> dict[str, int]:
        return {"p": arguments["path_count"], "w": arguments["width"]}

    def layout(self, arguments: Mapping[str, Any]) -> Layout:
        return self.layer_layout

    def soft_forward(self, arguments: Mapping[str, Any], x: torch.Tensor) -> torch.Tensor:
        out = self.largest(x)  # (B, P, W, ...)
        paths = _greater_than(arguments["path_count"], out.shape[1], x.device)
        channels = _greater_than(arguments["width"], out.shape[2], x.device)
        mask = (paths[:, None] * channels[None, :]).view(1, *out.shape[1:3], *[1] * (out.dim() - 3))
        return out * mask.to(out.dtype)


class MixedMultiPathStem(_MixedStem):
    """Weight-sharing :class:`~mpn_nas.layers.MultiPathStem` (searchable ``width`` and ``path_count``)."""

    bound_type = MutableMultiPathStem
    plain_type = MultiPathStem
    argument_list = ["in_channels", "width", "path_count"]
    layer_layout = {"0.weight": ("largest.0.weight", (("p", "w"), None, None, None)),
                    **_norm_layout("1", "largest.1", ("p", "w"))}


class MixedMultiPathDenseStem(_MixedStem):
    """Weight-sharing :class:`~mpn_nas.layers.MultiPathDenseStem` (searchable ``width`` and ``path_count``)."""

    bound_type = MutableMultiPathDenseStem
    plain_type = MultiPathDenseStem
    argument_list = ["in_features", "width", "path_count"]
    layer_layout = {"1.weight": ("largest.1.weight", (("p", "w"), None)),
                    "1.bias": ("largest.1.bias", (("p", "w"),)),
                    **_norm_layout("2", "largest.2", ("p", "w"))}


class MixedPathConcatClassifier(MultiPathMixedOperation, _BuildsItsOwnLayers):
    """Weight-sharing :class:`~mpn_nas.layers.PathConcatClassifier`: columns sliced path-major."""

    bound_type = MutablePathConcatClassifier
    argument_list = ["in_channels", "path_count", "num_classes"]
    searchable = ("in_channels", "path_count")
    input_sizes = ("p", "cin")

    def __post_init__(self) -> None:
        super().__post_init__()
        sizes = self._largest_sizes
        self.largest = PathConcatClassifier(sizes["cin"], sizes["p"], self.init_arguments["num_classes"])

    def sizes(self, arguments: Mapping[str, Any]) -> dict[str, int]:
        return {"p": arguments["path_count"], "cin": arguments["in_channels"]}

    def layout(self, arguments: Mapping[str, Any]) -> Layout:
        return {"weight": ("largest.weight", (None, ("p", "cin"))), "bias": ("largest.bias", (None,))}

    def soft_forward(self, arguments: Mapping[str, Any], x: torch.Tensor) -> torch.Tensor:
        return self.largest(x)  # the input is already softly masked at the largest size


MIXED_OPERATIONS = (MixedMultiPathConv2d, MixedMultiPathLinear, MixedMultiPathBasicBlock, MixedMultiPathStem,
                    MixedMultiPathDenseStem, MixedPathConcatClassifier)


class LabelParameterDict(nn.ParameterDict):
    """``ParameterDict`` keyed by choice labels, which may hold dots (``stage1.paths``): torch refuses
    dots in parameter names, so they are stored as ``::`` and given back as labels."""

    def __setitem__(self, label: str, value: Any) -> None:
        super().__setitem__(label.replace(".", "::"), value)

    def __getitem__(self, label: str) -> Any:
        return super().__getitem__(label.replace(".", "::"))

    def __contains__(self, label: object) -> bool:
        return isinstance(label, str) and super().__contains__(label.replace(".", "::"))

    def __iter__(self):
        return (key.replace("::", ".") for key in super().__iter__())

    def keys(self):
        return list(iter(self))

    def items(self):
        return [(label, self[label]) for label in self]


class DifferentiablePolicy(MixedOpDifferentiablePolicy):
    """NNI's differentiable policy (DARTS, GumbelDARTS) with architecture weights kept in a
    :class:`LabelParameterDict`, so that labels may contain dots."""

    def __init__(self, operation: MixedOperation, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> None:
        operation._arch_alpha = LabelParameterDict()
        for label in operation.simplify():
            if label not in memo:
                raise KeyError(f"architecture weights of {label!r} not found in memo")
            operation._arch_alpha[label] = memo[label]
        operation.arch_parameters = functools.partial(self.arch_parameters, module=operation)
        operation._softmax = mutate_kwargs.get("softmax", nn.Softmax(-1))


class ProxylessMixedOpPolicy(DifferentiablePolicy):
    """Proxyless for the multi-path primitives: one configuration sampled from the architecture
    probabilities per step and run exactly; :meth:`gate` (value 1) sends the gradient of the output
    to the probabilities of the sampled values (NNI 3.0 has no Proxyless mixed operations)."""

    def __init__(self, operation: MixedOperation, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> None:
        super().__init__(operation, memo, mutate_kwargs)
        self._sample: dict[str, Any] = {}
        self._arguments: Optional[dict[str, Any]] = None

    def resample(self, operation: MixedOperation, memo: dict[str, Any]) -> dict[str, Any]:
        result = {label: memo[label] if label in memo else _draw(operation, label, spec)
                  for label, spec in operation.simplify().items()}
        self._sample = result
        self._arguments = {name: value.freeze(result) for name, value in operation.mutable_arguments.items()}
        return result

    def forward_argument(self, operation: MixedOperation, name: str) -> Any:
        if name not in operation.mutable_arguments:
            return operation.init_arguments[name]
        if self._arguments is None:
            self.resample(operation, {})
        return self._arguments[name]

    def gate(self, operation: MixedOperation) -> torch.Tensor:
        return _gate(operation, {label: (spec, self._sample[label]) for label, spec in operation.simplify().items()})


def _draw(module: nn.Module, label: str, spec: Any) -> Any:
    """One value of ``label`` drawn from its architecture probabilities."""
    probabilities = module._softmax(module._arch_alpha[label]).detach()
    return spec.values[int(torch.multinomial(probabilities, 1))]


def _gate(module: nn.Module, chosen: Mapping[str, tuple[Any, Any]]) -> torch.Tensor:
    """``prod(p / p.detach())`` over the chosen values: 1, with the gradient of their probabilities."""
    gate = torch.ones((), device=next(iter(module._arch_alpha.values())).device)
    for label, (spec, value) in chosen.items():
        probability = module._softmax(module._arch_alpha[label])[list(spec.values).index(value)]
        gate = gate * probability / probability.detach()
    return gate


class DifferentiableRepeat(DifferentiableMixedRepeat):
    """NNI's differentiable ``Repeat`` (outputs of every depth mixed by probability), with labels
    that may contain dots."""

    def __init__(self, blocks: list[nn.Module], depth: MutableExpression[int], softmax: nn.Module,
                 alphas: dict[str, Any]) -> None:
        super(DifferentiableMixedRepeat, self).__init__(blocks, depth)
        self._softmax = softmax
        self._arch_alpha = LabelParameterDict(alphas)


class ProxylessRepeat(DifferentiableRepeat):
    """Proxyless ``Repeat``: one depth drawn per step from its probabilities; the output carries the
    :func:`_gate` of that depth. (NNI's ProxylessMixedRepeat needs depth written as binary choices.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._depth: Optional[dict[str, Any]] = None

    def resample(self, memo: dict[str, Any]) -> dict[str, Any]:
        spec = self.depth_choice.simplify()
        self._depth = {label: memo[label] if label in memo else _draw(self, label, choice)
                       for label, choice in spec.items()}
        return dict(self._depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._depth is None:
            self.resample({})
        depth = self.depth_choice.freeze(self._depth)
        for block in list(self.blocks)[:depth]:
            x = block(x)
        return x * _gate(self, {label: (choice, self._depth[label])
                                for label, choice in self.depth_choice.simplify().items()}).to(x.dtype)


def frozen_arguments(operation: MixedOperation, sample: Mapping[str, Any]) -> dict[str, Any]:
    """The plain layer's arguments under ``sample`` (choices and expressions evaluated)."""
    return {**operation.init_arguments,
            **{name: value.freeze(sample) for name, value in operation.mutable_arguments.items()}}


def oneshot_hooks(strategy: Any) -> list[Callable]:
    """Mutation hooks that turn the multi-path primitives (and ``Repeat``) into supernet modules
    under ``strategy`` (pass as ``mutation_hooks=`` to a one-shot strategy, or use
    :class:`MultiPathModelSpace`)."""
    from nni.nas.strategy import DARTS, Proxyless

    if isinstance(strategy, Proxyless):
        policy, repeat = ProxylessMixedOpPolicy, ProxylessRepeat
    elif isinstance(strategy, DARTS):  # GumbelDARTS too
        policy, repeat = DifferentiablePolicy, DifferentiableRepeat
    else:  # sampling strategies: NNI's own policy and Repeat
        policy, repeat = None, None

    def hook(module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> Any:
        if policy is not None:
            mutate_kwargs = {**mutate_kwargs, "mixed_op_sampling": policy}
            if repeat is not None and type(module) is Repeat:
                return repeat.mutate(module, name, memo, mutate_kwargs)
        for operation in MIXED_OPERATIONS:
            mixed = operation.mutate(module, name, memo, mutate_kwargs)
            if mixed is not None:
                return mixed, True  # replaced, and its (plain) children need no hook
        return None

    return [hook]


class MultiPathModelSpace(ModelSpace):
    """``ModelSpace`` whose multi-path primitives work under every NNI one-shot strategy
    (DARTS, GumbelDARTS, RandomOneShot/SPOS, Proxyless). Subclass it instead of ``ModelSpace``."""

    def extra_oneshot_hooks(self, strategy: Any) -> list[Callable]:
        return oneshot_hooks(strategy)


__all__ = ["MultiPathMixedOperation", "MixedMultiPathConv2d", "MixedMultiPathLinear", "MixedMultiPathBasicBlock",
           "MixedMultiPathStem", "MixedMultiPathDenseStem", "MixedPathConcatClassifier", "MIXED_OPERATIONS",
           "LabelParameterDict", "DifferentiablePolicy", "ProxylessMixedOpPolicy", "DifferentiableRepeat",
           "ProxylessRepeat", "frozen_arguments", "oneshot_hooks", "MultiPathModelSpace", "slice_weight"]
