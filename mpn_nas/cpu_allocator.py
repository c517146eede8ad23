"""Keep freed tensor memory in the process on CPU, so large tensors are reused instead of faulted in anew.

glibc's malloc hands blocks of a few MiB back to the operating system when they are freed; every
training step then allocates them again and pays a page fault per 4 KiB at first touch. A routed
layer allocates two more full-size tensors per step than a plain one (the mixed input and its
gradient), so on CPU that cost showed up as routing overhead: at p = 4, C = 32, 16x16 the routed
convolution measured 1.11-1.28x the unrouted one with glibc's defaults and 1.09-1.15x with memory
kept (``python benchmarks/layer_speed.py --default-malloc`` against the default). PyTorch's CPU
tuning guide makes the same point with jemalloc or tcmalloc.
"""
from __future__ import annotations

import ctypes
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's largest accepted mmap threshold on 64-bit systems; bigger blocks are still mapped and unmapped.
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
_applied = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve blocks up to 32 MiB from the heap and never trim it.

    Process-wide and idempotent; returns False where the C library is not glibc (nothing changed).
    """
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
