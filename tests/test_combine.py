"""Token order and masks of each prompt combination, on ragged (right- and left-padded) batches."""

import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import combine

P = 2  # prompt rows are -1, -2 so they are easy to tell from token ids
PROMPT = -jnp.arange(1, P + 1, dtype=jnp.float32)[:, None]

RIGHT = [[5, 6, 7, 1],
         [8, 1, 0, 0],
         [0, 0, 0, 0]]
LEFT = [[5, 6, 7, 1],
        [0, 0, 8, 1],
        [0, 0, 0, 0]]


def run(fn, tokens, **kwargs):
  """Embeds token t as the 1-vector [t]; returns (row contents as ints, mask as ints)."""
  tokens = jnp.asarray(tokens, jnp.int32)
  combined, mask = fn(PROMPT, tokens[..., None].astype(jnp.float32), tokens, **kwargs)
  assert combined.shape[:2] == mask.shape and mask.dtype == jnp.bool_
  return np.asarray(combined[..., 0]).astype(int).tolist(), np.asarray(mask).astype(int).tolist()


@pytest.mark.parametrize("tokens", [RIGHT, LEFT], ids=["right_padded", "left_padded"])
def test_prefix(tokens):
  rows, mask = run(combine.prefix, tokens)
  assert rows == [[-1, -2, 5, 6, 7, 1],
                  [-1, -2, 8, 1, 0, 0],
                  [-1, -2, 0, 0, 0, 0]]
  assert mask == [[1, 1, 1, 1, 1, 1],
                  [1, 1, 1, 1, 0, 0],
                  [1, 1, 0, 0, 0, 0]]


@pytest.mark.parametrize("tokens", [RIGHT, LEFT], ids=["right_padded", "left_padded"])
def test_prefix_after_bos(tokens):
  rows, mask = run(combine.prefix_after_bos, tokens)
  assert rows == [[5, -1, -2, 6, 7, 1],
                  [8, -1, -2, 1, 0, 0],
                  [-1, -2, 0, 0, 0, 0]]
  assert mask == [[1, 1, 1, 1, 1, 1],
                  [1, 1, 1, 1, 0, 0],
                  [1, 1, 0, 0, 0, 0]]


@pytest.mark.parametrize("tokens", [RIGHT, LEFT], ids=["right_padded", "left_padded"])
def test_suffix_goes_before_eos(tokens):
  rows, mask = run(combine.suffix, tokens)
  assert rows == [[5, 6, 7, -1, -2, 1],
                  [8, -1, -2, 1, 0, 0],
                  [-1, -2, 0, 0, 0, 0]]
  assert mask == [[1, 1, 1, 1, 1, 1],
                  [1, 1, 1, 1, 0, 0],
                  [1, 1, 0, 0, 0, 0]]


def test_suffix_without_eos_goes_at_the_end():
  rows, mask = run(combine.suffix, [[5, 6, 0, 0]])
  assert rows == [[5, 6, -1, -2, 0, 0]] and mask == [[1, 1, 1, 1, 0, 0]]


def test_max_length_cuts_the_input_tail_keeps_eos_and_prompt():
  tokens = [[5, 6, 7, 8, 1],   # too long: 5 + 2 > 5
            [5, 6, 7, 8, 9],   # too long, no EOS: plain cut
            [5, 1, 0, 0, 0]]   # fits
  rows, mask = run(combine.prefix, tokens, max_length=5)
  assert rows == [[-1, -2, 5, 6, 1],
                  [-1, -2, 5, 6, 7],
                  [-1, -2, 5, 1, 0]]
  assert mask == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
  rows, _ = run(combine.suffix, tokens, max_length=5)
  assert rows == [[5, 6, -1, -2, 1],
                  [5, 6, 7, -1, -2],
                  [5, -1, -2, 1, 0]]


def test_max_length_above_need_keeps_length_plus_prompt():
  rows, _ = run(combine.prefix, RIGHT, max_length=100)
  assert len(rows[0]) == 4 + P


def test_max_length_must_leave_room_for_input():
  with pytest.raises(ValueError, match="max_length=2"):
    run(combine.prefix, RIGHT, max_length=2)


def test_prompt_takes_activation_dtype():
  tokens = jnp.asarray(RIGHT, jnp.int32)
  embedded = jnp.zeros((3, 4, 1), jnp.bfloat16)
  combined, _ = combine.prefix(PROMPT, embedded, tokens)
  assert combined.dtype == jnp.bfloat16


# ---- which prompt row sits where (for layers above the input: deep prompts) -------------------


def test_prompt_rows_by_hand():
  # -1: a token or padding; r: prompt row r. The same layouts as the combinations above.
  assert combine.prompt_rows(combine.prefix, jnp.asarray(LEFT), P).tolist() == [
      [0, 1, -1, -1, -1, -1], [0, 1, -1, -1, -1, -1], [0, 1, -1, -1, -1, -1]]
  assert combine.prompt_rows(combine.prefix_after_bos, jnp.asarray(RIGHT), P).tolist() == [
      [-1, 0, 1, -1, -1, -1], [-1, 0, 1, -1, -1, -1], [0, 1, -1, -1, -1, -1]]
  assert combine.prompt_rows(combine.suffix, jnp.asarray(LEFT), P).tolist() == [
      [-1, -1, -1, 0, 1, -1], [-1, 0, 1, -1, -1, -1], [0, 1, -1, -1, -1, -1]]
  cut = combine.combiner("suffix", max_length=5)
  assert combine.prompt_rows(cut, jnp.asarray([[5, 6, 7, 8, 9], [5, 1, 0, 0, 0]]), P).tolist() \
      == [[-1, -1, -1, 0, 1], [-1, 0, 1, -1, -1]]


@pytest.mark.parametrize("position", ["prefix", "prefix_after_bos", "suffix"])
def test_prompt_rows_of_a_mixed_batch_are_each_rows_alone(position):
  fn = combine.combiner(position)
  tokens = jnp.asarray(LEFT)
  mixed = combine.prompt_rows(fn, tokens, 3, prompt_lengths=jnp.asarray([3, 1, 2]))
  assert mixed.shape == (3, 4 + 3)
  for i, length in enumerate([3, 1, 2]):
    alone = combine.prompt_rows(fn, tokens[i:i + 1], length)[0].tolist()
    assert mixed[i].tolist() == alone + [-1] * (3 - length)  # then masked padding
  assert mixed[1].tolist().count(0) == 1 and 1 not in mixed[1].tolist()
