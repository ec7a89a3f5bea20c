"""The decoder-only side of `benchmarks.workloads_vs_peft` (`--config smollm_135m`).

    python -m benchmarks.workloads_vs_peft --config smollm_135m [--rounds 5] [--write_docs]
        [--docs_block workloads_decoder]

Both sides get the same random weights: the driver builds a transformers `LlamaForCausalLM`
(or the family's *ForCausalLM) from the config.json dict below with torch's seed 0 and saves it
(safetensors) to a temporary directory; the PEFT worker loads it with `from_pretrained`, the
JAX worker with `checkpoints.hf_causal_lm.load_params`, each array read straight into its
device buffer. Rows have no BOS, so the prompt comes first on both sides (PEFT's CAUSAL_LM
layout): P prompt rows + --inputs input tokens + --targets target tokens, no padding.

  train_prompt  a prompt-tuning train step (frozen model, trainable prompt, Adafactor at the
                paper's settings), the loss on the --targets target tokens only, examples/s
  greedy        greedy decoding of exactly --decode_tokens new tokens at --batch_size, the
                prompt and inputs in the prefill, new tokens/s
  greedy_b1     the same at batch 1 (the batch's first row), new tokens/s
  score         forward only: the sum of ln p of each row's targets, examples/s

  jax   `train.compile_step` (state donated), `PromptedDecoderModel.predict` and `.score`,
        AOT-compiled once.
  peft  `peft.get_peft_model(PromptTuningConfig(CAUSAL_LM, num_virtual_tokens=P))` on the
        loaded model, labels -100 outside the targets, transformers' Adafactor; a no-grad
        forward. Decoding: the base model's `generate(inputs_embeds=[PEFT's prompt rows;
        embedded inputs], max_new_tokens=N, min_new_tokens=N, do_sample=False)`, i.e. the
        prompt in the prefill and one cached token a step, which is what PEFT's own
        `generate` means to do. Not PEFT's own `generate`: in peft 0.21.2 with transformers
        5.24 it re-injects the prompt at every step and runs the prompt and the last token
        alone (no cache, no earlier context), so from the second token on its tokens differ
        from a full uncached greedy loop (seen on a random Llama), and its time is not that
        of the intended computation.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from benchmarks.step_time_vs_peft import (CLIP, DECAY, LR, REPO, WEIGHT_DECAY, peak_rss_mib,
                                          peft_optimizer)
from benchmarks.workloads_vs_peft import Worker, analyses

WORKLOADS = ("train_prompt", "greedy", "greedy_b1", "score")
DECODING = ("greedy", "greedy_b1")
EOS = 0  # never among the batch's ids (3 and up); the setup checks no row decodes it

# HuggingFaceTB/SmolLM-135M's config.json (the architecture fields; its weights are not used).
# 30 layers of d_model 576, 9 query and 3 key/value heads of 64, SwiGLU 1536, tied
# embeddings: 134.5M parameters.
SMOLLM_135M = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152,
    "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "hidden_act": "silu",
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "rope_scaling": None, "tie_word_embeddings": True, "attention_bias": False,
    "mlp_bias": False, "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 0,
    "torch_dtype": "float32"}
CONFIGS = {"smollm_135m": SMOLLM_135M}


def is_decoder(name: str) -> bool:
  """Whether --config names a decoder: SmolLM-135M's shape or a `causal_lm.config` size."""
  if name in CONFIGS:
    return True
  from prompt_tuning.causal_lm import config as decoder_config
  return name in decoder_config.CONFIGS


def architecture(name: str) -> dict:
  """The config.json dict of the named decoder (what the driver writes beside the weights)."""
  if name in CONFIGS:
    return dict(CONFIGS[name])
  from prompt_tuning.causal_lm import config as decoder_config
  return decoder_config.hf_config(decoder_config.get_config(name))


def sizes(arch: dict) -> dict:
  """The fields the FLOP count needs, from a Llama-style or GPT-2 config.json."""
  from prompt_tuning.causal_lm import config as decoder_config
  cfg = decoder_config.config_from_hf(arch)
  return {"d": cfg.d_model, "heads": cfg.num_heads, "kv_heads": cfg.num_kv_heads,
          "head_dim": cfg.head_dim, "mlp": cfg.mlp_dim, "vocab": cfg.vocab_size,
          "layers": cfg.num_layers, "gated": cfg.gated_mlp}


def write_weights(arch: dict, out_dir: str) -> None:
  """Random weights of `arch` (transformers' init, torch seed 0), saved as safetensors."""
  import torch
  import transformers
  torch.manual_seed(0)
  config = transformers.AutoConfig.for_model(**arch)
  model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
  model.save_pretrained(out_dir)


class Weights:
  """A temporary directory holding `write_weights`' model, removed on exit."""

  def __init__(self, arch: dict):
    self.arch = arch
    self.path = None

  def __enter__(self) -> str:
    self.path = tempfile.mkdtemp(prefix="decoder_workloads_")
    # In a child process: Linux keeps a process's peak RSS across exec, so a driver that
    # built the model itself would hand its peak to both workers as their starting peak.
    subprocess.run([sys.executable, "-m", "benchmarks.decoder_workloads", json.dumps(self.arch),
                    self.path], cwd=REPO, check=True)
    return self.path

  def __exit__(self, *exc):
    shutil.rmtree(self.path, ignore_errors=True)


def prompt_rows(args) -> np.ndarray:
  """The prompt both sides start from [P, d_model] (so their scores and tokens can be compared)."""
  d = args.arch.get("hidden_size", args.arch.get("n_embd"))
  return np.random.default_rng(1).uniform(-0.5, 0.5, (args.prompt_length, d)).astype(np.float32)


def batch_rows(workload: str, batch_size: int) -> int:
  return 1 if workload == "greedy_b1" else batch_size


def make_batch(args) -> dict:
  """Rows of --inputs then --targets random non-special ids, no padding, identical on both
  sides: tokens, mask, target_mask [batch, inputs + targets]."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, args.arch["vocab_size"], (args.batch_size, args.inputs + args.targets),
                        dtype=np.int32)
  target_mask = np.zeros(tokens.shape, bool)
  target_mask[:, args.inputs:] = True
  return {"tokens": tokens, "mask": np.ones(tokens.shape, bool), "target_mask": target_mask}


def prompt_batch(batch: dict, inputs: int, rows: int) -> dict:
  """The first `rows` rows' inputs, as decoding takes them: tokens, mask [rows, inputs]."""
  return {"tokens": batch["tokens"][:rows, :inputs], "mask": batch["mask"][:rows, :inputs]}


def matmul_shape(args) -> tuple[int, int, int]:
  """(m, k, n) of the dominant product: an MLP input projection over every position. Read
  from the config.json dict itself: the PEFT worker never imports JAX."""
  arch = args.arch
  d = arch.get("hidden_size", arch.get("n_embd"))
  mlp = arch.get("intermediate_size", arch.get("n_inner") or 4 * d)
  return (args.batch_size * (args.prompt_length + args.inputs + args.targets), d, mlp)


def matmul_flops(sizes_: dict, workload: str, shapes: dict) -> int:
  """Matrix-product FLOPs of one call of `workload`, counted by hand (2*m*k*n a product).

  Forward, per position and layer: q and o (d x heads*head_dim each), k and v
  (d x kv_heads*head_dim each), the MLP (3 d x mlp gated, 2 plain); per position the output
  projection d x vocab; per layer the attention score (q.k) and value (p.v) products at the
  full square of the sequence, as both frameworks compute them. Training: 2x the weight
  products (the frozen weights need only their activations' gradient), 3x the attention ones.

  Decoding, the work needed: the prefill over prompt + inputs with the vocabulary projection
  of the last position only (transformers computes only that one; JAX computes every
  position's and keeps the last), then decode_tokens - 1 steps of one position per row (the
  first new token comes from the prefill), step k attending over prompt + inputs + k keys.

  Args:
    sizes_: `sizes(arch)`.
    workload: one of WORKLOADS.
    shapes: batch_size, inputs, targets, prompt_length, decode_tokens.
  """
  s = sizes_
  inner, kv_inner = s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"]
  per_layer = 2 * s["d"] * (2 * inner + 2 * kv_inner) + 2 * (3 if s["gated"] else 2) * (
      s["d"] * s["mlp"])
  row = s["layers"] * per_layer  # one position through every layer's weights
  logits_row = 2 * s["d"] * s["vocab"]
  attention = lambda queries, keys: s["layers"] * 2 * 2 * inner * queries * keys
  b = batch_rows(workload, shapes["batch_size"])
  prefix = shapes["prompt_length"] + shapes["inputs"]
  if workload in DECODING:
    steps = shapes["decode_tokens"] - 1
    prefill = b * (prefix * row + logits_row + attention(prefix, prefix))
    keys = steps * prefix + steps * (steps + 1) // 2  # sum over steps k of prefix + k
    return prefill + b * (steps * (row + logits_row) + attention(1, keys))
  length = prefix + shapes["targets"]
  weights, attn = b * length * (row + logits_row), b * attention(length, length)
  if workload == "score":
    return weights + attn
  if workload == "train_prompt":
    return 2 * weights + 3 * attn
  raise ValueError(f"Unknown decoder workload {workload!r}; choose from {WORKLOADS}.")


def _compiled_call(fn, *operands):
  import jax
  compiled = jax.jit(fn).lower(*operands).compile()
  return (lambda: jax.block_until_ready(compiled(*operands))), compiled


def _check_no_eos(tokens, framework: str, decode_tokens: int) -> None:
  """Decoding stops at EOS: with fixed inputs every call decodes what the first did, so one
  EOS-free call means every call decodes exactly `decode_tokens` tokens a row."""
  tokens = np.asarray(tokens)
  if tokens.shape[1] != decode_tokens or (tokens == EOS).any():
    raise RuntimeError(f"{framework} decoded {tokens.shape} with EOS {EOS} at "
                       f"{np.argwhere(tokens == EOS).tolist()[:4]}; change EOS.")


class JaxDecoderWorker(Worker):
  """This library: `PromptedDecoderModel` on the checkpoint at --model_dir."""

  def __init__(self, args):
    super().__init__(args)
    import jax
    from prompt_tuning import host_memory
    from prompt_tuning import train  # noqa: F401  (imports TensorFlow via seqio, as jobs do)
    self.rss_after_imports = peak_rss_mib()
    self.model, self.params = self._load()
    self.batch = jax.device_put(make_batch(args))
    host_memory.release_free_heap()

  def _load(self):
    import jax
    from prompt_tuning import decoder_model
    from prompt_tuning.causal_lm import config as decoder_config
    from prompt_tuning.checkpoints import hf_causal_lm
    config = decoder_config.config_from_hf(self.args.model_dir, dtype="float32")
    model = decoder_model.PromptedDecoderModel(config, prompt_length=self.args.prompt_length,
                                               eos_id=EOS)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, model.abstract_params())
    del shardings["prompt"]
    frozen = hf_causal_lm.load_params(self.args.model_dir, config, shardings=shardings)
    return model, model.with_prompt_file(frozen, prompt_rows(self.args), "the benchmark's")

  def hello(self) -> dict:
    import jax
    return {"rss_after_imports_mib": self.rss_after_imports, "version": f"jax {jax.__version__}",
            "threads": f"{os.cpu_count()} (XLA's default: all cores)"}

  def matmul_rate(self) -> float:
    from benchmarks import workloads_vs_peft
    return workloads_vs_peft.JaxWorker.matmul_rate(self)

  def _train_prompt(self):
    import jax
    from prompt_tuning import optim, train
    trainable, frozen = optim.partition(self.params, optim.PROMPT_REGEX)
    trainable = jax.tree.map(jax.numpy.copy, trainable)  # the step donates it; params keep theirs
    optimizer = optim.adafactor(learning_rate=LR, decay_rate=DECAY,
                                weight_decay_rate=WEIGHT_DECAY, clipping_threshold=CLIP)
    box = {"state": train._initial_state(optimizer, trainable)}  # pylint: disable=protected-access
    seed = jax.random.PRNGKey(1)
    compiled = train.compile_step(self.model, optimizer, box["state"], frozen, self.batch, seed)

    def call():
      box["state"], metrics = compiled(box["state"], frozen, self.batch, seed)
      jax.block_until_ready((box["state"], metrics))
    return call, analyses(compiled)

  def _decode(self, workload: str):
    prompts = prompt_batch(self.batch, self.args.inputs,
                           batch_rows(workload, self.args.batch_size))
    fn = functools.partial(self.model.predict, method="greedy",
                           max_new_tokens=self.args.decode_tokens)
    call, compiled = _compiled_call(fn, self.params, prompts)
    tokens = np.asarray(compiled(self.params, prompts))
    _check_no_eos(tokens, "jax", self.args.decode_tokens)
    return call, {**analyses(compiled), "tokens": tokens.tolist()}

  def _greedy(self):
    return self._decode("greedy")

  def _greedy_b1(self):
    return self._decode("greedy_b1")

  def _score(self):
    call, compiled = _compiled_call(self.model.score, self.params, self.batch)
    scores = np.asarray(compiled(self.params, self.batch))
    return call, {**analyses(compiled), "scores": scores.tolist()}


class PeftDecoderWorker(Worker):
  """The PyTorch peer: the checkpoint at --model_dir under PEFT prompt tuning; no JAX."""

  def __init__(self, args):
    super().__init__(args)
    import peft
    import torch
    import transformers
    self.rss_after_imports = peak_rss_mib()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # PEFT at its best (see workloads_vs_peft)
    torch.manual_seed(0)
    base = transformers.AutoModelForCausalLM.from_pretrained(args.model_dir,
                                                             dtype=torch.float32)
    self.model = peft.get_peft_model(base, peft.PromptTuningConfig(
        task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=args.prompt_length))
    self._reset_prompt()
    self.batch = {k: torch.from_numpy(v) for k, v in make_batch(args).items()}
    self.tokens = self.batch["tokens"].long()
    self.mask = self.batch["mask"].long()

  def _reset_prompt(self) -> None:
    """The shared starting prompt (train_prompt's steps change PEFT's in place; JAX's step
    updates its own copy)."""
    import torch
    with torch.no_grad():
      self.model.prompt_encoder["default"].embedding.weight[:] = torch.from_numpy(
          prompt_rows(self.args))

  def hello(self) -> dict:
    from benchmarks import workloads_vs_peft
    return workloads_vs_peft.PeftWorker.hello(self)

  def matmul_rate(self) -> float:
    from benchmarks import workloads_vs_peft
    return workloads_vs_peft.PeftWorker.matmul_rate(self)

  def _train_prompt(self):
    trainable = [p for p in self.model.parameters() if p.requires_grad]
    optimizer, _ = peft_optimizer(trainable)
    self.model.train()  # no dropout in the config: train mode only keeps autograd's path
    labels = self.tokens.masked_fill(~self.batch["target_mask"], -100)

    def call():
      optimizer.zero_grad(set_to_none=True)
      out = self.model(input_ids=self.tokens, attention_mask=self.mask, labels=labels)
      out.loss.backward()
      optimizer.step()
    return call, {}

  def _decode(self, workload: str):
    import torch
    self.model.eval()
    self._reset_prompt()
    rows = batch_rows(workload, self.args.batch_size)
    inputs = self.tokens[:rows, :self.args.inputs]
    mask = torch.ones((rows, self.args.prompt_length + self.args.inputs), dtype=torch.long)
    new = self.args.decode_tokens
    base = self.model.get_base_model()

    def call():
      # What PEFT's generate does in its prefill (its prompt rows before the embedded inputs),
      # then transformers' cached steps: PEFT 0.21.2's own generate under transformers 5
      # re-injects the prompt at every step without the cache (module docstring).
      with torch.no_grad():  # min_new_tokens and no EOS: exactly `new` tokens
        embeds = torch.cat([self.model.get_prompt(batch_size=rows),
                            base.get_input_embeddings()(inputs)], dim=1)
        return base.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False,
                             max_new_tokens=new, min_new_tokens=new, eos_token_id=None,
                             pad_token_id=EOS)
    out = call()
    assert out.shape == (rows, new), out.shape  # inputs_embeds alone: only the new tokens
    return call, {"tokens": out.tolist()}

  def _greedy(self):
    return self._decode("greedy")

  def _greedy_b1(self):
    return self._decode("greedy_b1")

  def _score(self):
    import torch
    self.model.eval()
    self._reset_prompt()
    p, target = self.args.prompt_length, self.batch["target_mask"]

    def call():
      with torch.no_grad():  # logits start with the P prompt rows; slot j is row P + j - 1
        logits = self.model(input_ids=self.tokens, attention_mask=self.mask).logits
        log_p = torch.log_softmax(logits[:, p - 1:-1].float(), dim=-1)
        picked = log_p.gather(-1, self.tokens[..., None])[..., 0]
        return (picked * target).sum(-1)
    return call, {"scores": call().tolist()}


WORKERS = {"jax": JaxDecoderWorker, "peft": PeftDecoderWorker}


if __name__ == "__main__":  # Weights' child: python -m benchmarks.decoder_workloads ARCH DIR
  write_weights(json.loads(sys.argv[1]), sys.argv[2])
