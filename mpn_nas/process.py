"""Process-wide settings of the programs this project ships: the ``mpn-nas`` command line, the
trial processes NNI starts, the benchmark scripts. Library calls (``train``, ``build_model``, the
spaces) leave the process as they found it; only these entry points call :func:`configure_process`.
"""
from __future__ import annotations

import logging
import warnings

from .cpu_allocator import keep_freed_memory

# Lightning's banners go through its rank_zero loggers. Their packages reset their own level to INFO
# when imported, which may be after this call; the level of these explicit children survives that.
LIGHTNING_LOGGERS = tuple(f"{package}{suffix}" for package in ("pytorch_lightning", "lightning.pytorch",
                                                              "lightning_fabric")
                          for suffix in ("", ".utilities.rank_zero"))
# Messages that say nothing a user of these programs can act on.
_IGNORED_WARNINGS = (
    ".*does not have many workers.*",  # Lightning: on CPU, loader workers would compete with training
    ".*isinstance.treespec, LeafSpec.*",  # torch.utils._pytree deprecation, raised inside Lightning
    ".*is found to be not a nn.Module.*",  # NNI 3.0 scans torch.nn at import; newer classes are unknown to it
)


def configure_process(show_warnings: bool = False) -> None:
    """Quiet Lightning's start-up banners and known-harmless warnings (all warnings unless
    ``show_warnings``), and keep freed memory in the process on CPU
    (:func:`mpn_nas.cpu_allocator.keep_freed_memory`). Idempotent."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if show_warnings:
        for message in _IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
    else:  # library warnings (NNI's among them) are not for the command line's users
        warnings.filterwarnings("ignore")
    keep_freed_memory()
