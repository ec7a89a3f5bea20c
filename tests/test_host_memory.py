"""host_memory.release_free_heap hands freed, fragmented heap pages back to the OS (glibc)."""

import os

import pytest

from prompt_tuning import host_memory

MIB = 2**20


def resident_mib() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


@pytest.mark.skipif(host_memory._malloc_trim() is None, reason="no glibc malloc_trim here")
def test_freed_fragmented_heap_leaves_the_resident_set():
  # 1 KiB objects come from malloc (not Python's small-object pool); keeping every 64th alive
  # leaves the freed ones as holes glibc cannot trim from the top of its heap by itself.
  blocks = [bytes(1024) for _ in range(300_000)]
  kept = blocks[::64]
  del blocks
  before = resident_mib()
  assert host_memory.release_free_heap()
  assert resident_mib() < before - 100, (before, resident_mib())
  del kept


def test_without_malloc_trim_it_is_a_no_op(monkeypatch):
  monkeypatch.setattr(host_memory, "_malloc_trim", lambda: None)
  assert host_memory.release_free_heap() is False
