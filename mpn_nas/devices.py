"""GPU requests checked before any work starts: a missing GPU is bad input (one line, exit 2), not a
traceback from whatever first touches CUDA (NNI's manager, Lightning, the profiler)."""
from __future__ import annotations

from typing import Optional, Sequence

from .errors import UserError


def visible_gpu_count() -> int:
    """CUDA GPUs this process can use (0 without drivers, or with ``CUDA_VISIBLE_DEVICES=""``)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpu_request(device: Optional[str] = None, gpus: Optional[Sequence[int]] = None) -> None:
    """Raise :class:`UserError` unless every GPU asked for (``device == "cuda"``, indices ``gpus``) is visible."""
    if device != "cuda" and not gpus:
        return
    count = visible_gpu_count()
    seen = "no CUDA GPU is visible" if count == 0 else f"only GPU{'s 0..' if count > 1 else ' '}{count - 1} visible"
    if gpus:
        missing = [index for index in gpus if not 0 <= index < count]
        if missing:
            raise UserError(f"--gpus {','.join(map(str, gpus))} asked for, but {seen}; drop --gpus to run the "
                            "trials on the CPU")
    if device == "cuda" and count == 0:
        raise UserError(f"--device cuda asked for, but {seen}; use --device cpu or auto")
