"""How the C allocator treats large freed blocks, for long CPU jobs (the alignment trainer's SAM teacher).

glibc hands a freed block above its mmap threshold (adjusted at run time, at most 32 MiB), and free memory
above its trim threshold at the top of its heap, back to the operating system. The next allocation of
that size gets fresh pages, each zeroed and mapped by a page fault on first touch. A loop that allocates
and frees tens of MiB per step, as SAM's decoder does for a few prompts at 1024 px, then spends a large
part of its time in page faults, and more the more prompts share a call. Raising both thresholds keeps
freed blocks in the heap for reuse (docs/alignment.md#sam-teacher-on-the-cpu).
"""

from __future__ import annotations

import ctypes
import functools
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc's malloc.h)
MMAP_THRESHOLD = 256 * 2**20  # blocks below this come from the heap and are reused when freed
TRIM_THRESHOLD = 512 * 2**20  # free memory kept at the top of the heap


@functools.lru_cache(maxsize=None)
def reuse_freed_memory() -> bool:
    """Make glibc keep freed blocks of up to MMAP_THRESHOLD for reuse, and up to TRIM_THRESHOLD of free
    memory at the top of its heap, instead of returning them to the OS. It holds for the whole process,
    whose resident memory then stays near its peak; meant for training processes. Returns whether it
    applied (False where the C library is not glibc)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
