"""glibc's malloc, set up for the engine's large, short-lived CPU buffers.

MLX's CPU allocator takes its buffers from malloc. glibc serves blocks above a threshold with their own
mmap, returned to the OS when freed, but it raises that threshold to the size of every such block freed (up
to 32 MB). After the first utterance the generator's 10-30 MB activations therefore come from the heap, whose
freed pages stay resident while live blocks sit above them, so a second long utterance peaks higher than the
first (figures in `bench/README.md`). Setting the threshold explicitly
turns that adjustment off (mallopt(3)); MLX's own buffer cache still recycles the blocks it frees.
"""

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt parameter, from glibc's malloc.h
MMAP_THRESHOLD = 1 << 20  # bytes: blocks from 1 MiB up get their own mmap


def fix_mmap_threshold():
    """Pin glibc's mmap threshold, unless not on glibc or the user set MALLOC_MMAP_THRESHOLD_ themselves.

    Returns the threshold set (bytes), or None when it was left alone."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (musl)
        return None
    return MMAP_THRESHOLD if libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 else None
