"""Why a trial failed, told by the trial itself.

A failed trial reports its reason as an intermediate metric ``{"default": 0.0, "failure": reason}``
before it re-raises: metrics are the one channel from a trial to the search that every engine and
training service carries (a module global would stay empty in another process or machine).
``"default"`` keeps NNI's web UI, which plots every metric's default, working for the failed trial.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

FAILURE_KEY = "failure"


def describe_failure(error: BaseException) -> str:
    """A one-line reason: NaN loss, out of memory, or the exception's type and message."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if type(error).__name__ == "NonFiniteLossError":  # by name: this module must stay light (no torch)
        return f"non-finite loss ({text})"
    if isinstance(error, MemoryError) or "out of memory" in text.lower():
        return f"out of memory ({type(error).__name__}: {text})"[:300]
    return f"{type(error).__name__}: {text}"[:300]


def failure_metric(error: BaseException) -> dict:
    """The intermediate metric a failing trial reports."""
    return {"default": 0.0, FAILURE_KEY: describe_failure(error)}


def failure_reason(metric: Any) -> Optional[str]:
    """The reason in a metric of :func:`failure_metric`, else ``None``."""
    return metric.get(FAILURE_KEY) if isinstance(metric, Mapping) else None
