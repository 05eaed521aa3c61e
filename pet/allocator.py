"""Keep freed memory inside the process, so that large tensors do not page-fault at every call.

On a CPU every intermediate tensor of an evaluation is a malloc'd block. glibc serves large blocks
with fresh pages from the kernel (mmap, or heaps that it shrinks again), returns them at free, and
the next evaluation pays a page fault for every 4 KiB it touches again (on a 512-molecule water
box the forward and backward touch ~1 GB). :func:`retain_freed_memory` tells glibc to keep that
memory for reuse instead (effect measured in docs/performance.md). The price: the process's
resident memory stays at its peak.
"""

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
"""mallopt parameters of glibc's <malloc.h>."""

MMAP_THRESHOLD = 1 << 30
"""Blocks up to this size (bytes) come from the heap instead of their own mapping."""
TRIM_THRESHOLD = (1 << 31) - 1
"""Free memory at the top of the heap that glibc keeps before giving any back (bytes)."""


def retain_freed_memory() -> bool:
    """Have glibc's malloc reuse freed memory instead of returning it to the kernel.

    Process-wide; call it once at start-up of a process that evaluates models repeatedly
    (pet-driver does). One malloc arena for all threads (the driver's socket threads take turns
    on the model anyway), large blocks from the heap, no trimming. Returns True when applied,
    False where the C library is not glibc (nothing changes then).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    settings = ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
