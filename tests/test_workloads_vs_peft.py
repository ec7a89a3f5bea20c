"""benchmarks/workloads_vs_peft.py end to end on the tiny architecture (2 workers, every workload)."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from benchmarks import workloads_vs_peft as bench  # noqa: E402
from tests.subprocess_helpers import FAST_COMPILE, REPO  # noqa: E402

FLAGS = ["--config", "t5_1_1_tiny", "--batch_size", "2", "--inputs", "8", "--targets", "4",
         "--prompt_length", "3", "--decode_tokens", "3", "--rounds", "2", "--calls", "1",
         "--warmup", "1"]


@pytest.fixture(scope="module")
def lines():
  # Only the workers' compile times matter here, and the benchmark's numbers are not checked.
  env = {**os.environ, "XLA_FLAGS": FAST_COMPILE}
  proc = subprocess.run([sys.executable, "-m", "benchmarks.workloads_vs_peft", *FLAGS],
                        capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
  assert proc.returncode == 0, proc.stderr[-5000:]
  return [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]


def test_every_workload_and_framework_reports_positive_rates(lines):
  per = {(l["workload"], l["framework"]): l for l in lines if "rate_median" in l}
  assert set(per) == {(w, f) for w in bench.WORKLOADS for f in ("jax", "peft")}
  for (workload, framework), line in per.items():
    assert 0 < line["rate_min"] <= line["rate_median"] <= line["rate_max"], line
    assert line["unit"] == ("new tokens/s" if workload in ("greedy", "beam") else "examples/s")
    assert line["peak_rss_mib"] >= line["rss_after_imports_mib"] > 0
    assert line["flops_hand"] > 0 and line["matmul_fraction"] > 0
    if framework == "jax":
      assert line["compiled_memory"]["argument"] > 0, line
    else:
      assert line["flops_xla"] is None and line["compiled_memory"] is None


def test_ratio_lines_and_matmul_lines(lines):
  ratios = {l["workload"]: l for l in lines if "ratio_median" in l}
  assert set(ratios) == set(bench.WORKLOADS)
  assert all(0 < r["ratio_min"] <= r["ratio_median"] <= r["ratio_max"] for r in ratios.values())
  matmul = {l["framework"]: l for l in lines if "matmul_flops_per_s_start" in l}
  assert set(matmul) == {"jax", "peft"}
  assert all(m["flops_per_s"] > 0 and m["matmul_flops_per_s_end"] > 0 for m in matmul.values())


def test_hand_flops_near_xla(lines):
  # The tiny model (d_model 4, 32k vocabulary) is all softmax and optimizer, which only XLA
  # counts, and XLA counts a decoding loop's body once: a loose factor only.
  for line in lines:
    if line.get("framework") == "jax" and "flops_hand" in line:
      assert 0.1 < line["flops_hand"] / line["flops_xla"] < 10, line


def test_matmul_flops_by_hand():
  """The count for a one-layer, one-head model, worked out product by product."""
  arch = {"emb_dim": 2, "num_heads": 1, "head_dim": 3, "mlp_dim": 5, "vocab_size": 7,
          "num_encoder_layers": 1, "num_decoder_layers": 1, "mlp_activations": ["relu"]}
  shapes = {"batch_size": 1, "inputs": 4, "targets": 2, "prompt_length": 1, "decode_tokens": 2}
  s = 5  # inputs + prompt
  enc_w = 2 * s * (4 * 2 * 3 + 2 * 2 * 5)  # q, k, v, o; wi, wo
  enc_a = 2 * 2 * s * s * 3  # q.k and p.v
  cross_kv = 2 * s * 2 * 2 * 3
  row = 2 * (6 * 2 * 3 + 2 * 2 * 5) + 2 * 2 * 7  # self q/k/v/o, cross q/o, MLP; logits
  dec_a = 2 * 2 * 3 * (2 * 2 + 2 * s)  # self over 2 targets, cross over s positions
  forward = enc_w + enc_a + cross_kv + 2 * row + dec_a
  assert bench.matmul_flops(arch, "score", shapes) == forward
  assert bench.matmul_flops(arch, "train_prompt", shapes) == (
      2 * (enc_w + cross_kv + 2 * row) + 3 * (enc_a + dec_a))
  steps_a = 2 * 2 * 3 * ((1 + 2) + 2 * s)  # cache lengths 1 and 2, cross over s each step
  assert bench.matmul_flops(arch, "greedy", shapes) == (
      enc_w + enc_a + cross_kv + 2 * row + steps_a)
  model = bench.matmul_flops(arch, "train_model", shapes)
  s = 4  # no prompt
  assert model == 3 * (2 * s * (4 * 2 * 3 + 2 * 2 * 5) + 2 * s * 2 * 2 * 3 + 2 * row
                       + 2 * 2 * s * s * 3 + 2 * 2 * 3 * (2 * 2 + 2 * s))


def test_worker_errors_reach_the_driver():
  """A worker that dies surfaces in the driver with its stderr (here argparse's complaint,
  before any heavy import, so the test is fast)."""
  client = bench.Client("peft", [*FLAGS, "--rounds", "0"])
  try:
    with pytest.raises(RuntimeError, match=r"(?s)peft worker exited \(2\).*--rounds"):
      client.ask("hello")
  finally:
    client.close()
