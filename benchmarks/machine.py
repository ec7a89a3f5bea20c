"""The machine a benchmark runs on: a one-line description, and how busy its cores are."""

import os
import pathlib
import platform
import re
import subprocess
import time


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
  return f"{cpu_model()}, {os.cpu_count()} cores, {ram_gib():.1f} GiB RAM"


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


def wait_until_idle(min_idle: float = 0.9, window_s: float = 5.0, timeout_s: float = 600.0
                    ) -> bool:
  """Blocks until the cores were at least `min_idle` idle over a `window_s` sample; False if
  that did not happen within `timeout_s` (timing then goes ahead on a busy machine)."""
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    before = busy_cpu_seconds()
    time.sleep(window_s)
    if (busy_cpu_seconds() - before) / (window_s * os.cpu_count()) <= 1 - min_idle:
      return True
  return False


DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def write_docs_block(name: str, text: str, path: pathlib.Path = DOCS) -> None:
  """Replaces the text between `<!-- {name}:begin -->` and `<!-- {name}:end -->` in `path`."""
  begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
  doc = path.read_text()
  if begin not in doc or end not in doc:
    raise ValueError(f"{path} lacks the markers {begin} ... {end}; add them where the table "
                     "belongs.")
  block = f"{begin}\n{text}\n{end}"
  path.write_text(re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, doc,
                         flags=re.S))
