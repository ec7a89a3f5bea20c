"""Where the prompt goes in the encoder's input, and the padding mask that goes with it.

Every combination is a function

    combine(prompt [p, embed], embedded [batch, length, embed], tokens [batch, length])
      -> (combined [batch, out_length, embed], mask [batch, out_length] bool)

or, for a batch whose rows carry different prompts (mixed-task serving, ensembles),
`combine(prompts [batch, p, embed], ..., prompt_lengths=[batch])`: row i uses the first
prompt_lengths[i] rows of prompts[i] and is laid out exactly as it would be alone, followed by
masked padding up to the longest prompt's out_length.

chosen by name with `combiner(position, max_length)`, which the model gin files bind
(`--gin.combine.combiner.position=suffix`):

  prefix            P x1 x2 ... EOS          (the paper's; the default)
  prefix_after_bos  BOS P x1 ... EOS         (for vocabularies that start inputs with BOS)
  suffix            x1 x2 ... P EOS          (after the last real token, before its EOS)

Choices, the same for all three:
- The prompt sits next to the real tokens whatever the padding side: a left-padded row is
  re-packed to the left, so `[0 0 a b EOS]` becomes `[P a b EOS 0 0]`, never `[P 0 0 a b EOS]`
  (which is what PEFT does, and which moves the prompt away from the text in relative
  position). The output is always right-padded; padding rows are zero vectors, masked out.
- The mask marks prompt rows as real tokens, and prompt rows count as sequence positions for
  the relative position biases (they are ordinary encoder positions).
- Length: out_length = length + p, so nothing is ever cut. With `max_length` set,
  out_length = min(length + p, max_length) and a row whose real tokens do not fit loses the
  tail of its input, never the prompt; its EOS (if it had one) is kept as the last token, as
  seqio does when it trims (the frozen T5 always saw inputs ending in EOS).
- Real tokens (id > 0) of a row must be contiguous (no packing), as in the paper's recipe.

`prompt_rows(combine, tokens, p)` says which prompt row each output position holds, for
code that replaces the prompt positions above the input (deep prompts).
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
Combine = Callable[[Array, Array, Array], tuple[Array, Array]]


def prefix(prompt: Array, embedded: Array, tokens: Array, *, max_length: int | None = None,
           eos_id: int = 1, prompt_lengths: Array | None = None) -> tuple[Array, Array]:
  """P before each row's first real token. See the module doc for shapes and choices."""
  split = lambda n_keep, has_eos: jnp.zeros_like(n_keep)
  return _insert(prompt, embedded, tokens, split, max_length, eos_id, prompt_lengths)


def prefix_after_bos(prompt: Array, embedded: Array, tokens: Array, *,
                     max_length: int | None = None, eos_id: int = 1,
                     prompt_lengths: Array | None = None) -> tuple[Array, Array]:
  """P right after each row's first real token (its BOS)."""
  split = lambda n_keep, has_eos: jnp.minimum(n_keep, 1)
  return _insert(prompt, embedded, tokens, split, max_length, eos_id, prompt_lengths)


def suffix(prompt: Array, embedded: Array, tokens: Array, *, max_length: int | None = None,
           eos_id: int = 1, prompt_lengths: Array | None = None) -> tuple[Array, Array]:
  """P after each row's last real token, before its EOS (at the end if it has none)."""
  split = lambda n_keep, has_eos: n_keep - has_eos.astype(n_keep.dtype)
  return _insert(prompt, embedded, tokens, split, max_length, eos_id, prompt_lengths)


def _insert(prompt: Array, embedded: Array, tokens: Array,
            split_fn: Callable[[Array, Array], Array], max_length: int | None,
            eos_id: int, prompt_lengths: Array | None = None) -> tuple[Array, Array]:
  """Puts P at real-token offset `split_fn(n_keep [b], has_eos [b]) -> [b]` of each row.

  Output position j of a row holds real token j (j < split), prompt row j - split, or real
  token j - p_row (gathered from the row's input position), or padding; p_row is the row's
  prompt length (prompt_lengths[row], or all of a shared [p, embed] prompt).
  """
  batch, length, _ = embedded.shape
  p = prompt.shape[-2]                       # the longest prompt
  out_length = length + p if max_length is None else min(length + p, max_length)
  if out_length <= p:
    raise ValueError(f"max_length={max_length} leaves no room for input tokens beside a prompt "
                     f"of length {p}; raise max_length above PROMPT_LENGTH.")
  p_row = (jnp.full((batch,), p, jnp.int32) if prompt_lengths is None
           else jnp.asarray(prompt_lengths, jnp.int32))[:, None]
  real = tokens > 0
  n = real.sum(axis=1)                       # [b] real tokens
  first = jnp.argmax(real, axis=1)           # [b] input position of the first (0 if none)
  last_token = jnp.take_along_axis(tokens, (first + jnp.maximum(n - 1, 0))[:, None], 1)[:, 0]
  has_eos = (n > 0) & (last_token == eos_id)
  n_keep = jnp.minimum(n, out_length - p_row[:, 0])  # real tokens that fit
  cut = n > n_keep
  split = split_fn(n_keep, has_eos)[:, None]

  j = jnp.arange(out_length)[None, :]
  is_prompt = (j >= split) & (j < split + p_row)
  r = jnp.where(j < split, j, j - p_row)     # index among the row's real tokens
  is_real = ~is_prompt & (r >= 0) & (r < n_keep[:, None])
  keep_eos = (cut & has_eos)[:, None] & (r == n_keep[:, None] - 1)
  r = jnp.where(keep_eos, n[:, None] - 1, r)
  position = jnp.clip(first[:, None] + r, 0, length - 1)

  from_input = jnp.take_along_axis(embedded, position[..., None], axis=1)
  prompt_row = jnp.clip(j - split, 0, p - 1)
  prompt = prompt.astype(embedded.dtype)
  if prompt.ndim == 2:
    from_prompt = jnp.take(prompt, prompt_row, axis=0)
  else:
    from_prompt = jnp.take_along_axis(prompt, prompt_row[..., None], axis=1)
  combined = jnp.where(is_prompt[..., None], from_prompt,
                       jnp.where(is_real[..., None], from_input, 0))
  return combined, is_prompt | is_real


def prompt_rows(combine: Combine, tokens: Array, prompt_length: int,
                prompt_lengths: Array | None = None) -> Array:
  """Which prompt row `combine` puts at each output position: [batch, out_length] int32,
  the row's index in [0, prompt_length) at prompt positions, -1 at tokens and padding.

  Read from the combination itself, so it holds for any `Combine` (a position, max_length,
  or one of the user's own): it combines a one-wide prompt whose row r holds r + 1 with
  all-zero inputs, and reads the numbers back. prompt_lengths [batch], as for a mixed-prompt
  batch: row i places only the first prompt_lengths[i] rows of its prompt.
  """
  marks = jnp.arange(1, prompt_length + 1, dtype=jnp.float32)[:, None]  # [p, 1], exact ints
  zeros = jnp.zeros((*tokens.shape, 1), jnp.float32)
  if prompt_lengths is None:
    combined, _ = combine(marks, zeros, tokens)
  else:
    marks = jnp.broadcast_to(marks, (tokens.shape[0], prompt_length, 1))
    combined, _ = combine(marks, zeros, tokens, prompt_lengths=prompt_lengths)
  return combined[..., 0].astype(jnp.int32) - 1


POSITIONS = {"prefix": prefix, "prefix_after_bos": prefix_after_bos, "suffix": suffix}


def combiner(position: str = "prefix", max_length: int | None = None,
             eos_id: int = 1) -> Combine:
  """The combination named `position` ('prefix', 'prefix_after_bos', 'suffix').

  max_length: None keeps length + prompt_length; else the cap on the combined length.
  """
  if position not in POSITIONS:
    raise ValueError(f"Unknown prompt position {position!r}; use one of {sorted(POSITIONS)}.")
  if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
    raise ValueError(f"combiner max_length={max_length!r} must be None or an integer > "
                     "PROMPT_LENGTH.")
  return functools.partial(POSITIONS[position], max_length=max_length, eos_id=eos_id)
