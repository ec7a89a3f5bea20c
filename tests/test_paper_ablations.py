"""The paper-ablation command (benchmarks/paper_ablations.py) in a minutes-long setting: every
plot and table of docs/paper_reproduction.md is written, no number is missing, and a second
run resumes from the results file without training anything."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

from subprocess_helpers import FAST_COMPILE

REPO = pathlib.Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "paper_reproduction.md"
EXPERIMENTS = ("length", "init", "pretraining", "method")


def _run(tmp_path, docs):
  cmd = [sys.executable, "-m", "benchmarks.paper_ablations", "--seeds", "0", "--steps", "1",
         "--lengths", "1", "2", "--base_length", "2", "--eval_examples", "12",
         "--out_dir", str(tmp_path / "runs"), "--results", str(tmp_path / "results.json"),
         "--docs_dir", str(docs), "--jax_cache", str(tmp_path / "jax_cache")]
  # FAST_COMPILE: the numbers are only checked to be there, not against any other.
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO),
         "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()}
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def _block(doc: str, name: str) -> str:
  return re.search(f"<!-- {name}:begin -->(.*?)<!-- {name}:end -->", doc, re.S).group(1)


def test_every_plot_and_table_is_written_and_a_rerun_resumes(tmp_path):
  docs = tmp_path / "docs"
  docs.mkdir()
  shutil.copy(DOC, docs / DOC.name)  # the real page, with its markers and prose
  first = _run(tmp_path, docs)

  results = json.loads((tmp_path / "results.json").read_text())
  # length 1 and 2 (2 is the base: class labels, LM-adapted, prompt tuning), random and
  # sampled init, span corruption, model tuning, prompt design: 7 distinct runs.
  assert len(results) == 7, sorted(results)
  assert all(0 <= r["accuracy"] <= 100 and r["seconds"] > 0 for r in results.values())

  doc = (docs / DOC.name).read_text()
  rows = {"length": ["1", "2"], "init": ["random uniform", "sampled vocab", "class labels"],
          "pretraining": ["span corruption", "span corruption + LM adaptation"],
          "method": ["prompt tuning", "model tuning", "prompt design"]}
  for name in EXPERIMENTS:
    png = docs / f"paper_{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    table = _block(doc, f"paper_{name}")
    for label in rows[name]:
      row = re.search(rf"^\| {re.escape(label)} \| (\d+\.\d) \| (\d+\.\d) \|$", table, re.M)
      assert row, (label, table)
  assert "nan" not in doc.lower()
  assert "7 runs" in _block(doc, "paper_setting")
  inspection = _block(doc, "paper_inspection")
  assert "nearest tokens" in inspection
  assert re.search(r"\d of all 2 rows have a class label", inspection), inspection
  assert (tmp_path / "results.prompt.npy").exists()

  # Resume: everything is in the results file, so nothing trains again.
  second = _run(tmp_path, docs)
  assert "wordnet_topic/" in first and "wordnet_topic/" not in second.split("Prompt length")[0]
  assert json.loads((tmp_path / "results.json").read_text()) == results
