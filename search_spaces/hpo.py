"""The same choices in NNI's HPO search-space format, for ``nnictl`` tuners."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from mpn_nas.files import atomic_write_text

from .config import SpaceConfig


def hpo_search_space(config: SpaceConfig) -> dict:
    """``{"stage1.paths": {"_type": "choice", "_value": [1, 2, 4]}, ...}`` for every label of the space."""
    return {label: {"_type": "choice", "_value": values} for label, values in config.labels().items()}


def write_search_space(config: SpaceConfig, path: Union[str, Path]) -> dict:
    """Validate with NNI's own checker, then write atomically; returns the search space."""
    from nni.common.hpo_utils.validation import validate_search_space

    space = hpo_search_space(config)
    validate_search_space(space, raise_exception=True)
    atomic_write_text(Path(path), json.dumps(space, indent=2) + "\n")
    return space
