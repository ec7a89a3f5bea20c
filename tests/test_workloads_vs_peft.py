"""benchmarks/workloads_vs_peft.py end to end on the tiny architecture (2 workers, every workload)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from benchmarks import decoder_workloads as decoder  # noqa: E402
from benchmarks import workloads_vs_peft as bench  # noqa: E402
from tests.subprocess_helpers import FAST_COMPILE, REPO  # noqa: E402

FLAGS = ["--config", "t5_1_1_tiny", "--batch_size", "2", "--inputs", "8", "--targets", "4",
         "--prompt_length", "3", "--decode_tokens", "3", "--rounds", "2", "--calls", "1",
         "--warmup", "1"]


def _benchmark_lines(flags: list[str]) -> list[dict]:
  """The JSON lines of `python -m benchmarks.workloads_vs_peft FLAGS`. Only the workers'
  compile times matter here, and the benchmark's numbers are not checked."""
  env = {**os.environ, "XLA_FLAGS": FAST_COMPILE}
  proc = subprocess.run([sys.executable, "-m", "benchmarks.workloads_vs_peft", *flags],
                        capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
  assert proc.returncode == 0, proc.stderr[-5000:]
  return [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]


@pytest.fixture(scope="module")
def lines():
  return _benchmark_lines(FLAGS)


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


# ---- decoder-only (benchmarks/decoder_workloads.py) ---------------------------------------------

DECODER_FLAGS = ["--config", "llama_tiny", "--batch_size", "2", "--inputs", "8", "--targets",
                 "4", "--prompt_length", "3", "--decode_tokens", "3", "--rounds", "1",
                 "--calls", "1", "--warmup", "0"]


@pytest.fixture(scope="module")
def decoder_lines():
  return _benchmark_lines(DECODER_FLAGS)


def test_decoder_workloads_side_by_side_on_the_same_weights(decoder_lines):
  """Every decoder workload has both sides' rates and a ratio, and both sides computed the
  same thing: one random checkpoint and one prompt, so PEFT's target scores equal ours and
  the greedy tokens are the same."""
  per = {(l["workload"], l["framework"]): l for l in decoder_lines if "rate_median" in l}
  assert set(per) == {(w, f) for w in decoder.WORKLOADS for f in ("jax", "peft")}
  for (workload, _), line in per.items():
    assert 0 < line["rate_min"] <= line["rate_median"] <= line["rate_max"], line
    assert line["unit"] == ("new tokens/s" if workload.startswith("greedy") else "examples/s")
    assert line["peak_rss_mib"] >= line["rss_after_imports_mib"] > 0
  ratios = {l["workload"]: l for l in decoder_lines if "ratio_median" in l}
  assert set(ratios) == set(decoder.WORKLOADS)
  assert ratios["score"]["scores_max_abs_diff"] <= 1e-4, ratios["score"]
  for workload, rows in (("greedy", 2), ("greedy_b1", 1)):
    jax_tokens, peft_tokens = (np.asarray(per[(workload, f)]["tokens"]) for f in ("jax", "peft"))
    assert jax_tokens.shape == peft_tokens.shape == (rows, 3)
    np.testing.assert_array_equal(jax_tokens, peft_tokens)
    assert ratios[workload]["tokens_equal"] == 1.0
  # XLA also counts norms, softmax and the loss, but the model computes the shared prompt's
  # keys and values once per batch, where the hand count (PEFT's computation) has them in
  # every row: at most (batch - 1) / batch of the prompt's share of the FLOPs fewer.
  for workload in ("train_prompt", "score"):
    line = per[(workload, "jax")]
    assert 0.7 < line["flops_hand"] / line["flops_xla"] <= 1.5, line


def test_decoder_matmul_flops_by_hand():
  """A one-layer, one-head gated model, product by product."""
  sizes = {"d": 2, "heads": 1, "kv_heads": 1, "head_dim": 3, "mlp": 5, "vocab": 7,
           "layers": 1, "gated": True}
  shapes = {"batch_size": 2, "inputs": 2, "targets": 1, "prompt_length": 1, "decode_tokens": 2}
  row = 2 * (2 * 3) * 4 + 2 * (2 * 5) * 3  # q, k, v, o; wi_0, wi_1, wo: 108 a position
  logits = 2 * 2 * 7
  attention = lambda q, k: 2 * 2 * 3 * q * k  # q.k and p.v
  length = 4  # prompt + inputs + targets
  forward = 2 * (length * (row + logits) + attention(length, length))
  assert decoder.matmul_flops(sizes, "score", shapes) == forward == 2 * 736
  assert decoder.matmul_flops(sizes, "train_prompt", shapes) == 2 * (
      2 * length * (row + logits) + 3 * attention(length, length))
  # Prefill of 3 positions (logits of the last only), then 1 step attending over 3 + 1 keys.
  one_row = 3 * row + logits + attention(3, 3) + (row + logits) + attention(1, 4)
  assert decoder.matmul_flops(sizes, "greedy", shapes) == 2 * one_row == 2 * 644
  assert decoder.matmul_flops(sizes, "greedy_b1", shapes) == one_row


def test_decoder_config_refuses_t5_workloads():
  with pytest.raises(SystemExit, match=r"--workloads beam: not a workload of --config "
                                       r"llama_tiny; choose from train_prompt"):
    bench.main(["--config", "llama_tiny", "--workloads", "beam"])
