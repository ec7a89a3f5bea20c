"""The machine a benchmark ran on, in one line: CPU model, cores, RAM."""

import os
import platform
import re
import subprocess


def cpu_model() -> str:
  """lscpu's model name, else what `platform` knows."""
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return re.search(r"Model name:\s*(.+)", out).group(1).strip()
  except (OSError, AttributeError):
    return platform.processor() or platform.machine()


def ram_gib() -> float:
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def describe() -> str:
  return f"{cpu_model()}, {os.cpu_count()} cores, {ram_gib():.0f} GiB RAM"


def busy_cpu_seconds() -> float:
  """CPU seconds all processes have spent busy since boot (Linux /proc/stat), else 0."""
  try:
    with open("/proc/stat") as f:
      fields = [int(x) for x in f.readline().split()[1:]]
  except OSError:
    return 0.0
  idle = fields[3] + fields[4]  # idle + iowait
  return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
  """User + system CPU seconds of this process's finished children."""
  times = os.times()
  return times.children_user + times.children_system
