"""Strategy state as plain data.

NNI saves a strategy's ``state_dict()`` in the experiment checkpoint with ``torch.save`` and resumes
with ``torch.load``, whose default (``weights_only=True`` since torch 2.6) refuses NNI's label type
(a ``str`` subclass), numpy arrays, frozensets and dataclasses. Strategies here keep only lists,
dicts, strings and numbers in their state, converting with these helpers.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
from numpy.random import RandomState


def plain_sample(sample: Mapping[str, Any]) -> dict:
    """A sample with plain ``str`` labels."""
    return {str(label): value for label, value in sample.items()}


def random_state_to_plain(random_state: RandomState) -> list:
    name, keys, position, has_gauss, cached_gaussian = random_state.get_state()
    return [name, keys.tolist(), position, has_gauss, cached_gaussian]


def random_state_from_plain(plain: list) -> tuple:
    """What ``RandomState.set_state`` takes."""
    name, keys, position, has_gauss, cached_gaussian = plain
    return name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian


def dedup_history_to_plain(history: Iterable[frozenset]) -> list[list[list]]:
    """NNI's ``DeduplicationHelper`` history (frozensets of ``(label, value)`` of flat samples) as
    lists of ``[label, value]`` pairs."""
    return [sorted([str(label), value] for label, value in sample) for sample in history]


def dedup_history_from_plain(plain: Iterable[Iterable[list]]) -> list[frozenset]:
    return [frozenset((label, value) for label, value in sample) for sample in plain]
