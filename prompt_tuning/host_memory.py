"""Giving freed host memory back to the operating system.

XLA's compiler and Flax's op-by-op initialisation free a few hundred MiB of working memory
that glibc's allocator keeps mapped, fragmented across its arenas, so it stays in the
process's resident set. The train step then allocates its temporaries on top of it: measured
on t5_1_1_small (docs/performance.md, "Peak RSS: what the train benchmark holds"), compiling
the train step left 170 MiB that `malloc_trim` returned.
"""

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
  """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
  name = ctypes.util.find_library("c")
  try:
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
  except OSError:
    return None


def release_free_heap() -> bool:
  """Returns the C heap's free pages to the OS; whether anything could be asked (glibc)."""
  trim = _malloc_trim()
  if trim is None:
    return False
  trim(0)
  return True
