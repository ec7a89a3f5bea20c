"""Five workloads, this library (JAX) vs. the PyTorch PEFT peer, interleaved in time.

    python -m benchmarks.workloads_vs_peft --config smollm_135m [...]   (decoder-only)

    python -m benchmarks.workloads_vs_peft [--config t5_1_1_small] [--batch_size 8]
        [--inputs 128] [--targets 16] [--prompt_length 100] [--decode_tokens 32]
        [--workloads train_prompt train_model greedy beam score] [--rounds 5] [--calls 2]
        [--warmup 1] [--threads 2] [--write_docs] [--docs_block workloads]

Workloads, each on the same random-weight T5 architecture and token ids on both sides
(float32, CPU, dropout off):

  train_prompt  a prompt-tuning train step (frozen T5, trainable prompt; Adafactor at the
                paper's settings), examples/s
  train_model   a model-tuning train step (every weight trains, no prompt), examples/s
  greedy        greedy decoding of exactly --decode_tokens new tokens, new tokens/s
  beam          beam search (4 beams), --decode_tokens steps, new tokens/s (batch x steps:
                the tokens of the returned sequences, not of every beam)
  score         forward only: the sum of ln p of each row's target, examples/s

  jax   `train.train_step` jitted with the state donated, `model.predict`, `model.score`
        (AOT-compiled once, so XLA's memory and cost analyses come from the timed program).
  peft  transformers T5 + `peft` prompt tuning as in `benchmarks.step_time_vs_peft` (plain
        transformers T5 for train_model), `generate` for decoding, a no-grad forward for
        scoring. PEFT at its best: `torch.set_num_threads(--threads)` and
        `torch.set_flush_denormal(True)` (denormals slow its Adafactor steps ~1.8x here).

Why interleaved: this machine's speed drifts by about 15% over minutes, so two separate runs
cannot be compared. One persistent worker subprocess per framework (the PEFT one never
imports JAX, so its RSS is its own) takes one JSON command per stdin line. For each workload
both build, compile and warm up; then in each of --rounds rounds jax and peft in turn (the
order swapped every other round) time --calls calls; only one worker computes at a time. The
ratio is the median over rounds of the two rates measured in the same round.

Output, one JSON line each: per framework its dense float32 matmul rate on the dominant shape
[batch*(inputs+prompt), d_model] x [d_model, mlp_dim] (at the start and at the end, median
of 10 each); per (workload, framework) the rates (median, min and max over rounds; a round's
rate is its calls' units over their mean time), median seconds per call, peak RSS of the
worker so far (ru_maxrss only grows: later workloads include earlier peaks), XLA's memory and
cost analyses (JAX), `matmul_flops`' count, achieved FLOP/s and its fraction of the matmul
rate; per workload the ratio. --write_docs puts a table in docs/performance.md.

A decoder-only --config (`decoder_workloads.CONFIGS`' 'smollm_135m', or a
`causal_lm.config` size such as 'llama_tiny') runs `decoder_workloads.WORKLOADS` instead
(train_prompt, greedy, greedy_b1, score) on the same random weights in both frameworks; see
benchmarks/decoder_workloads.py.
"""

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import traceback

import numpy as np

from benchmarks import machine
from benchmarks.step_time_vs_peft import (CLIP, DECAY, FRAMEWORKS, LR, REPO, WEIGHT_DECAY,
                                          add_docs_and_worker_flags, add_shape_flags,
                                          architecture, hf_config, make_batch, peak_rss_mib,
                                          peft_model, peft_optimizer, timed, untie_lm_head)

WORKLOADS = ("train_prompt", "train_model", "greedy", "beam", "score")
DECODING = ("greedy", "beam")
BEAMS = 4
MATMUL_REPEATS = 10


# ---- shared -------------------------------------------------------------------------------------


def is_decoder(args) -> bool:
  """Whether the workers run a decoder-only model (its --arch is a config.json dict)."""
  return "model_type" in args.arch


def units_per_call(args, workload: str) -> int:
  """What a rate counts: examples (train, score) or new tokens of the batch (decoding)."""
  rows = 1 if workload == "greedy_b1" else args.batch_size
  return rows * (args.decode_tokens if workload in DECODING + ("greedy_b1",) else 1)


def unit(workload: str) -> str:
  return "new tokens/s" if workload in DECODING + ("greedy_b1",) else "examples/s"


def matmul_shape(args) -> tuple[int, int, int]:
  """(m, k, n) of the dominant product: an MLP `wi` over every encoder position."""
  if is_decoder(args):
    from benchmarks import decoder_workloads
    return decoder_workloads.matmul_shape(args)
  return (args.batch_size * (args.inputs + args.prompt_length), args.arch["emb_dim"],
          args.arch["mlp_dim"])


def matmul_flops(arch: dict, workload: str, shapes: dict) -> int:
  """Matrix-product FLOPs of one call of `workload`, counted by hand.

  Counts 2*m*k*n per product [m, k] x [k, n] and nothing else (no norms, softmax,
  activations, embedding gathers, losses or optimizer updates), so XLA's count, which has all
  of those, is a little higher. Forward: per layer the q/k/v/o projections, the attention
  score (q.k) and value (p.v) products, the MLP's `wi` (two when gated) and `wo`; the
  decoder's cross-attention too (keys and values over the encoder positions); the output
  projection to the vocabulary. Causal self-attention is counted at its full square, as both
  frameworks compute it.

  Training adds the backward products. A product with a weight costs one more forward's worth
  for its activation input's gradient, and, only when the weight trains (model tuning), one
  more for the weight's gradient: prompt tuning's frozen weights need none. An attention
  product (two activations) costs two more. So prompt tuning is 2x weight + 3x attention
  products, model tuning 3x both.

  Decoding: the encoder and the cross-attention keys/values once per sequence, then
  `decode_tokens` steps of one new position for each of batch (x beams) rows, self-attention
  at that step's cache length (1, 2, ...). This is the work needed: JAX's cache attends over
  all `decode_tokens` positions (masked) and transformers' beam search projects the
  cross-attention keys/values for every beam, so both do a little more.

  Args:
    arch: `step_time_vs_peft.architecture`'s dict.
    workload: one of WORKLOADS.
    shapes: batch_size, inputs, targets, prompt_length, decode_tokens (and beams, default 4).
  """
  d, heads, head_dim = arch["emb_dim"], arch["num_heads"], arch["head_dim"]
  inner, mlp, vocab = heads * head_dim, arch["mlp_dim"], arch["vocab_size"]
  mlp_weights = (len(arch["mlp_activations"]) + 1) * d * mlp  # wi (x2 gated) and wo
  enc_layers, dec_layers = arch["num_encoder_layers"], arch["num_decoder_layers"]
  b, t = shapes["batch_size"], shapes["targets"]
  s = shapes["inputs"] + (0 if workload == "train_model" else shapes["prompt_length"])

  # Per encoder row and layer: 4 projections + MLP; attention: q.k and p.v over s keys.
  encoder_w = enc_layers * 2 * b * s * (4 * d * inner + mlp_weights)
  encoder_a = enc_layers * 2 * 2 * b * heads * s * s * head_dim
  cross_kv = dec_layers * 2 * b * s * 2 * d * inner
  # Per decoder row and layer: self q/k/v/o, cross q/o, MLP.
  decoder_row = dec_layers * 2 * (6 * d * inner + mlp_weights) + 2 * d * vocab

  if workload in DECODING:
    rows = b * (shapes.get("beams", BEAMS) if workload == "beam" else 1)
    steps = shapes["decode_tokens"]
    cache = steps * (steps + 1) // 2  # sum of cache lengths 1..steps
    attention = dec_layers * 2 * 2 * rows * heads * head_dim * (cache + steps * s)
    return encoder_w + encoder_a + cross_kv + steps * rows * decoder_row + attention

  weights = encoder_w + cross_kv + b * t * decoder_row
  attention = encoder_a + dec_layers * 2 * 2 * b * heads * head_dim * (t * t + t * s)
  if workload == "score":
    return weights + attention
  if workload == "train_prompt":
    return 2 * weights + 3 * attention
  if workload == "train_model":
    return 3 * weights + 3 * attention
  raise ValueError(f"Unknown workload {workload!r}; choose from {WORKLOADS}.")


def shapes_of(args) -> dict:
  return {"batch_size": args.batch_size, "inputs": args.inputs, "targets": args.targets,
          "prompt_length": args.prompt_length, "decode_tokens": args.decode_tokens,
          "beams": BEAMS}


# ---- workers (one per subprocess, driven over stdin/stdout) -------------------------------------


class Worker:
  """One framework's side: `setup(workload)` builds, compiles and warms up `self.call`."""

  def __init__(self, args):
    self.args = args
    self.call = None

  def time_calls(self, calls: int) -> dict:
    _, seconds = timed(self.call, 0, calls)
    return {"seconds": seconds, "peak_rss_mib": peak_rss_mib()}

  def setup(self, workload: str) -> dict:
    self.call = None
    gc.collect()  # the previous workload's model and state go before the next is built
    self.call, info = getattr(self, f"_{workload}")()
    timed(self.call, self.args.warmup, 0)
    return info


class JaxWorker(Worker):
  """This library: AOT-compiled jitted functions (the timed program is the analysed one)."""

  def __init__(self, args):
    super().__init__(args)
    import jax
    from prompt_tuning.t5 import config as t5_config
    from prompt_tuning import train  # noqa: F401  (imports TensorFlow via seqio, as jobs do)
    self.rss_after_imports = peak_rss_mib()
    self.config = t5_config.get_config(args.config, dtype="float32")
    self.batch = jax.device_put(make_batch(args))

  def hello(self) -> dict:
    import jax
    return {"rss_after_imports_mib": self.rss_after_imports, "version": f"jax {jax.__version__}",
            "threads": f"{os.cpu_count()} (XLA's default: all cores)"}

  def matmul_rate(self) -> float:
    import jax
    m, k, n = matmul_shape(self.args)
    rng = np.random.default_rng(0)
    a = jax.device_put(rng.standard_normal((m, k), np.float32))
    b = jax.device_put(rng.standard_normal((k, n), np.float32))
    dot = jax.jit(jax.numpy.dot).lower(a, b).compile()
    _, seconds = timed(lambda: dot(a, b).block_until_ready(), 2, MATMUL_REPEATS)
    return 2 * m * k * n / statistics.median(seconds)

  def _model(self, prompted: bool):
    from prompt_tuning import model as model_lib
    # eos_id -1 never matches a token: every row decodes exactly --decode_tokens tokens.
    if prompted:
      return model_lib.PromptedT5Model(self.config, prompt_length=self.args.prompt_length,
                                       eos_id=-1)
    return model_lib.T5Model(self.config, eos_id=-1)

  def _train(self, prompted: bool):
    import jax
    from prompt_tuning import optim, train
    model = self._model(prompted)
    regex = optim.PROMPT_REGEX if prompted else optim.ALL_REGEX
    trainable, frozen = optim.partition(model.random_params(jax.random.PRNGKey(0)), regex)
    optimizer = optim.adafactor(learning_rate=LR, decay_rate=DECAY,
                                weight_decay_rate=WEIGHT_DECAY, clipping_threshold=CLIP)
    box = {"state": train._initial_state(optimizer, trainable)}
    seed = jax.random.PRNGKey(1)
    compiled = train.compile_step(model, optimizer, box["state"], frozen, self.batch, seed)

    def call():
      box["state"], metrics = compiled(box["state"], frozen, self.batch, seed)
      jax.block_until_ready((box["state"], metrics))
    return call, analyses(compiled)

  def _train_prompt(self):
    return self._train(prompted=True)

  def _train_model(self):
    return self._train(prompted=False)

  def _compiled_call(self, fn, *operands):
    import jax
    compiled = jax.jit(fn).lower(*operands).compile()
    return (lambda: jax.block_until_ready(compiled(*operands))), analyses(compiled)

  def _decode(self, method: str, **kwargs):
    import functools
    import jax
    model = self._model(prompted=True)
    params = model.random_params(jax.random.PRNGKey(0))
    fn = functools.partial(model.predict, method=method,
                           max_decode_length=self.args.decode_tokens, **kwargs)
    return self._compiled_call(fn, params,
                               {"encoder_input_tokens": self.batch["encoder_input_tokens"]})

  def _greedy(self):
    return self._decode("greedy")

  def _beam(self):
    return self._decode("beam", beam_size=BEAMS)

  def _score(self):
    import jax
    model = self._model(prompted=True)
    return self._compiled_call(model.score, model.random_params(jax.random.PRNGKey(0)),
                               self.batch)


def analyses(compiled) -> dict:
  """XLA's memory analysis (bytes) and cost analysis (FLOPs) of one compiled program; None
  where the backend gives none. A while loop's body (decoding) is counted once."""
  try:
    mem = compiled.memory_analysis()
    memory = {k: int(getattr(mem, f"{k}_size_in_bytes"))
              for k in ("argument", "output", "temp", "generated_code")}
  except Exception:  # pylint: disable=broad-except  (backend without the analysis)
    memory = None
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax: one per device
    flops = float(cost["flops"])
  except Exception:  # pylint: disable=broad-except
    flops = None
  return {"compiled_memory": memory, "flops_xla": flops}


class PeftWorker(Worker):
  """The PyTorch peer; never imports JAX."""

  def __init__(self, args):
    super().__init__(args)
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401
    self.rss_after_imports = peak_rss_mib()
    torch.set_num_threads(args.threads)
    # PEFT at its best: without flush-to-zero its steps slow ~1.8x once the trained weights
    # produce denormal floats (see step_time_vs_peft).
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    self.batch = {k: torch.from_numpy(v).long() for k, v in make_batch(args).items()}
    self.mask = torch.ones_like(self.batch["encoder_input_tokens"])

  def hello(self) -> dict:
    import peft
    import torch
    import transformers
    return {"rss_after_imports_mib": self.rss_after_imports,
            "version": f"torch {torch.__version__}, transformers {transformers.__version__}, "
                       f"peft {peft.__version__}",
            "threads": torch.get_num_threads()}

  def matmul_rate(self) -> float:
    import torch
    m, k, n = matmul_shape(self.args)
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.standard_normal((m, k), np.float32))
    b = torch.from_numpy(rng.standard_normal((k, n), np.float32))
    with torch.no_grad():
      _, seconds = timed(lambda: torch.mm(a, b), 2, MATMUL_REPEATS)
    return 2 * m * k * n / statistics.median(seconds)

  def _train(self, model):
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer, _ = peft_optimizer(trainable)
    model.train()  # dropout_rate is 0 (hf_config): train mode only keeps autograd's path
    b = self.batch

    def call():
      optimizer.zero_grad(set_to_none=True)
      out = model(input_ids=b["encoder_input_tokens"], attention_mask=self.mask,
                  decoder_input_ids=b["decoder_input_tokens"], labels=b["decoder_target_tokens"])
      out.loss.backward()
      optimizer.step()
    return call, {}

  def _train_prompt(self):
    return self._train(peft_model(self.args))

  def _train_model(self):
    import transformers
    model = transformers.T5ForConditionalGeneration(hf_config(self.args.arch))
    if not self.args.arch["logits_via_embedding"]:
      model = untie_lm_head(model)
    return self._train(model)

  def _decode(self, beams: int):
    import torch
    model = peft_model(self.args).eval()
    tokens = self.args.decode_tokens

    def call():
      with torch.no_grad():  # eos None: no early stop, exactly `tokens` new tokens
        out = model.generate(input_ids=self.batch["encoder_input_tokens"],
                             attention_mask=self.mask, do_sample=False, num_beams=beams,
                             max_new_tokens=tokens, min_new_tokens=tokens, eos_token_id=None)
      # generate returns the start token too.
      assert out.shape == (self.args.batch_size, tokens + 1), out.shape
    return call, {}

  def _greedy(self):
    return self._decode(1)

  def _beam(self):
    return self._decode(BEAMS)

  def _score(self):
    import torch
    model = peft_model(self.args).eval()
    b = self.batch

    def call():
      with torch.no_grad():
        logits = model(input_ids=b["encoder_input_tokens"], attention_mask=self.mask,
                       decoder_input_ids=b["decoder_input_tokens"]).logits
        log_p = torch.log_softmax(logits.float(), dim=-1)
        targets = b["decoder_target_tokens"]
        return (log_p.gather(-1, targets[..., None])[..., 0]
                * b["decoder_loss_weights"]).sum(-1)
    return call, {}


def serve(args) -> None:
  """The worker's loop: one JSON command a line on stdin, one JSON reply a line on stdout."""
  replies = os.fdopen(os.dup(1), "w")
  # Libraries print (transformers, absl): send fd 1 to stderr so nothing corrupts the replies.
  os.dup2(2, 1)
  sys.stdout = sys.stderr
  if is_decoder(args):
    from benchmarks import decoder_workloads
    worker = decoder_workloads.WORKERS[args.worker](args)
  else:
    worker = {"jax": JaxWorker, "peft": PeftWorker}[args.worker](args)
  for line in sys.stdin:
    request = json.loads(line)
    try:
      reply = handle(worker, request)
    except Exception:  # pylint: disable=broad-except  (sent to the driver, which raises)
      reply = {"error": traceback.format_exc()}
    replies.write(json.dumps(reply) + "\n")
    replies.flush()
    if request["cmd"] == "quit":
      return


def handle(worker: Worker, request: dict) -> dict:
  cmd = request["cmd"]
  if cmd == "hello":
    return worker.hello()
  if cmd == "matmul":
    return {"flops_per_s": worker.matmul_rate()}
  if cmd == "setup":
    return worker.setup(request["workload"])
  if cmd == "time":
    return worker.time_calls(request["calls"])
  if cmd == "quit":
    return {}
  raise ValueError(f"unknown command {cmd!r}")


# ---- driver -------------------------------------------------------------------------------------


class Client:
  """The driver's end of one worker subprocess."""

  def __init__(self, framework: str, argv: list[str]):
    self.framework = framework
    # stderr to a file, not a pipe: an unread pipe fills up and blocks the worker.
    self.stderr = tempfile.TemporaryFile("w+")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.workloads_vs_peft", "--worker", framework, *argv],
        cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
        text=True)

  def stderr_tail(self, chars: int = 4000) -> str:
    self.stderr.flush()
    self.stderr.seek(0)
    return self.stderr.read()[-chars:]

  def ask(self, cmd: str, **kwargs) -> dict:
    try:
      self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
      self.proc.stdin.flush()
      line = self.proc.stdout.readline()
    except BrokenPipeError:
      line = ""
    if not line:
      raise RuntimeError(f"{self.framework} worker exited ({self.proc.wait()}) on {cmd!r}; "
                         f"its stderr ends:\n{self.stderr_tail()}")
    reply = json.loads(line)
    if "error" in reply:
      raise RuntimeError(f"{self.framework} worker failed on {cmd!r} {kwargs}:\n"
                         f"{reply['error']}\nits stderr ends:\n{self.stderr_tail()}")
    return reply

  def close(self) -> None:
    if self.proc.poll() is None:
      try:
        self.ask("quit")
      except RuntimeError:
        pass
      try:
        self.proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self.proc.kill()
    self.stderr.close()


def log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def run_workload(clients: dict, workload: str, args) -> dict:
  """Sets both sides up, then `--rounds` interleaved rounds -> {framework: measurements}."""
  out = {}
  for framework, client in clients.items():
    log(f"{workload}: setting up {framework}")
    out[framework] = {"info": client.ask("setup", workload=workload), "rounds": []}
  for r in range(args.rounds):
    order = list(clients) if r % 2 == 0 else list(clients)[::-1]
    for framework in order:
      reply = clients[framework].ask("time", calls=args.calls)
      out[framework]["rounds"].append(reply["seconds"])
      out[framework]["peak_rss_mib"] = reply["peak_rss_mib"]
    log(f"{workload}: round {r + 1}/{args.rounds} "
        + ", ".join(f"{f} {statistics.mean(out[f]['rounds'][-1]):.3f} s" for f in order))
  return out


def round_rates(measured: dict, workload: str, args) -> list[float]:
  """A round's rate: its calls' units over their mean time."""
  return [units_per_call(args, workload) / statistics.mean(s) for s in measured["rounds"]]


def result_lines(workload: str, measured: dict, hello: dict, matmul: dict, args) -> list[dict]:
  """One line per framework, then the ratio line."""
  lines, rates = [], {}
  if is_decoder(args):
    from benchmarks import decoder_workloads
    flops_hand = decoder_workloads.matmul_flops(decoder_workloads.sizes(args.arch), workload,
                                                shapes_of(args))
  else:
    flops_hand = matmul_flops(args.arch, workload, shapes_of(args))
  for framework, m in measured.items():
    rates[framework] = round_rates(m, workload, args)
    seconds = statistics.median(s for one_round in m["rounds"] for s in one_round)
    flops_per_s = flops_hand / seconds
    lines.append({
        "workload": workload, "framework": framework, "unit": unit(workload),
        "rate_median": statistics.median(rates[framework]), "rate_min": min(rates[framework]),
        "rate_max": max(rates[framework]), "seconds_median": seconds,
        "peak_rss_mib": m["peak_rss_mib"],
        "rss_after_imports_mib": hello[framework]["rss_after_imports_mib"],
        "compiled_memory": m["info"].get("compiled_memory"),
        "flops_xla": m["info"].get("flops_xla"), "flops_hand": flops_hand,
        "flops_per_s": flops_per_s,
        "matmul_fraction": flops_per_s / matmul[framework]["flops_per_s"],
        # decoders: what the call computed (both sides start from the same weights and prompt)
        **{k: m["info"][k] for k in ("scores", "tokens") if k in m["info"]}})
  if {"jax", "peft"} <= set(rates):
    ratios = [j / p for j, p in zip(rates["jax"], rates["peft"])]
    lines.append({"workload": workload, "ratio": "jax / peft", "unit": unit(workload),
                  "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                  "ratio_max": max(ratios), **agreement(measured)})
  return lines


def agreement(measured: dict) -> dict:
  """How far the two sides' outputs differ, where the workers report them (decoders):
  the largest score difference, or the fraction of decoded tokens that are equal."""
  info = {f: m["info"] for f, m in measured.items()}
  if all("scores" in i for i in info.values()):
    diff = np.abs(np.subtract(info["jax"]["scores"], info["peft"]["scores"]))
    return {"scores_max_abs_diff": float(diff.max())}
  if all("tokens" in i for i in info.values()):
    return {"tokens_equal": float(np.mean(np.equal(info["jax"]["tokens"],
                                                   info["peft"]["tokens"])))}
  return {}


def matmul_lines(start: dict, end: dict, hello: dict, args) -> dict:
  """{framework: line}; the mean of the start and end rates is what fractions divide by."""
  lines = {}
  for framework in start:
    a, b = start[framework]["flops_per_s"], end[framework]["flops_per_s"]
    lines[framework] = {"framework": framework, "matmul_shape": list(matmul_shape(args)),
                        "matmul_flops_per_s_start": a, "matmul_flops_per_s_end": b,
                        "flops_per_s": (a + b) / 2, "threads": hello[framework]["threads"],
                        "version": hello[framework]["version"]}
  return lines


def markdown(results: list[dict], matmul: dict, hello: dict, args) -> str:
  """The settings line and one table row per workload."""
  per = {(r["workload"], r["framework"]): r for r in results if "rate_median" in r}
  ratio = {r["workload"]: r for r in results if "ratio" in r}
  head = ("| workload | unit | jax | peft | jax / peft (min–max) | jax spread | peft spread | "
          "peak RSS MiB jax / peft | above imports jax / peft | GFLOP a call (hand / XLA) | "
          "matmul fraction jax / peft |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for w in args.workloads:
    j, p, q = per[(w, "jax")], per[(w, "peft")], ratio[w]
    spread = lambda r: f"{r['rate_min']:,.1f}–{r['rate_max']:,.1f}"
    xla = "n/a" if j["flops_xla"] is None else f"{j['flops_xla'] / 1e9:,.2f}"
    above = lambda r: r["peak_rss_mib"] - r["rss_after_imports_mib"]
    lines.append(
        f"| {w} | {j['unit']} | {j['rate_median']:,.1f} | {p['rate_median']:,.1f} | "
        f"{q['ratio_median']:.2f}x ({q['ratio_min']:.2f}–{q['ratio_max']:.2f}) | {spread(j)} | "
        f"{spread(p)} | {j['peak_rss_mib']:,.0f} / {p['peak_rss_mib']:,.0f} | "
        f"{above(j):,.0f} / {above(p):,.0f} | "
        f"{j['flops_hand'] / 1e9:,.2f} / {xla} | "
        f"{100 * j['matmul_fraction']:.0f}% / {100 * p['matmul_fraction']:.0f}% |")
  m, k, n = matmul_shape(args)
  sides = "; ".join(f"{f}: {hello[f]['version']}, threads {hello[f]['threads']}, "
                    f"matmul [{m}, {k}] x [{k}, {n}] {matmul[f]['flops_per_s'] / 1e9:,.1f} "
                    "GFLOP/s" for f in matmul)
  beams = ("greedy_b1 at batch 1, the same weights (safetensors, loaded by both)"
           if is_decoder(args) else f"{BEAMS} beams")
  settings = (f"{args.config} architecture, random weights, float32, dropout off; batch "
              f"{args.batch_size}, inputs {args.inputs}, targets {args.targets}, prompt "
              f"{args.prompt_length}, {args.decode_tokens} decoded tokens, {beams}; "
              f"{args.rounds} interleaved rounds of {args.calls} calls after {args.warmup} "
              f"warm-up. {machine.describe()}. {sides}. XLA's FLOPs count a decoding loop's "
              "body once; RSS is each worker's peak so far (workloads run in the listed order).")
  return settings + "\n\n" + "\n".join(lines)


def check_docs_block(name: str) -> None:
  """Fails before the run, not after it, when the docs lack the block to write."""
  doc = machine.DOCS.read_text()
  if f"<!-- {name}:begin -->" not in doc or f"<!-- {name}:end -->" not in doc:
    raise SystemExit(f"{machine.DOCS} lacks <!-- {name}:begin --> ... <!-- {name}:end -->; "
                     "add them where the table belongs.")


def drive(argv: list[str], args) -> tuple[list[dict], dict, dict]:
  """Runs every workload on both workers; prints the JSON lines.

  Returns (the lines, the matmul lines by framework, each worker's `hello`).
  """
  worker_argv = [*argv, "--arch", json.dumps(args.arch)]
  if is_decoder(args):
    from benchmarks import decoder_workloads
    with decoder_workloads.Weights(args.arch) as model_dir:
      return _drive([*worker_argv, "--model_dir", model_dir], args)
  return _drive(worker_argv, args)


def _drive(worker_argv: list[str], args) -> tuple[list[dict], dict, dict]:
  clients = {f: Client(f, worker_argv) for f in FRAMEWORKS}
  results = []
  try:
    # Imports may overlap (nothing is timed then); from here on, one worker at a time.
    hello = {f: c.ask("hello") for f, c in clients.items()}
    start = {f: c.ask("matmul") for f, c in clients.items()}
    measured = {w: run_workload(clients, w, args) for w in args.workloads}
    end = {f: c.ask("matmul") for f, c in reversed(clients.items())}
  finally:
    for client in clients.values():
      client.close()
  matmul = matmul_lines(start, end, hello, args)
  results += matmul.values()
  for w in args.workloads:
    results += result_lines(w, measured[w], hello, matmul, args)
  for line in results:
    print(json.dumps(line), flush=True)
  return results, matmul, hello


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_shape_flags(parser, targets=16, prompt_length=100)
  parser.add_argument("--decode_tokens", type=int, default=32, help="new tokens per row")
  parser.add_argument("--workloads", nargs="+",
                      help=f"default: all; T5 {', '.join(WORKLOADS)}; decoder-only "
                           "train_prompt, greedy, greedy_b1, score")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--calls", type=int, default=2, help="timed calls per round and side")
  parser.add_argument("--warmup", type=int, default=1, help="untimed calls after compiling")
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  add_docs_and_worker_flags(parser, docs_block="workloads")
  parser.add_argument("--model_dir", help=argparse.SUPPRESS)  # decoders: the shared weights
  args = parser.parse_args(argv)
  if min(args.batch_size, args.inputs, args.targets, args.prompt_length, args.decode_tokens,
         args.rounds, args.calls) < 1 or args.warmup < 0:
    parser.error("shapes, --rounds and --calls must be at least 1, --warmup at least 0")
  return args


def main(argv=None) -> None:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  if args.worker:
    serve(args)
    return
  if args.write_docs:
    check_docs_block(args.docs_block)
  from benchmarks import decoder_workloads
  decoder = decoder_workloads.is_decoder(args.config)
  args.arch = (decoder_workloads.architecture if decoder else architecture)(args.config)
  known = decoder_workloads.WORKLOADS if decoder else WORKLOADS
  args.workloads = args.workloads or list(known)
  unknown = [w for w in args.workloads if w not in known]
  if unknown:
    raise SystemExit(f"--workloads {' '.join(unknown)}: not a workload of --config "
                     f"{args.config}; choose from {', '.join(known)}.")
  results, matmul, hello = drive(argv, args)
  text = markdown(results, matmul, hello, args)
  print(text)
  if args.write_docs:
    machine.write_docs_block(args.docs_block, text)


if __name__ == "__main__":
  main()
