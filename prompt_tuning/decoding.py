"""Cached autoregressive decoders: greedy, temperature sampling and beam search.

Pure JAX, independent of any model, jit-able (one `lax.while_loop`, fixed shapes). A model is
seen only through

    tokens_to_logits(tokens [n, 1] int32, state) -> (logits [n, vocab] float32, new_state)

where `tokens` is the previous token of each row (0, the decoder start token, at the first step)
and `state` is any pytree (e.g. a KV cache) whose non-scalar leaves have the rows as leading axis.
Scalar leaves (a cache index) are shared by all rows and passed through untouched.

Outputs exclude the start token and hold 0 (padding) after a row's first EOS. A row stops when it
emits EOS; the loop stops as soon as every row is done. `t5_decode_fns` adapts the T5 in
`prompt_tuning.t5.network` to this interface.
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from prompt_tuning.t5 import network

Array = jax.Array
PyTree = Any
TokensToLogits = Callable[[Array, PyTree], tuple[Array, PyTree]]

NEG_INF = -jnp.inf


# ----------------------------------------------------------------------------------------------
# Greedy and sampling: one loop, differing only in how the next token is chosen.


def _decode_loop(tokens_to_logits: TokensToLogits, state: PyTree,
                 choose: Callable[[Array, Array], Array], batch_size: int, max_length: int,
                 eos_id: int) -> Array:
  """Runs `choose(logits [batch, vocab], step) -> [batch]` until EOS or max_length.

  Returns tokens [batch, max_length] int32.
  """
  def cond(carry):
    step, _, _, done, _ = carry
    return (step < max_length) & ~jnp.all(done)

  def body(carry):
    step, last, out, done, state = carry
    logits, state = tokens_to_logits(last[:, None], state)
    token = jnp.where(done, 0, choose(logits.astype(jnp.float32), step).astype(jnp.int32))
    out = jax.lax.dynamic_update_slice(out, token[:, None], (0, step))
    return step + 1, token, out, done | (token == eos_id), state

  zeros = jnp.zeros((batch_size,), jnp.int32)
  carry = (jnp.array(0, jnp.int32), zeros, jnp.zeros((batch_size, max_length), jnp.int32),
           jnp.zeros((batch_size,), bool), state)
  return jax.lax.while_loop(cond, body, carry)[2]


def greedy(tokens_to_logits: TokensToLogits, state: PyTree, *, batch_size: int,
           max_length: int, eos_id: int = 1) -> Array:
  """Argmax decoding -> tokens [batch, max_length] int32 (0 after the first EOS)."""
  choose = lambda logits, step: jnp.argmax(logits, axis=-1)
  return _decode_loop(tokens_to_logits, state, choose, batch_size, max_length, eos_id)


def temperature_sample(tokens_to_logits: TokensToLogits, state: PyTree, rng: Array, *,
                       batch_size: int, max_length: int, temperature: float = 1.0,
                       top_k: int = 0, top_p: float = 1.0, eos_id: int = 1) -> Array:
  """Ancestral sampling from softmax(logits / temperature) -> tokens [batch, max_length] int32.

  temperature 0 is greedy (it may be a traced value). `top_k` > 0 keeps only the k most likely
  tokens; `top_p` < 1 keeps the smallest set of most likely tokens whose probability (after
  temperature and top-k) reaches top_p. Both are static Python numbers. Each step draws with
  `fold_in(rng, step)`, so a given rng reproduces its samples.
  """
  try:
    top_k, top_p = int(top_k), float(top_p)
  except jax.errors.ConcretizationTypeError:
    raise TypeError("temperature_sample: top_k and top_p must be static Python numbers; under "
                    "jax.jit pass them as static arguments (static_argnames) or close over "
                    "them.") from None

  def choose(logits, step):
    safe_t = jnp.where(temperature > 0, temperature, 1.0)
    sampled = _sample(jax.random.fold_in(rng, step), logits / safe_t, top_k, top_p)
    return jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1))
  return _decode_loop(tokens_to_logits, state, choose, batch_size, max_length, eos_id)


def _sample(rng: Array, logits: Array, top_k: int, top_p: float) -> Array:
  """One draw per row from logits [batch, vocab], truncated by top_k / top_p -> [batch]."""
  if top_k <= 0 and top_p >= 1.0:
    return jax.random.categorical(rng, logits, axis=-1)
  k = top_k if 0 < top_k < logits.shape[-1] else logits.shape[-1]
  values, indices = jax.lax.top_k(logits, k)  # sorted, most likely first
  if top_p < 1.0:
    probs = jax.nn.softmax(values, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs  # the most likely token always stays
    values = jnp.where(mass_before < top_p, values, NEG_INF)
  choice = jax.random.categorical(rng, values, axis=-1)
  return jnp.take_along_axis(indices, choice[:, None], axis=-1)[:, 0]


# ----------------------------------------------------------------------------------------------
# Beam search.

LENGTH_PENALTIES = {
    # T5 / GNMT (Wu et al. 2016): ((5 + length) / 6) ** alpha.
    "gnmt": lambda length, alpha: ((5.0 + length) / 6.0) ** alpha,
    # Hugging Face `length_penalty`: length ** alpha.
    "power": lambda length, alpha: length ** alpha,
}


def beam_search(tokens_to_logits: TokensToLogits, state: PyTree, *, batch_size: int,
                max_length: int, beam_size: int = 4, alpha: float = 0.6, eos_id: int = 1,
                length_penalty: str = "gnmt") -> tuple[Array, Array]:
  """Beam search -> (tokens [batch, beam, max_length] int32, scores [batch, beam]), best first.

  A hypothesis scores sum(log p) / penalty(length), length counting its EOS;
  penalty is `LENGTH_PENALTIES[length_penalty]` (default GNMT, as T5). Each step ranks the
  2 * beam_size best continuations of the live beams by summed log-probability; those among the
  first beam_size that end in EOS become finished hypotheses, the best beam_size others stay
  live (as in fairseq and Hugging Face). Live beams reaching max_length are finished unended.
  A row is done when no live beam can beat its worst kept hypothesis, so stopping early never
  changes the result. Slots without any hypothesis score -inf.

  `state` leaves with a leading batch axis are tiled to [batch * beam, ...] (row-major: batch
  then beam) and reordered each step by the beam each survivor came from.
  """
  if length_penalty not in LENGTH_PENALTIES:
    raise ValueError(f"beam_search: length_penalty={length_penalty!r}; use one of "
                     f"{sorted(LENGTH_PENALTIES)}.")
  k = beam_size
  penalty = functools.partial(LENGTH_PENALTIES[length_penalty], alpha=alpha)
  # Log-probs only fall and are <= 0, so no extension of a live beam scores above its log-prob
  # over the largest penalty (monotone in length: at length 1 or at max_length).
  max_penalty = jnp.maximum(penalty(jnp.float32(1)), penalty(jnp.float32(max_length)))

  def cond(carry):
    step, _, _, alive_logp, _, finished_scores, _ = carry
    best_possible = jnp.max(alive_logp, axis=1) / max_penalty
    done = finished_scores[:, -1] >= best_possible
    return (step < max_length) & ~jnp.all(done)

  def body(carry):
    step, last, alive_seqs, alive_logp, finished_seqs, finished_scores, state = carry
    logits, state = tokens_to_logits(last.reshape(batch_size * k, 1), state)
    vocab = logits.shape[-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch_size, k, vocab)
    total = (alive_logp[:, :, None] + logp).reshape(batch_size, k * vocab)
    cand_logp, flat = jax.lax.top_k(total, 2 * k)  # [batch, 2k], best first
    source, token = flat // vocab, flat % vocab
    cand_seqs = _gather(alive_seqs, source)
    cand_seqs = jnp.where(jnp.arange(max_length) == step, token[:, :, None], cand_seqs)
    ends = (token == eos_id) | (step == max_length - 1)

    # Live beams: the k best candidates that did not end.
    alive_logp, keep = jax.lax.top_k(jnp.where(ends, NEG_INF, cand_logp), k)
    alive_seqs, last = _gather(cand_seqs, keep), _gather(token, keep)
    state = _reorder(state, _gather(source, keep), k)

    # Finished: ended candidates among the first k join the kept hypotheses.
    new_scores = jnp.where(ends & (jnp.arange(2 * k) < k), cand_logp / penalty(step + 1.0),
                           NEG_INF)
    finished_scores, best = jax.lax.top_k(
        jnp.concatenate([finished_scores, new_scores], axis=1), k)
    finished_seqs = _gather(jnp.concatenate([finished_seqs, cand_seqs], axis=1), best)
    return step + 1, last, alive_seqs, alive_logp, finished_seqs, finished_scores, state

  seqs = jnp.zeros((batch_size, k, max_length), jnp.int32)
  # Only beam 0 is live at first, so the k beams do not start as k copies of one another.
  alive_logp = jnp.where(jnp.arange(k) == 0, 0.0, NEG_INF) * jnp.ones((batch_size, 1))
  carry = (jnp.array(0, jnp.int32), jnp.zeros((batch_size, k), jnp.int32), seqs,
           alive_logp.astype(jnp.float32), seqs, jnp.full((batch_size, k), NEG_INF),
           _tile(state, k))
  _, _, _, _, finished_seqs, finished_scores, _ = jax.lax.while_loop(cond, body, carry)
  return finished_seqs, finished_scores


def _gather(x: Array, index: Array) -> Array:
  """x [batch, n, ...], index [batch, m] -> [batch, m, ...]."""
  return jax.vmap(lambda row, i: row[i])(x, index)


def _tile(state: PyTree, k: int) -> PyTree:
  """Repeats each row k times: leaves [batch, ...] -> [batch * k, ...]; scalars unchanged."""
  return jax.tree.map(lambda x: x if jnp.ndim(x) == 0 else jnp.repeat(x, k, axis=0), state)


def _reorder(state: PyTree, source: Array, k: int) -> PyTree:
  """Row b * k + j of the new state is row b * k + source[b, j] of the old; scalars unchanged."""
  rows = (jnp.arange(source.shape[0])[:, None] * k + source).reshape(-1)
  return jax.tree.map(lambda x: x if jnp.ndim(x) == 0 else x[rows], state)


# ----------------------------------------------------------------------------------------------
# The T5 of prompt_tuning.t5.network.


def t5_decode_fns(module, params: PyTree, encoded: Array, encoder_mask: Array, *,
                  batch_size: int, max_length: int) -> tuple[TokensToLogits, PyTree]:
  """`tokens_to_logits` and its initial state for a `Transformer` (or subclass).

  encoded [batch, s_len, embed] and encoder_mask [batch, s_len] bool come from `module.encode`
  (prompt positions included, for a prompted subclass). The state is {'cache': zeroed KV
  cache for max_length decoder positions}; its indices are scalars, shared by all rows, so
  beam search leaves them alone. The cross-attention keys and values of the encoding are
  projected once, here, in the layout the steps read (`network.cross_attention_kv`), and
  closed over, not carried: they never change in the loop, and beam search's n = batch *
  beam rows read their sequence's, never repeated copies (pinned by tests/test_decoding.py).
  Call it inside the jitted function that decodes, so `params` are traced, not baked in as
  constants.
  """
  if encoded.shape[0] != batch_size or encoder_mask.shape[0] != batch_size:
    raise ValueError(f"encoded {encoded.shape} and encoder_mask {encoder_mask.shape} must have "
                     f"batch_size={batch_size} rows.")
  decode = functools.partial(module.apply, decode=True, max_decode_length=max_length,
                             mutable=["cache"], method=module.decode)
  cross_kv = network.cross_attention_kv(params, module.config, encoded)
  # Cache creation is a full-length pass; only its shapes are needed.
  full_length = jnp.zeros((batch_size, max_length), jnp.int32)
  _, shapes = jax.eval_shape(decode, {"params": params}, cross_kv, encoder_mask, full_length)
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])

  def tokens_to_logits(tokens: Array, state: PyTree) -> tuple[Array, PyTree]:
    """tokens [n, 1] -> (logits [n, vocab] float32, state with the cache advanced by one)."""
    logits, variables = decode({"params": params, "cache": state["cache"]}, cross_kv,
                               encoder_mask, tokens)
    return logits[:, -1], {**state, "cache": variables["cache"]}

  return tokens_to_logits, {"cache": cache}
