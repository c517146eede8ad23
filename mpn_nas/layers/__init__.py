"""Building blocks: routers, multi-path layers and blocks (pure PyTorch)."""
from .adaptive import (
    BLOCK_KINDS,
    DEFAULT_BLOCK,
    BranchAttention,
    SelectiveKernelBlock,
    SelectiveKernelConv2d,
    SplitAttentionBlock,
    SplitAttentionConv2d,
)
from .blocks import MultiPathBasicBlock
from .ends import MultiPathDenseStem, MultiPathStem, PathConcatClassifier
from .multipath import MultiPathConv2d, MultiPathLinear, MultiPathSqueezeExcitation, RoutedMix, mix_paths
from .routers import (
    ROUTING_TYPES,
    CrossPredictionRouter,
    FeatureDependentRouter,
    IdentityRouter,
    Router,
    StaticRouter,
    build_router,
    density_mask,
    kept_connections,
)

__all__ = [
    "ROUTING_TYPES", "Router", "IdentityRouter", "StaticRouter", "CrossPredictionRouter", "FeatureDependentRouter",
    "build_router", "density_mask", "kept_connections", "RoutedMix", "mix_paths", "MultiPathConv2d",
    "MultiPathLinear", "MultiPathSqueezeExcitation", "MultiPathBasicBlock", "MultiPathStem", "MultiPathDenseStem",
    "PathConcatClassifier", "BLOCK_KINDS", "DEFAULT_BLOCK", "BranchAttention", "SelectiveKernelConv2d",
    "SplitAttentionConv2d", "SelectiveKernelBlock", "SplitAttentionBlock",
]
