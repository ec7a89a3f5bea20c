"""Prompt-tuning train step and greedy decoding, this library (JAX) vs. the PyTorch PEFT peer.

    python -m benchmarks.step_time_vs_peft [--config t5_1_1_small] [--batch_size 8]
        [--inputs 128] [--targets 8] [--prompt_length 20] [--steps 10] [--write_docs]

Both sides get the same random-weight T5 architecture, the same token ids, the same prompt
length and Adafactor at the paper's settings (lr 0.3 constant, decay 0.8, no parameter scaling,
weight decay 1e-5, update clipping 1.0), float32 on CPU:

  jax   `train.train_step` jitted with the state donated, as the training job runs it; XLA's
        CPU runtime uses every core it sees.
  peft  transformers `T5ForConditionalGeneration` from a `T5Config` of the same architecture,
        `peft.get_peft_model(PromptTuningConfig(SEQ_2_SEQ_LM, num_virtual_tokens=P,
        num_transformer_submodules=1))` (the prompt on the encoder only, as in the paper and
        here; PEFT's seq2seq default allocates a second, unused set of P rows), an untied
        `lm_head` (see `untie_lm_head`), `transformers.optimization.Adafactor`, and
        `torch.set_num_threads(--threads)`.

Each framework runs in its own subprocess so its peak RSS (getrusage ru_maxrss) is its own;
RSS right after the imports is reported too. Step times are per step, synchronised
(block_until_ready / torch's synchronous CPU ops), the median over --steps after --warmup
steps (the first step, which for JAX includes compilation, is reported apart). Decoding:
greedy, exactly --decode_tokens new tokens (EOS disabled on both sides, so neither stops
early), median of --decode_repeats after one warm-up call.

Shared machines: each run starts once the cores are idle and is rerun (--retries) while other
processes took more than --max_others_share of the cores during it; the share of the last run
is the table's "CPU used by others" column.
"""

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

from benchmarks import machine

REPO = pathlib.Path(__file__).resolve().parents[1]
FRAMEWORKS = ("jax", "peft")
# The paper's Adafactor: constant lr 0.3, decay 0.8, no parameter scaling, weight decay 1e-5.
LR, DECAY, WEIGHT_DECAY, CLIP = 0.3, 0.8, 1e-5, 1.0


# ---- shared -------------------------------------------------------------------------------------


def make_batch(args) -> dict:
  """Full-length rows of random non-special token ids (no padding), identical on both sides."""
  rng = np.random.default_rng(0)
  vocab = args.arch["vocab_size"]
  inputs = rng.integers(3, vocab, (args.batch_size, args.inputs), dtype=np.int32)
  targets = rng.integers(3, vocab, (args.batch_size, args.targets), dtype=np.int32)
  return {"encoder_input_tokens": inputs,
          "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),  # start token 0
          "decoder_target_tokens": targets,
          "decoder_loss_weights": np.ones_like(targets)}


def architecture(name: str) -> dict:
  """The named T5 size as plain values. Resolved by the driver and handed to the workers
  (--arch), so the PEFT worker never imports JAX and its RSS stays its own."""
  from prompt_tuning.t5 import config as t5_config
  cfg = t5_config.get_config(name)
  return {k: getattr(cfg, k) for k in (
      "vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
      "num_decoder_layers", "logits_via_embedding", "relative_attention_num_buckets",
      "relative_attention_max_distance", "layer_norm_epsilon")} | {
          "mlp_activations": list(cfg.mlp_activations)}


def timed(fn, warmup: int, repeats: int) -> tuple[list[float], list[float]]:
  """(warm-up times, timed times) in seconds of `fn()`, which must block until done."""
  def once():
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
  return [once() for _ in range(warmup)], [once() for _ in range(repeats)]


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def summary(framework, warm, times, dec_warm, dec_times, rss_train, args, **extra) -> dict:
  step = statistics.median(times)
  return {"framework": framework, "first_step_s": warm[0], "median_step_s": step,
          "steps_per_s": 1 / step, "examples_per_s": args.batch_size / step,
          "peak_rss_train_mib": rss_train,
          "decode_first_s": dec_warm[0] if dec_warm else None,
          "decode_median_s": statistics.median(dec_times) if dec_times else None,
          "peak_rss_mib": peak_rss_mib(), **extra}


# ---- workers (one per subprocess) ---------------------------------------------------------------


def run_jax(args) -> dict:
  """This library's prompt-tuning step and greedy decoder."""
  import jax
  from prompt_tuning import model as model_lib
  from prompt_tuning import optim, train
  from prompt_tuning.t5 import config as t5_config
  rss_imports = peak_rss_mib()  # prompt_tuning.train imports TensorFlow (seqio) with it

  config = t5_config.get_config(args.config, dtype="float32")
  # eos_id -1 never matches a token: every row decodes exactly --decode_tokens tokens.
  model = model_lib.PromptedT5Model(config, prompt_length=args.prompt_length, eos_id=-1)
  trainable, frozen = optim.partition(model.random_params(jax.random.PRNGKey(0)),
                                      optim.PROMPT_REGEX)
  optimizer = optim.adafactor(learning_rate=LR, decay_rate=DECAY,
                              weight_decay_rate=WEIGHT_DECAY, clipping_threshold=CLIP)
  box = {"state": train._initial_state(optimizer, trainable)}
  batch = jax.device_put(make_batch(args))
  seed, losses = jax.random.PRNGKey(1), []
  start = time.perf_counter()
  step_fn = train.compile_step(model, optimizer, box["state"], frozen, batch, seed)
  compile_s = time.perf_counter() - start

  def step():
    box["state"], metrics = step_fn(box["state"], frozen, batch, seed)
    losses.append(float(jax.block_until_ready(metrics)["loss"]))

  warm, times = timed(step, args.warmup, args.steps)
  warm[0] += compile_s  # "first step" includes the compilation, as on the PEFT side
  rss_train = peak_rss_mib()
  params = optim.merge(box["state"]["trainable"], frozen)
  dec_warm, dec_times = jax_decode_times(model, params, batch["encoder_input_tokens"], args)
  return summary("jax", warm, times, dec_warm, dec_times, rss_train, args,
                 rss_after_imports_mib=rss_imports, first_loss=losses[0],
                 last_loss=losses[-1],
                 params=int(sum(x.size for x in jax.tree.leaves(frozen))),
                 trainable=int(trainable["prompt"]["prompt"].size),
                 threads=f"{os.cpu_count()} (all cores: XLA's default)",
                 optimizer="optax.adafactor (prompt_tuning.optim)",
                 version=f"jax {jax.__version__}")


def jax_decode_times(model, params, inputs, args) -> tuple[list[float], list[float]]:
  """`timed` greedy decoding (jit of `model.predict`); ([], []) when --decode_tokens is 0."""
  import functools
  import jax
  if not args.decode_tokens:
    return [], []
  decode = jax.jit(functools.partial(model.predict, method="greedy",
                                     max_decode_length=args.decode_tokens))
  batch, out = {"encoder_input_tokens": inputs}, {}
  times = timed(lambda: out.update(tokens=jax.block_until_ready(decode(params, batch))), 1,
                args.decode_repeats)
  assert out["tokens"].shape == (args.batch_size, args.decode_tokens), out["tokens"].shape
  return times


def hf_config(arch: dict):
  """A transformers T5Config with the architecture `arch` (see `architecture`), dropout off."""
  from transformers import T5Config
  gated = tuple(arch["mlp_activations"]) == ("gelu", "linear")
  return T5Config(
      vocab_size=arch["vocab_size"], d_model=arch["emb_dim"], d_kv=arch["head_dim"],
      d_ff=arch["mlp_dim"], num_layers=arch["num_encoder_layers"],
      num_decoder_layers=arch["num_decoder_layers"], num_heads=arch["num_heads"],
      relative_attention_num_buckets=arch["relative_attention_num_buckets"],
      relative_attention_max_distance=arch["relative_attention_max_distance"],
      layer_norm_epsilon=arch["layer_norm_epsilon"],
      feed_forward_proj="gated-gelu" if gated else "relu",
      tie_word_embeddings=arch["logits_via_embedding"], dropout_rate=0.0,
      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def untie_lm_head(model):
  """Gives `model` its own output projection, as T5 1.1 (and our `logits_dense`) has.

  transformers 5 ties `lm_head` to the input embedding whatever `tie_word_embeddings` says
  (the flag only turns off the d_model**-0.5 rescaling); untied, both sides hold the same
  weights. Initialised like T5X's (std d_model**-0.5), so the first loss is near ln(vocab).
  """
  import torch
  if model.lm_head.weight is model.shared.weight:
    weight = torch.empty_like(model.shared.weight).normal_(std=model.config.d_model ** -0.5)
    model.lm_head.weight = torch.nn.Parameter(weight)
  return model


def peft_optimizer(params):
  """transformers' Adafactor at the paper's settings (its decay_rate is the negated exponent)."""
  from transformers.optimization import Adafactor
  return Adafactor(params, lr=LR, clip_threshold=CLIP, decay_rate=-DECAY, beta1=None,
                   weight_decay=WEIGHT_DECAY, scale_parameter=False, relative_step=False,
                   warmup_init=False), "transformers.optimization.Adafactor"


def run_peft(args) -> dict:
  """The PyTorch peer: transformers T5 + PEFT prompt tuning."""
  import peft
  import torch
  import transformers
  rss_imports = peak_rss_mib()

  torch.set_num_threads(args.threads)
  # PEFT at its best: without flush-to-zero its step slows about 1.8x on this CPU once the
  # updated prompt makes denormal floats appear (measured: 1.3 s -> 2.3 s a step).
  torch.set_flush_denormal(True)
  torch.manual_seed(0)
  model = peft_model(args)
  trainable = [p for p in model.parameters() if p.requires_grad]
  optimizer, opt_name = peft_optimizer(trainable)
  b = {k: torch.from_numpy(v).long() for k, v in make_batch(args).items()}
  mask = torch.ones_like(b["encoder_input_tokens"])
  model.train()
  losses = []

  def step():
    optimizer.zero_grad(set_to_none=True)
    out = model(input_ids=b["encoder_input_tokens"], attention_mask=mask,
                decoder_input_ids=b["decoder_input_tokens"], labels=b["decoder_target_tokens"])
    out.loss.backward()
    optimizer.step()
    losses.append(out.loss.item())

  warm, times = timed(step, args.warmup, args.steps)
  rss_train = peak_rss_mib()
  dec_warm, dec_times = peft_decode_times(model, b["encoder_input_tokens"], mask, args)
  return summary("peft", warm, times, dec_warm, dec_times, rss_train, args,
                 rss_after_imports_mib=rss_imports, first_loss=losses[0],
                 last_loss=losses[-1],
                 params=sum(p.numel() for p in model.parameters() if not p.requires_grad),
                 trainable=sum(p.numel() for p in trainable), threads=torch.get_num_threads(),
                 optimizer=opt_name,
                 version=f"torch {torch.__version__}, transformers {transformers.__version__}, "
                         f"peft {peft.__version__}")


def peft_model(args):
  """Random T5 of `args.arch` wrapped by PEFT prompt tuning, the prompt on the encoder only."""
  import peft
  import transformers
  base = transformers.T5ForConditionalGeneration(hf_config(args.arch))
  if not args.arch["logits_via_embedding"]:
    base = untie_lm_head(base)
  return peft.get_peft_model(base, peft.PromptTuningConfig(
      task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=args.prompt_length,
      num_transformer_submodules=1))


def peft_decode_times(model, inputs, mask, args) -> tuple[list[float], list[float]]:
  """`timed` greedy `generate`; ([], []) when --decode_tokens is 0."""
  import torch
  if not args.decode_tokens:
    return [], []
  model.eval()
  out = {}

  def decode():
    with torch.no_grad():  # eos None: no early stop, exactly decode_tokens new tokens
      out["tokens"] = model.generate(
          input_ids=inputs, attention_mask=mask, do_sample=False, num_beams=1,
          max_new_tokens=args.decode_tokens, min_new_tokens=args.decode_tokens,
          eos_token_id=None)
  times = timed(decode, 1, args.decode_repeats)
  # generate returns the start token too.
  assert out["tokens"].shape == (args.batch_size, args.decode_tokens + 1), out["tokens"].shape
  return times


# ---- driver -------------------------------------------------------------------------------------


def run_worker(framework: str, argv: list[str]) -> dict:
  """Runs one framework in a fresh interpreter; returns its JSON summary."""
  cmd = [sys.executable, "-m", "benchmarks.step_time_vs_peft", "--worker", framework, *argv]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
  busy, own, start = (machine.busy_cpu_seconds(), machine.children_cpu_seconds(),
                      time.perf_counter())
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(f"{framework} worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  # CPU time other processes took from the cores while this worker ran: timings are only
  # comparable when it is near zero (oversubscribed cores slow torch's threads most).
  others = ((machine.busy_cpu_seconds() - busy) - (machine.children_cpu_seconds() - own))
  share = max(others, 0.0) / ((time.perf_counter() - start) * os.cpu_count())
  return {**json.loads(proc.stdout.strip().splitlines()[-1]), "others_cpu_share": share}


def run_clean(framework: str, argv: list[str], max_share: float, retries: int) -> dict:
  """`run_worker` once the cores are idle, rerun while other processes took more than
  `max_share` of the cores; the last result is kept either way, its share in the table."""
  for attempt in range(retries + 1):
    machine.wait_until_idle()
    result = run_worker(framework, argv)
    print(json.dumps(result), flush=True)
    if result["others_cpu_share"] <= max_share:
      break
    print(f"warning: other processes used {100 * result['others_cpu_share']:.0f}% of the "
          f"cores during the {framework} run (attempt {attempt + 1}); times are not clean.",
          file=sys.stderr, flush=True)
  return result


def markdown_table(results: list[dict], args) -> str:
  def ms(s):
    return "n/a" if s is None else f"{1000 * s:,.0f}"
  head = ("| framework | median step ms | steps/s | examples/s | first step ms | "
          f"greedy {args.decode_tokens} tokens ms | new tokens/s | RSS after imports MiB | "
          "peak RSS after training MiB | peak RSS MiB | frozen params | trainable | "
          "loss first → last | CPU used by others |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in results:
    lines.append(
        f"| {r['framework']} | {ms(r['median_step_s'])} | {r['steps_per_s']:.2f} | "
        f"{r['examples_per_s']:.1f} | {ms(r['first_step_s'])} | {ms(r['decode_median_s'])} | "
        f"{_tokens_per_s(r, args)} | "
        f"{r['rss_after_imports_mib']:,.0f} | {r['peak_rss_train_mib']:,.0f} | "
        f"{r['peak_rss_mib']:,.0f} | {r['params']:,} | {r['trainable']:,} | "
        f"{r['first_loss']:.3f} → {r['last_loss']:.3f} | "
        f"{100 * r['others_cpu_share']:.0f}% |")
  by = {r["framework"]: r for r in results}
  if {"jax", "peft"} <= set(by):
    jax_r, peft_r = by["jax"], by["peft"]
    ratio = lambda a, b: "n/a" if not a or not b else f"{b / a:.2f}x"
    lines += ["", f"jax / peft: train step {ratio(jax_r['median_step_s'], peft_r['median_step_s'])}"
              f" PEFT's examples/s; greedy decoding "
              f"{ratio(jax_r['decode_median_s'], peft_r['decode_median_s'])} PEFT's new tokens/s."]
  return "\n".join(lines)


def _tokens_per_s(r: dict, args) -> str:
  if not r["decode_median_s"]:
    return "n/a"
  return f"{args.batch_size * args.decode_tokens / r['decode_median_s']:,.0f}"


def settings_line(results: list[dict], args) -> str:
  parts = [f"{r['framework']}: {r['version']}, {r['optimizer']}, threads {r['threads']}"
           for r in results]
  return (f"{args.config} architecture, random weights, float32; batch {args.batch_size}, "
          f"inputs {args.inputs}, targets {args.targets}, prompt {args.prompt_length}; median "
          f"of {args.steps} steps after {args.warmup} warm-up; decode median of "
          f"{args.decode_repeats}. {machine.describe()}. " + "; ".join(parts) + ".")


def add_shape_flags(parser: argparse.ArgumentParser, *, targets: int, prompt_length: int):
  """The model and shape flags both sides of a PEFT comparison share."""
  parser.add_argument("--config", default="t5_1_1_small",
                      help="a prompt_tuning.t5.config name; the architecture for both sides")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--inputs", type=int, default=128, help="encoder input tokens")
  parser.add_argument("--targets", type=int, default=targets, help="decoder target tokens")
  parser.add_argument("--prompt_length", type=int, default=prompt_length)


def add_docs_and_worker_flags(parser: argparse.ArgumentParser, *, docs_block: str):
  """--write_docs/--docs_block, and the driver-to-worker flags (hidden)."""
  parser.add_argument("--write_docs", action="store_true",
                      help=f"write the table into {machine.DOCS}")
  parser.add_argument("--docs_block", default=docs_block,
                      help="the <!-- NAME:begin/end --> block of docs/performance.md to write")
  parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
  parser.add_argument("--arch", type=json.loads, help=argparse.SUPPRESS)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_shape_flags(parser, targets=8, prompt_length=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--decode_tokens", type=int, default=8, help="0 skips decoding")
  parser.add_argument("--decode_repeats", type=int, default=5)
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  parser.add_argument("--max_others_share", type=float, default=0.05,
                      help="rerun a framework when other processes took more than this "
                           "fraction of the cores during its run")
  parser.add_argument("--retries", type=int, default=3)
  parser.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
  add_docs_and_worker_flags(parser, docs_block="step_time")
  return parser.parse_args(argv)


def main(argv=None) -> None:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  if args.worker:
    print(json.dumps({"jax": run_jax, "peft": run_peft}[args.worker](args)))
    return
  passthrough = [a for a in argv if a != "--write_docs"]
  passthrough += ["--arch", json.dumps(architecture(args.config))]
  results = []
  for framework in args.frameworks:
    results.append(run_clean(framework, passthrough, args.max_others_share, args.retries))
  text = f"{settings_line(results, args)}\n\n{markdown_table(results, args)}"
  print(text)
  if args.write_docs:
    machine.write_docs_block(args.docs_block, text)


if __name__ == "__main__":
  main()
