"""mpn-nas: multi-path neural networks with data-dependent routing (pure PyTorch core).

``import mpn_nas`` never imports nni; the NNI search spaces live in :mod:`search_spaces`.
"""
from .arch import ARCH_FORMAT, ARCH_VERSION, Arch, ArchError, Stage
from .complexity import Complexity, profile
from .errors import UserError
from .layers import ROUTING_TYPES
from .models import build_model

__version__ = "0.1.0"

__all__ = ["Arch", "ArchError", "Stage", "ARCH_FORMAT", "ARCH_VERSION", "ROUTING_TYPES", "Complexity", "UserError",
           "build_model", "profile", "__version__"]
