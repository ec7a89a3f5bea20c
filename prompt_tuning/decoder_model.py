"""The model object for a frozen decoder-only language model (Llama, Qwen2, Gemma, GPT-2),
optionally with a soft prompt: the sibling of model.py's T5Model / PromptedT5Model.

    DecoderModel            every weight a checkpoint weight (model tuning, scoring a bare LM)
    PromptedDecoderModel    plus `prompt/prompt` [prompt_length, d_model] (prompt tuning)

Methods are pure functions of `params` (nested dict, causal_lm/network.py's names), as in
model.py:

    abstract_params(), param_axes(), init_params(rng, frozen), random_params(rng)
    loss(params, batch, dropout_rng=None)      (mean cross-entropy over target tokens, metrics)
    score(params, batch) -> [batch]            sum of ln p(target token), EOS included
    score_candidates(params, batch, cands) -> [batch, candidates]   prefill once per input
    predict(params, prompt_batch, method=..., max_new_tokens=N) -> [batch, N] tokens
    export_prompt(trainable), with_prompt_file, with_prompt_table (+ batch['prompt_ids'])

Batches are data/decoder_features.py's: `tokens`, `mask` [batch, L] ([BOS] + inputs +
targets, right or left padded) and `target_mask` (the tokens scored, EOS included); prompt
batches (decoding, rank classification) hold `tokens` and `mask` of [BOS] + inputs.

Where the prompt goes: each row becomes [BOS] + P + inputs + targets, i.e. after BOS when the
vocabulary adds one (`bos_id`), else first. The prompt's rows are ordinary positions (RoPE and
GPT-2's position table continue after them) and real in the mask; the row's padding stays on
its side, so a left-padded row stays right-aligned with its prompt next to its tokens, and
every row computes exactly what it computes alone. When every row has the same prompt, the
prompt's keys and values are computed once per batch rather than once per row (`_sequence`).
"""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import decoding, frozen, prompts
from prompt_tuning.causal_lm import config as decoder_config
from prompt_tuning.causal_lm import network
from prompt_tuning.t5 import config as t5_config

Array = jax.Array
Params = Any


def insert_prompt(embedded: Array, mask: Array, prompt: Array, lead: int,
                  prompt_lengths: Array | None = None) -> tuple[Array, Array, Array, Array]:
  """Puts each row's prompt after its first `lead` tokens (0, or 1 for BOS).

  Args:
    embedded: [batch, L, embed] rows; mask: [batch, L] bool, one contiguous run of real
      slots per row (right or left padding).
    prompt: [batch, P, embed]; prompt_lengths: [batch] rows of each row's prompt that are
      real (a prompt table's shorter prompts), default all P.
  Returns:
    (combined [batch, L + P, embed], mask [batch, L + P] bool (prompt rows True),
     source [batch, L + P] int32: the input slot each real token came from,
     is_token [batch, L + P] bool: the slots holding a row token).
    A row ending at slot L - 1 (left padding) ends at L + P - 1, otherwise rows start where
    they started; the slots left over are padding.
  """
  batch, length = mask.shape
  width = prompt.shape[1]
  q = jnp.full((batch,), width, jnp.int32) if prompt_lengths is None else prompt_lengths
  q = q.astype(jnp.int32)
  mask = mask.astype(bool)
  count = jnp.sum(mask, axis=1, dtype=jnp.int32)
  first = jnp.argmax(mask, axis=1).astype(jnp.int32)
  start = first + jnp.where(first + count == length, width - q, 0)
  lead = jnp.minimum(lead, count)[:, None]
  rel = jnp.arange(length + width, dtype=jnp.int32)[None] - start[:, None]
  in_lead = (rel >= 0) & (rel < lead)
  in_prompt = (rel >= lead) & (rel < lead + q[:, None])
  in_rest = (rel >= lead + q[:, None]) & (rel < count[:, None] + q[:, None])
  is_token = in_lead | in_rest
  source = jnp.clip(first[:, None] + jnp.where(in_lead, rel, rel - q[:, None]), 0, length - 1)
  rows = jnp.take_along_axis(embedded, source[..., None], axis=1)
  prompt_rows = jnp.take_along_axis(prompt, jnp.clip(rel - lead, 0, width - 1)[..., None],
                                    axis=1)
  combined = jnp.where(in_prompt[..., None], prompt_rows.astype(rows.dtype), rows)
  return combined, is_token | in_prompt, source, is_token


def positions_from_mask(mask: Array) -> Array:
  """[batch, L] bool -> positions counting real slots from 0 (0 on padding)."""
  return jnp.where(mask, network.positions_of(mask), 0)


class DecoderModel(frozen.FrozenModel):
  """A decoder-only LM whose weights all come from the frozen checkpoint.

  Args:
    config: the architecture (`causal_lm.config.config_from_hf(path)` or `get_config`).
    eos_id: the vocabulary's EOS, where decoding stops.
    bos_id: the vocabulary's BOS when it adds one to every row (data/decoder_features.py's
      layout), else None; a prompt goes after it.
    pad_id: what fills the padding slots of the jobs' batches (never attended to); default
      eos_id. Gin files read all three from the tokenizer (`tokenizer_id`).
    activation_dtype, dropout_rate, remat, frozen_dtype: as model.T5Model's.
  """
  architecture = "decoder_only"  # what job_io reads and feeds for it

  network = network  # FrozenModel.random_params initialises the frozen weights with it

  def __init__(self, config: decoder_config.DecoderConfig, *, eos_id: int,
               bos_id: int | None = None, pad_id: int | None = None,
               activation_dtype: Any = None, dropout_rate: float | None = None,
               remat: bool | None = None, frozen_dtype: Any = "float32"):
    if not isinstance(config, decoder_config.DecoderConfig):
      raise ValueError(f"MODEL_CONFIG={config!r} is not a DecoderConfig; use "
                       "causal_lm.config.config_from_hf(<model directory>).")
    pad_id = eos_id if pad_id is None else pad_id
    for name, value in (("eos_id", eos_id), ("bos_id", bos_id), ("pad_id", pad_id)):
      if value is None and name == "bos_id":
        continue
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not (
          0 <= value < config.vocab_size):
        raise ValueError(f"{name}={value!r} must be a token id in [0, {config.vocab_size}).")
    if activation_dtype is not None:
      config = config.replace(dtype=t5_config.activation_dtype(activation_dtype))
    if dropout_rate is not None:
      config = config.replace(dropout_rate=float(dropout_rate))
    if remat is not None:
      config = config.replace(remat=bool(remat))
    self.config = config
    self.eos_id = int(eos_id)
    self.bos_id = None if bos_id is None else int(bos_id)
    self.pad_id = int(pad_id)
    self.frozen_dtype = t5_config.frozen_dtype(frozen_dtype)

  @functools.cached_property
  def module(self) -> network.DecoderOnly:
    return network.DecoderOnly(self.config)

  # ---- parameters ---------------------------------------------------------------------------

  def abstract_params(self) -> Params:
    return network.param_shapes(self.config)

  def param_axes(self) -> Params:
    return network.param_axes(self.config)

  # ---- the sequence the network sees --------------------------------------------------------

  def _prompt(self, params: Params, batch: dict) -> tuple[Array | None, Array | None]:
    """(prompt [batch, P, embed] or None, prompt_lengths [batch] or None)."""
    del params
    if "prompt_ids" in batch:
      raise ValueError("The batch has prompt_ids but the model has no prompt; use a "
                       "PromptedDecoderModel.")
    return None, None

  def _shared_prompt(self, params: Params, batch: dict) -> Array | None:
    """The one prompt [P, embed] every row of `batch` gets, else None (no prompt, a table)."""
    del params, batch
    return None

  def _sequence(self, params: Params, batch: dict, extras: Sequence[Array] = (),
                dropout_rng: Array | None = None) -> tuple[Array | None, Array, Array, list]:
    """The network's input for batch['tokens'], batch['mask'] [batch, L]: (prefix [Q, embed]
    or None, embedded rows [batch, L', embed], their mask [batch, L'], each extra [batch, L]
    moved to the rows' new slots (zero/False elsewhere)).

    With one prompt for every row, [BOS] + P[:-1] is the same at the same positions in
    every row and, attention being causal, so are its keys and values in every layer: that
    prefix is computed once (for batch 1, in `_apply`) instead of once per row, and each row
    keeps P[-1], which predicts the row's first token. The rows' own BOS slots (the prefix
    has it) are masked off. Dropout would differ per row, so with it every row gets the
    whole prompt.
    """
    tokens = jnp.asarray(batch["tokens"], jnp.int32)
    mask = jnp.asarray(batch["mask"]).astype(bool)
    embedded = self.module.apply({"params": params}, tokens, method="embed")
    lead = int(self.bos_id is not None)
    shared = self._shared_prompt(params, batch)
    dropout = dropout_rng is not None and (self.config.dropout_rate > 0
                                           or self.config.attention_dropout_rate > 0)
    prefix = None
    if shared is not None and shared.shape[0] + lead > 1 and not dropout:
      prefix = shared[:-1].astype(embedded.dtype)
      if lead:
        bos = self.module.apply({"params": params}, jnp.full((1, 1), self.bos_id, jnp.int32),
                                method="embed")[0]
        prefix = jnp.concatenate([bos, prefix])
      last = jnp.broadcast_to(shared[-1:], (mask.shape[0], 1, shared.shape[-1]))
      combined, mask, source, is_token = insert_prompt(embedded, mask, last, lead)
      if lead:  # each row's first real slot, its BOS
        first = jnp.argmax(mask, axis=1)
        mask = mask & (jnp.arange(mask.shape[1])[None] != first[:, None])
    else:
      prompt, lengths = self._prompt(params, batch)
      if prompt is None:
        return None, embedded, mask, list(extras)
      combined, mask, source, is_token = insert_prompt(embedded, mask, prompt, lead, lengths)
    moved = [jnp.where(is_token, jnp.take_along_axis(x, source, axis=1), jnp.zeros((), x.dtype))
             for x in extras]
    return prefix, combined, mask, moved

  def _apply(self, params: Params, prefix: Array | None, embedded: Array, mask: Array, *,
             dropout_rng: Array | None = None, cache_slots: int | None = None,
             logits_at: Array | None = None) -> tuple[Array, Any]:
    """The network on rows `embedded` [batch, L, embed] (mask [batch, L]) after `prefix`
    [Q, embed] (or None) -> (logits, cache). The prefix runs once, for batch 1, into a KV
    cache that every row reads (broadcast, so its gradient is summed over the rows).
    cache_slots: return a KV cache with that many free slots after the rows (decoding);
    None: no cache (returned as None). logits_at: as DecoderOnly's.
    """
    size, length = mask.shape
    variables = {"params": params}
    positions = positions_from_mask(mask)
    if prefix is not None:
      q = prefix.shape[0]
      _, first = self.module.apply(variables, prefix[None], jnp.arange(q)[None],
                                   jnp.ones((1, q), bool), decode=True,
                                   cache_length=q + length + (cache_slots or 0),
                                   logits_at=jnp.zeros((1,), jnp.int32), mutable=["cache"])
      variables["cache"] = jax.tree.map(
          lambda x: x if x.ndim == 0 else jnp.broadcast_to(x, (size,) + x.shape[1:]),
          first["cache"])
      positions = jnp.where(mask, positions + q, 0)
    decode = prefix is not None or cache_slots is not None
    out = self.module.apply(
        variables, embedded, positions, mask, deterministic=dropout_rng is None,
        rngs={} if dropout_rng is None else {"dropout": dropout_rng}, decode=decode,
        cache_length=None if cache_slots is None else length + cache_slots,
        logits_at=logits_at, mutable=["cache"] if decode else False)
    logits, new = out if decode else (out, None)
    return logits, (None if cache_slots is None else new["cache"])

  def _check_batch(self, batch: dict, keys: Sequence[str]) -> None:
    missing = [k for k in keys if k not in batch]
    if missing:
      raise ValueError(f"The batch lacks {missing} (it has {sorted(batch)}); build it with "
                       "data/decoder_features.py (to_model_batch / to_prompt_batch).")

  def _target_log_probs(self, params: Params, batch: dict, dropout_rng=None):
    """(ln p of each next token [batch, L' - 1], its weight (target) [batch, L' - 1],
    logits [batch, L', vocab], next tokens [batch, L' - 1])."""
    self._check_batch(batch, ("tokens", "mask", "target_mask"))
    prefix, embedded, mask, (tokens, target) = self._sequence(
        params, batch, (jnp.asarray(batch["tokens"], jnp.int32),
                        jnp.asarray(batch["target_mask"])), dropout_rng)
    logits, _ = self._apply(params, prefix, embedded, mask, dropout_rng=dropout_rng)
    # ln p = logit - logsumexp, over every slot then sliced: neither the [batch, L', vocab]
    # log-softmax nor a sliced copy of the logits is materialised.
    nxt = tokens[:, 1:]
    ahead = jnp.pad(nxt, ((0, 0), (0, 1)))[..., None]  # each slot's next token (last: unused)
    picked = (jnp.take_along_axis(logits, ahead, axis=-1)[..., 0]
              - jax.nn.logsumexp(logits, axis=-1))[:, :-1]
    return picked, target[:, 1:].astype(jnp.float32), logits, nxt

  # ---- computations -------------------------------------------------------------------------

  def loss(self, params: Params, batch: dict,
           dropout_rng: Array | None = None) -> tuple[Array, dict]:
    """(mean cross-entropy over the target tokens of the batch, metrics 'loss', 'accuracy',
    'num_tokens'), as T5Model.loss; dropout only with `dropout_rng`."""
    log_p, weights, logits, nxt = self._target_log_probs(params, batch, dropout_rng)
    num = jnp.sum(weights)
    loss = -jnp.sum(log_p * weights) / jnp.maximum(num, 1.0)
    hits = (jnp.argmax(logits, axis=-1)[:, :-1] == nxt).astype(jnp.float32)
    return loss, {"loss": loss, "accuracy": jnp.sum(hits * weights) / jnp.maximum(num, 1.0),
                  "num_tokens": num}

  def score(self, params: Params, batch: dict) -> Array:
    """[batch] float32: sum over target tokens (EOS included) of ln p(token)."""
    log_p, weights, _, _ = self._target_log_probs(params, batch)
    return jnp.sum(log_p * weights, axis=-1)

  def _prefill(self, params: Params, batch: dict, extra_slots: int):
    """Prompt + [BOS] + inputs into a fresh KV cache of L' + extra_slots slots ->
    (logits of each row's last real slot [batch, vocab], cache, real slots [batch])."""
    self._check_batch(batch, ("tokens", "mask"))
    prefix, embedded, mask, _ = self._sequence(params, batch)
    last = jnp.argmax(jnp.where(mask, jnp.arange(mask.shape[1]), -1), axis=1)
    logits, cache = self._apply(params, prefix, embedded, mask, cache_slots=extra_slots,
                                logits_at=last)
    count = jnp.sum(mask, axis=1, dtype=jnp.int32)
    return logits[:, 0], cache, count + (0 if prefix is None else prefix.shape[0])

  def _step(self, params: Params, cache, tokens: Array, positions: Array, mask: Array):
    """tokens, positions, mask [n, k] appended to the cache -> (logits [n, k, vocab], cache)."""
    embedded = self.module.apply({"params": params}, tokens, method="embed")
    logits, variables = self.module.apply({"params": params, "cache": cache}, embedded,
                                          positions, mask, decode=True, mutable=["cache"])
    return logits, variables["cache"]

  def score_candidates(self, params: Params, batch: dict, candidates: dict) -> Array:
    """[batch, num_candidates] float32: the `score` of every input with every candidate.

    Rank classification's cost: each input (with its prompt) is run once into a KV cache,
    and only the candidates' tokens run batch x num_candidates times, reading it.

    Args:
      batch: a prompt batch, `tokens` and `mask` [batch, length] of [BOS] + inputs.
      candidates: `tokens` [num_candidates, T] (each target, EOS included, right-padded)
        and `mask` [num_candidates, T] bool (its real tokens), the same for every input.
    """
    self._check_batch(candidates, ("tokens", "mask"))
    cand = jnp.asarray(candidates["tokens"], jnp.int32)
    cand_mask = jnp.asarray(candidates["mask"]).astype(bool)
    num, length = cand.shape
    first_logits, cache, count = self._prefill(params, batch, length)
    size = first_logits.shape[0]
    cache = jax.tree.map(lambda x: x if x.ndim == 0 else jnp.repeat(x, num, axis=0), cache)
    tile = lambda x: jnp.tile(x, (size, 1))  # [batch * num, T], example-major
    positions = jnp.repeat(count, num)[:, None] + jnp.arange(length, dtype=jnp.int32)[None]
    logits, _ = self._step(params, cache, tile(cand), positions, tile(cand_mask))
    logits = jnp.concatenate([jnp.repeat(first_logits, num, axis=0)[:, None],
                              logits[:, :-1]], axis=1)  # the logits predicting each token
    log_p = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_p, tile(cand)[..., None], axis=-1)[..., 0]
    return jnp.sum(picked * tile(cand_mask), axis=-1).reshape(size, num)

  def predict(self, params: Params, batch: dict, *, method: str = "greedy",
              max_new_tokens: int, rng: Array | None = None, beam_size: int = 4,
              **decode_kwargs) -> Array:
    """New tokens [batch, max_new_tokens] int32 after each prompt batch row ([BOS] + inputs,
    any padding), EOS included, 0 after it.

    The prefill runs the prompt and the inputs into the KV cache once; each step then runs
    one token. method: 'greedy', 'beam' (best of `beam_size`) or 'sample' (needs `rng`),
    with decoding.py's options in decode_kwargs.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or (
        max_new_tokens < 1):
      raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive integer.")
    first_logits, cache, count = self._prefill(params, batch, max_new_tokens)
    size = first_logits.shape[0]

    def run(tokens, state):
      logits, cache = self._step(params, state["cache"], tokens, state["position"][:, None],
                                 jnp.ones_like(tokens, bool))
      return logits[:, -1], {**state, "cache": cache, "position": state["position"] + 1}

    def tokens_to_logits(tokens, state):
      """The first call gives the prefill's logits; later ones run the model on one token."""
      return jax.lax.cond(state["started"], run,
                          lambda t, s: (s["first"], {**s, "started": jnp.array(True)}),
                          tokens, state)

    state = {"cache": cache, "position": count, "first": first_logits,
             "started": jnp.array(False)}
    common = dict(batch_size=size, max_length=max_new_tokens, eos_id=self.eos_id,
                  **decode_kwargs)
    if method == "greedy":
      return decoding.greedy(tokens_to_logits, state, **common)
    if method == "beam":
      tokens, _ = decoding.beam_search(tokens_to_logits, state, beam_size=beam_size, **common)
      return tokens[:, 0]
    if method == "sample":
      if rng is None:
        raise ValueError("predict(method='sample') needs an rng.")
      return decoding.temperature_sample(tokens_to_logits, state, rng, **common)
    raise ValueError(f"Unknown decoding method {method!r}; use 'greedy', 'beam' or 'sample'.")


class PromptedDecoderModel(DecoderModel):
  """A frozen decoder-only LM with a trainable soft prompt `prompt/prompt` [prompt_length,
  d_model], placed after BOS (module docstring).

  Args (beyond DecoderModel's):
    prompt_length: PROMPT_LENGTH.
    prompt_initializer: `(rng, embedding, shape) -> prompt` (see `prompts`); default
      `prompts.sampled_vocab()`.
  """

  def __init__(self, config: decoder_config.DecoderConfig, prompt_length: int = 100,
               prompt_initializer: prompts.Initializer | None = None, **kwargs):
    super().__init__(config, **kwargs)
    self.prompt_length = prompts.check_prompt_length(prompt_length)
    self.prompt_initializer = prompt_initializer or prompts.sampled_vocab()
    prompts.check_fits(self.prompt_initializer, self.prompt_length)

  def abstract_params(self) -> Params:
    shape = jax.ShapeDtypeStruct((self.prompt_length, self.config.d_model), jnp.float32)
    return {**super().abstract_params(), "prompt": {"prompt": shape}}

  def param_axes(self) -> Params:
    return {**super().param_axes(), "prompt": {"prompt": prompts.PROMPT_AXES}}

  def init_params(self, rng: Array, frozen_params: Params) -> Params:
    """frozen tree + {'prompt': {'prompt': initializer(rng, embedding, (p, d_model))}}; any
    'prompt' in `frozen_params` is replaced."""
    shape = (self.prompt_length, self.config.d_model)
    prompt = jnp.asarray(self.prompt_initializer(
        rng, frozen_params["token_embedder"]["embedding"], shape), jnp.float32)
    if prompt.shape != shape:
      raise ValueError(f"The prompt initializer returned shape {prompt.shape}, expected "
                       f"{shape} [PROMPT_LENGTH, d_model].")
    frozen = {k: v for k, v in frozen_params.items() if k != "prompt"}
    return {**frozen, "prompt": {"prompt": prompt}}

  def export_prompt(self, trainable: Params) -> np.ndarray | None:
    """The prompt file's content, float32 [prompt_length, d_model]; None without a prompt."""
    prompt = trainable.get("prompt")
    return None if prompt is None else np.asarray(prompt["prompt"], np.float32)

  def with_prompt_file(self, params: Params, value: np.ndarray, source: str) -> Params:
    """`params` with `prompt/prompt` from a prompt file's array, checked against
    PROMPT_LENGTH and d_model (errors name `source`)."""
    from prompt_tuning.checkpoints import prompts_io  # pylint: disable=g-import-not-at-top
    _refuse_deep(value, source)
    value = prompts_io.check_prompt(value, (self.prompt_length, self.config.d_model), source)
    frozen = {k: v for k, v in params.items() if k != "prompt"}
    return {**frozen, "prompt": {"prompt": value}}

  def with_prompt_table(self, params: Params, prompt_list: Sequence[Any],
                        names: Sequence[str] | None = None) -> Params:
    """`params` serving several prompts [p_i, d_model] at once: each batch row picks one by
    `batch['prompt_ids']` and computes what it computes with that prompt alone.
    `prompt` becomes {'table': [n, max p_i, d_model] (zero-padded), 'lengths': [n]}."""
    from prompt_tuning.checkpoints import prompts_io  # pylint: disable=g-import-not-at-top
    if not prompt_list:
      raise ValueError("A prompt table needs at least one prompt.")
    names = list(names) if names is not None else [str(i) for i in range(len(prompt_list))]
    arrays = []
    for name, value in zip(names, prompt_list):
      _refuse_deep(value, name)
      value = prompts_io.check_prompt(value, None, name)
      if value.shape[1] != self.config.d_model or value.shape[0] < 1:
        raise ValueError(f"Prompt {name} has shape {value.shape} but the model needs [length "
                         f">= 1, {self.config.d_model}] (its d_model).")
      arrays.append(np.asarray(value, np.float32))
    longest = max(a.shape[0] for a in arrays)
    table = np.stack([np.pad(a, [(0, longest - a.shape[0]), (0, 0)]) for a in arrays])
    lengths = np.asarray([a.shape[0] for a in arrays], np.int32)
    frozen = {k: v for k, v in params.items() if k != "prompt"}
    return {**frozen, "prompt": {"table": table, "lengths": lengths}}

  def _shared_prompt(self, params: Params, batch: dict) -> Array | None:
    prompt = params.get("prompt")
    if prompt is None or "table" in prompt or batch.get("prompt_ids") is not None:
      return None
    return jnp.asarray(prompt["prompt"])

  def _prompt(self, params: Params, batch: dict) -> tuple[Array, Array | None]:
    prompt = params.get("prompt")
    if prompt is None:
      raise ValueError("The params hold no 'prompt'; call init_params, with_prompt_file or "
                       "with_prompt_table first.")
    size = batch["tokens"].shape[0]
    ids = batch.get("prompt_ids")
    if ids is None:
      if "table" in prompt:
        raise ValueError("These params hold a prompt table; give each example its prompt "
                         "with batch['prompt_ids'].")
      rows = jnp.asarray(prompt["prompt"])
      return jnp.broadcast_to(rows, (size,) + rows.shape), None
    if "table" not in prompt:
      raise ValueError("The batch has prompt_ids but the params hold one prompt; build a "
                       "table with PromptedDecoderModel.with_prompt_table.")
    ids = jnp.asarray(ids, jnp.int32)
    return jnp.take(prompt["table"], ids, axis=0), jnp.take(prompt["lengths"], ids)


def _refuse_deep(value: Any, source: str) -> None:
  """A deep prompt file [layers, p, d] is a T5's (methods/deep.gin): say so here, where a
  decoder-only model reads it, rather than point at a method decoders do not have."""
  shape = np.shape(value)
  if len(shape) == 3:
    raise ValueError(f"Prompt {source} has shape {shape}: a deep prompt [layers, PROMPT_LENGTH, "
                     "d_model] (methods/deep.gin, T5 models only), but a decoder-only model "
                     "takes a plain prompt [PROMPT_LENGTH, d_model].")


def tokenizer_id(model_dir: str, kind: str) -> int | None:
  """The 'bos' (None when the tokenizer adds none), 'eos' or 'pad' id of the tokenizer in the
  decoder model directory `model_dir` (data/hf_tokenizers.py reads it): how gin files give
  the model the ids its data has (models/hf_decoder.gin)."""
  from prompt_tuning.data import hf_tokenizers  # pylint: disable=g-import-not-at-top
  kinds = {"bos": "bos_id", "eos": "eos_id", "pad": "pad_id"}
  if kind not in kinds:
    raise ValueError(f"tokenizer_id kind={kind!r} must be one of {sorted(kinds)}.")
  if model_dir is None:
    raise ValueError("VOCABULARY_PATH=None, but a decoder-only model reads its BOS, EOS and "
                     "pad ids from its own tokenizer; set VOCABULARY_PATH to the model "
                     "directory (models/hf_decoder.gin's default, INITIAL_CHECKPOINT_PATH).")
  ids = hf_tokenizers.decoder_vocabulary(model_dir).special_ids
  return getattr(ids, kinds[kind])
