"""benchmarks/train_rss_stages.py measures every stage in a fresh process (tiny shapes)."""

import re

from subprocess_helpers import run_python


def test_every_stage_has_a_row_and_peaks_only_grow():
  out = run_python(
      "from benchmarks import train_rss_stages\n"
      "train_rss_stages.main(['--config', 't5_1_1_tiny', '--batch_size', '2', '--inputs', '8',"
      " '--targets', '4', '--prompt_length', '3', '--steps', '1'])", devices=1)
  rows = re.findall(r"^\| ([^|]+) \| ([\d,]+) \| \+([\d,]+) \| ([\d,]+) \|$", out, re.M)
  assert [r[0].split(" ")[0] for r in rows] == ["python", "import", "import", "random",
                                                "compile", "1"], out
  peaks = [int(r[1].replace(",", "")) for r in rows]
  assert peaks == sorted(peaks) and peaks[0] > 0, out
  assert re.search(r"Peak above the imports: [\d,]+ MiB", out), out
