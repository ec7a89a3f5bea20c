"""Decoders against independent answers: hand-computed and brute-force toy models, the uncached
T5 decoder, and Hugging Face `generate` on the same random weights."""

import functools
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import decoding
from prompt_tuning.checkpoints import base, huggingface
from prompt_tuning.t5 import network
from prompt_tuning.t5.config import get_config

EOS = 1


def _pad_after_eos(tokens: np.ndarray) -> np.ndarray:
  """Zeros every position after a row's first EOS (last axis)."""
  tokens = np.array(tokens)
  after = np.cumsum(np.cumsum(tokens == EOS, axis=-1), axis=-1) > 1
  return np.where(after, 0, tokens)


# ----------------------------------------------------------------------------------------------
# Toy models: logits from a transition table, a per-row bias and a penalty on repeats, so the
# answer depends on every row's own history (the state beam search must reorder).


def _toy(table, row_bias, repeat_penalty=0.0, calls=None):
  """tokens_to_logits and state for the toy model; `calls` (a list) counts model calls."""
  table, row_bias = jnp.asarray(table, jnp.float32), jnp.asarray(row_bias, jnp.float32)

  def tokens_to_logits(tokens, state):
    if calls is not None:
      jax.debug.callback(lambda: calls.append(1))
    prev = tokens[:, 0]
    counts = state["counts"].at[jnp.arange(prev.shape[0]), prev].add(state["step"] > 0)
    logits = table[prev] + state["row_bias"] - repeat_penalty * counts
    return logits, {"counts": counts, "row_bias": state["row_bias"], "step": state["step"] + 1}

  state = {"counts": jnp.zeros(row_bias.shape, jnp.float32), "row_bias": row_bias,
           "step": jnp.array(0, jnp.int32)}
  return tokens_to_logits, state


def _toy_log_probs(table, row_bias, repeat_penalty, seq):
  """Numpy replay of the toy model on one row: log p of each token of `seq`."""
  counts, prev, out = np.zeros(len(row_bias)), 0, []
  for step, token in enumerate(seq):
    if step > 0:
      counts[prev] += 1
    logits = np.asarray(table[prev] + row_bias - repeat_penalty * counts, np.float64)
    out.append(logits[token] - np.log(np.exp(logits).sum()))
    prev = token
  return np.array(out)


def _chain_table():
  """Start -> 3 -> 2 -> 4 -> EOS by a margin of 3 nats at each step."""
  table = np.zeros((5, 5), np.float32)
  for prev, nxt in [(0, 3), (3, 2), (2, 4), (4, EOS), (EOS, 2)]:
    table[prev, nxt] = 3.0
  return table


def test_greedy_toy_by_hand():
  table = _chain_table()
  row_bias = np.zeros((2, 5), np.float32)
  row_bias[1, 4] = 5.0  # row 1 prefers 4 from the start: 4 4 4 ... (3 + 5 < 5 + 0 never wins)
  fn, state = _toy(table, row_bias)
  tokens = jax.jit(functools.partial(decoding.greedy, fn, batch_size=2, max_length=6))(state)
  np.testing.assert_array_equal(tokens, [[3, 2, 4, 1, 0, 0], [4, 4, 4, 4, 4, 4]])


def test_greedy_stops_when_every_row_is_done():
  calls = []
  fn, state = _toy(_chain_table(), np.zeros((3, 5), np.float32), calls=calls)
  tokens = decoding.greedy(fn, state, batch_size=3, max_length=10)
  jax.block_until_ready(tokens)
  np.testing.assert_array_equal(tokens, [[3, 2, 4, 1] + [0] * 6] * 3)
  assert len(calls) == 4


def test_beam_toy_by_hand():
  """Greedy takes 2 (p .5) and reaches at best .5 * .45; a beam of 2 finds 3 EOS (.4 * .9)."""
  p = np.full((4, 4), 1e-9)
  p[0, 1:] = [0.1, 0.5, 0.4]  # after start: EOS .1, 2 .5, 3 .4
  p[2, 1:] = [0.2, 0.45, 0.35]
  p[3, 1:] = [0.9, 0.06, 0.04]
  fn, state = _toy(np.log(p), np.zeros((1, 4)))
  np.testing.assert_array_equal(decoding.greedy(fn, state, batch_size=1, max_length=2), [[2, 2]])
  # Step 1 ranks 3 EOS .36, 2 2 .225 (cut at max_length), 2 3 .175, 2 EOS .1.
  alpha = 0.8
  tokens, scores = decoding.beam_search(fn, state, batch_size=1, max_length=2, beam_size=2,
                                        alpha=alpha)
  gnmt = ((5 + 2) / 6) ** alpha
  np.testing.assert_array_equal(tokens[0], [[3, 1], [2, 2]])
  np.testing.assert_allclose(scores[0], np.log([0.36, 0.225]) / gnmt, rtol=1e-5)
  # The HF-style penalty length ** alpha at alpha 0 leaves plain log-probabilities.
  _, scores = decoding.beam_search(fn, state, batch_size=1, max_length=2, beam_size=2, alpha=0,
                                   length_penalty="power")
  np.testing.assert_allclose(scores[0], np.log([0.36, 0.225]), rtol=1e-5)


def test_beam_search_stops_when_no_live_beam_can_win():
  calls = []
  fn, state = _toy(_chain_table(), np.zeros((2, 5), np.float32), calls=calls)
  tokens, scores = decoding.beam_search(fn, state, batch_size=2, max_length=12, beam_size=2,
                                        alpha=0.0)
  jax.block_until_ready(tokens)
  np.testing.assert_array_equal(tokens[:, 0], [[3, 2, 4, 1] + [0] * 8] * 2)
  np.testing.assert_allclose(scores[:, 0], 4 * -np.log1p(4 * np.exp(-3.0)), rtol=1e-5)
  assert len(calls) < 12


@pytest.mark.parametrize("length_penalty,alpha", [("gnmt", 0.6), ("power", 1.5)])
def test_wide_beam_equals_exhaustive_search(length_penalty, alpha):
  """Vocab 4, length 3: a beam of 48 holds all 40 hypotheses, so it must rank them exactly."""
  vocab, length, beam = 4, 3, 48
  rng = np.random.default_rng(0)
  table = rng.normal(size=(vocab, vocab)).astype(np.float32) * 2
  row_bias = rng.normal(size=(2, vocab)).astype(np.float32)
  fn, state = _toy(table, row_bias, repeat_penalty=1.0)
  search = functools.partial(decoding.beam_search, fn, batch_size=2, max_length=length,
                             beam_size=beam, alpha=alpha, length_penalty=length_penalty)
  tokens, scores = jax.jit(search)(state)
  penalty = lambda n: decoding.LENGTH_PENALTIES[length_penalty](float(n), alpha)

  for row in range(2):
    hypotheses = {}  # every sequence that ends in EOS or reaches the maximum length
    for seq in itertools.product(range(vocab), repeat=length):
      n = seq.index(EOS) + 1 if EOS in seq else length
      logp = _toy_log_probs(table, row_bias[row], 1.0, seq[:n]).sum()
      hypotheses[seq[:n] + (0,) * (length - n)] = logp / penalty(n)
    ranked = sorted(hypotheses.items(), key=lambda kv: -kv[1])
    assert len(ranked) == 1 + 3 + 9 + 27
    np.testing.assert_array_equal(tokens[row, :len(ranked)], [seq for seq, _ in ranked])
    np.testing.assert_allclose(scores[row, :len(ranked)], [s for _, s in ranked], rtol=1e-5)
    assert np.all(np.isneginf(scores[row, len(ranked):]))  # slots left without a hypothesis


def test_sampling_distribution_on_one_step():
  """One step from fixed probabilities: frequencies follow temperature, top_k and top_p."""
  probs = np.array([1e-9, 0.05, 0.5, 0.3, 0.15])
  n = 20000
  fn, state = _toy(np.log(probs)[None].repeat(5, 0), np.zeros((n, 5)))
  rng = jax.random.PRNGKey(0)
  def freq(**kw):
    sample = jax.jit(functools.partial(decoding.temperature_sample, fn, batch_size=n,
                                       max_length=1, **kw))
    return np.bincount(np.asarray(sample(state, rng))[:, 0], minlength=5) / n

  np.testing.assert_allclose(freq(), probs, atol=0.015)
  sharp = probs ** 2 / (probs ** 2).sum()
  np.testing.assert_allclose(freq(temperature=0.5), sharp, atol=0.015)
  np.testing.assert_allclose(freq(top_k=3), [0, 0, 0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95],
                             atol=0.015)
  # Nucleus 0.7: {2, 3} (mass .8); tokens after the mass reaches .7 never appear.
  np.testing.assert_allclose(freq(top_p=0.7), [0, 0, 0.625, 0.375, 0], atol=0.015)
  np.testing.assert_allclose(freq(top_p=0.9, top_k=2), [0, 0, 0.625, 0.375, 0], atol=0.015)
  with pytest.raises(TypeError, match="top_k and top_p must be static"):
    jax.jit(functools.partial(decoding.temperature_sample, fn, batch_size=n, max_length=1))(
        state, rng, top_k=3)


# ----------------------------------------------------------------------------------------------
# A tiny random T5 from network.py. T5X's initialisation makes a near-constant random model, so
# the weights are redrawn larger (and EOS made likelier) to give varied outputs that end.

VOCAB, MAX_LENGTH = 40, 8
ENCODER_TOKENS = np.array([[27, 6, 7, 8, 9, 1], [3, 4, 1, 0, 0, 0], [12, 13, 14, 15, 1, 0],
                           [22, 1, 0, 0, 0, 0]], np.int32)


@functools.lru_cache(maxsize=None)
def _tiny_t5():
  cfg = get_config("t5_1_1_tiny", vocab_size=VOCAB, emb_dim=16, num_heads=2, head_dim=8,
                   mlp_dim=32)
  rng = np.random.default_rng(2)

  def draw(path, shape):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return rng.uniform(0.5, 1.5, shape.shape)
    z = rng.normal(size=shape.shape)
    return z * 3 / np.sqrt(shape.shape[0]) if "kernel" in name else z

  params = jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.asarray(draw(p, x), jnp.float32), network.param_shapes(cfg))
  logits_kernel = params["decoder"]["logits_dense"]["kernel"]
  params["decoder"]["logits_dense"]["kernel"] = logits_kernel.at[:, EOS].multiply(1.5)
  module = network.Transformer(cfg)
  encoded, mask = module.apply({"params": params}, jnp.asarray(ENCODER_TOKENS),
                               method=module.encode)
  return module, params, encoded, mask


def _t5_fns(repeat=1):
  module, params, encoded, mask = _tiny_t5()
  encoded, mask = jnp.repeat(encoded, repeat, 0), jnp.repeat(mask, repeat, 0)
  return decoding.t5_decode_fns(module, params, encoded, mask, batch_size=encoded.shape[0],
                                max_length=MAX_LENGTH)


def _uncached_logits(prefixes):
  """Logits [batch, MAX_LENGTH, vocab] of the full (non-decode) decoder: position t sees the
  start token and prefixes[:, :t]."""
  module, params, encoded, mask = _tiny_t5()
  repeat = prefixes.shape[0] // encoded.shape[0]
  inputs = jnp.pad(jnp.asarray(prefixes), ((0, 0), (1, 0)))[:, :MAX_LENGTH]
  return module.apply({"params": params}, jnp.repeat(encoded, repeat, 0),
                      jnp.repeat(mask, repeat, 0), inputs, method=module.decode)


def test_t5_state_has_scalar_cache_indices_and_batch_leading_leaves():
  _, state = _t5_fns()
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  indices = [x for p, x in flat if "cache_index" in jax.tree_util.keystr(p)]
  others = [x for p, x in flat if "cache_index" not in jax.tree_util.keystr(p)]
  assert len(indices) == 2 and all(x.shape == () for x in indices)
  assert all(x.shape[0] == len(ENCODER_TOKENS) for x in others)


def _hlo_computations(hlo: str) -> dict[str, list[str]]:
  """Compiled HLO text -> {computation name: its instruction lines}."""
  computations, name = {}, None
  for line in hlo.split("\n"):
    start = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if start:
      name = start.group(1)
      computations[name] = []
    elif line.startswith("}"):
      name = None
    elif name:
      computations[name].append(line)
  return computations


def _loop_instructions(hlo: str) -> list[str]:
  """The instructions run inside the while loops (their bodies and what those call)."""
  computations = _hlo_computations(hlo)
  todo = [b for lines in computations.values() for line in lines
          for b in re.findall(r"while\(.*body=%?([\w.\-]+)", line)]
  seen = set()
  while todo:
    name = todo.pop()
    if name in seen or name not in computations:
      continue
    seen.add(name)
    for line in computations[name]:
      todo += re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", line)
  return [line for name in seen for line in computations[name]]


def _shapes(lines: list[str], op: str) -> list[str]:
  """The result shapes of the `op` instructions among `lines`, e.g. '[2,2,37]'."""
  return [m.group(1) for line in lines
          for m in [re.search(rf"= \w+(\[[\d,]*\])\S* {op}\(", line)] if m]


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_encoder_keys_and_values_are_computed_once_not_per_decoding_step(method):
  # 34 input tokens + a 3-row prompt = 37 encoder positions, a size nothing else has; 7
  # decoder positions (6 + the start), ditto.
  from prompt_tuning import model as model_lib
  cfg = get_config("t5_1_1_tiny").replace(vocab_size=96, emb_dim=24, num_heads=2,
                                           head_dim=5, mlp_dim=40)
  m = model_lib.PromptedT5Model(cfg, prompt_length=3)
  params = m.random_params(jax.random.PRNGKey(0))
  batch = {"encoder_input_tokens": np.ones((2, 34), np.int32)}
  predict = jax.jit(lambda p, b: m.predict(p, b, method=method, max_decode_length=6))
  loop = _loop_instructions(predict.lower(params, batch).compile().as_text())
  # Per step and layer, cross-attention reads the encoder positions in two products: each
  # sequence's queries (its 4 beams together) x its keys -> [2 sequences, 2 heads, (4,) 37],
  # and weights x values (contracting the 37). The key and value projections of the encoding
  # ([rows * 37, heads * head_dim]) must not be in the loop, and neither may a transpose or
  # copy of the projected keys and values or of the self-attention cache: the layouts the
  # products read are made once, before the loop (layout assignment used to add one per
  # layer and step, after XLA had hoisted the projections).
  dots = _shapes(loop, "dot")
  expected = "[2,2,37]" if method == "greedy" else "[2,2,4,37]"
  assert [s for s in dots if "37" in s] == [expected] * cfg.num_decoder_layers, dots
  assert "[74,10]" not in dots and "[296,10]" not in dots
  moved = [s for op in ("transpose", "copy") for s in _shapes(loop, op)
           if re.search(r"\b(37|7)\b", s)]
  assert moved == [], moved


def test_t5_cached_greedy_equals_uncached_argmax_loop():
  fn, state = _t5_fns()
  batch = len(ENCODER_TOKENS)
  tokens = jax.jit(functools.partial(decoding.greedy, fn, batch_size=batch,
                                     max_length=MAX_LENGTH))(state)
  uncached = jax.jit(_uncached_logits)
  expected = np.zeros((batch, MAX_LENGTH), np.int32)
  for t in range(MAX_LENGTH):
    expected[:, t] = np.argmax(uncached(expected)[:, t], axis=-1)
  expected = _pad_after_eos(expected)
  np.testing.assert_array_equal(tokens, expected)
  assert (expected == EOS).any() and (expected[:, -1] != 0).any()  # rows that end, and not


def test_t5_beam_of_one_equals_greedy():
  fn, state = _t5_fns()
  batch = len(ENCODER_TOKENS)
  greedy = decoding.greedy(fn, state, batch_size=batch, max_length=MAX_LENGTH)
  # alpha 0: a length penalty could let a longer beam-1 hypothesis beat an early EOS.
  tokens, scores = jax.jit(functools.partial(
      decoding.beam_search, fn, batch_size=batch, max_length=MAX_LENGTH, beam_size=1,
      alpha=0.0))(state)
  np.testing.assert_array_equal(tokens[:, 0], greedy)
  logp = jax.nn.log_softmax(_uncached_logits(np.asarray(greedy)))
  expected = np.take_along_axis(np.asarray(logp), np.asarray(greedy)[..., None], -1)[..., 0]
  real = np.cumsum(np.asarray(greedy) == EOS, axis=1) - (np.asarray(greedy) == EOS) == 0
  np.testing.assert_allclose(scores[:, 0], (expected * real).sum(1), rtol=1e-4)


def test_t5_beam_search_beats_or_equals_greedy():
  fn, state = _t5_fns()
  search = functools.partial(decoding.beam_search, fn, state, batch_size=len(ENCODER_TOKENS),
                             max_length=MAX_LENGTH, alpha=0.0)
  _, scores = search(beam_size=4)
  _, greedy_scores = search(beam_size=1)
  assert np.all(np.diff(scores, axis=1) <= 0)  # best first
  assert np.all(scores[:, 0] >= greedy_scores[:, 0] - 1e-5)
  assert np.any(scores[:, 0] > greedy_scores[:, 0] + 0.1)  # this model gives beams a job


def test_t5_sampling_cold_or_top1_equals_greedy():
  fn, state = _t5_fns()
  batch = len(ENCODER_TOKENS)
  greedy = decoding.greedy(fn, state, batch_size=batch, max_length=MAX_LENGTH)
  sample = functools.partial(decoding.temperature_sample, fn, batch_size=batch,
                             max_length=MAX_LENGTH)
  rng = jax.random.PRNGKey(3)
  np.testing.assert_array_equal(jax.jit(sample)(state, rng, temperature=0.0), greedy)
  np.testing.assert_array_equal(sample(state, rng, temperature=1e-4), greedy)
  np.testing.assert_array_equal(sample(state, rng, temperature=5.0, top_k=1), greedy)


def test_t5_sampling_is_reproducible_and_respects_top_k():
  repeat, top_k = 8, 3
  fn, state = _t5_fns(repeat)
  batch = len(ENCODER_TOKENS) * repeat
  sample = jax.jit(functools.partial(decoding.temperature_sample, fn, batch_size=batch,
                                     max_length=MAX_LENGTH, temperature=2.0, top_k=top_k))
  a, b = sample(state, jax.random.PRNGKey(0)), sample(state, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, sample(state, jax.random.PRNGKey(1)))

  a = np.asarray(a)
  logits = np.asarray(_uncached_logits(a))
  kth_best = np.sort(logits, axis=-1)[..., -top_k]
  chosen = np.take_along_axis(logits, a[..., None], -1)[..., 0]
  real = np.cumsum(a == EOS, axis=1) - (a == EOS) == 0  # up to and including the first EOS
  assert np.all(chosen[real] >= kth_best[real])
  assert len(np.unique(a[real])) > top_k  # the draws do vary across steps and rows
  assert np.all(a[~real] == 0)


# ----------------------------------------------------------------------------------------------
# Parity with Hugging Face generate on a random T5ForConditionalGeneration, saved and read back
# through prompt_tuning.checkpoints.huggingface.

try:
  import torch
  import transformers
except ImportError:  # the parity extra is not installed: skip only these tests
  torch = transformers = None
needs_hf = pytest.mark.skipif(torch is None, reason="needs torch and transformers")

HF_VOCAB, HF_NEW_TOKENS = 100, 10
HF_INPUTS = np.array([[42, 93, 58, 72, 13, 24, 1], [44, 66, 66, 85, 1, 0, 0],
                      [42, 95, 1, 0, 0, 0, 0], [16, 65, 69, 46, 48, 52, 1],
                      [16, 1, 0, 0, 0, 0, 0], [88, 11, 11, 30, 27, 1, 0]])


@functools.lru_cache(maxsize=None)
def _hf_model():
  """A random float32 T5 1.1-style model (gated GELU, untied head), weights redrawn larger."""
  config = transformers.T5Config(
      vocab_size=HF_VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
      num_heads=4, relative_attention_num_buckets=32, relative_attention_max_distance=128,
      feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
      decoder_start_token_id=0, pad_token_id=0, eos_token_id=EOS)
  torch.manual_seed(0)
  model = transformers.T5ForConditionalGeneration(config).eval()
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.copy_(0.5 + torch.rand(p.shape, generator=gen))
      elif name.startswith(("shared", "lm_head")) or "relative_attention_bias" in name:
        p.copy_(torch.randn(p.shape, generator=gen))
      else:
        p.copy_(torch.randn(p.shape, generator=gen) * 3 / p.shape[1] ** 0.5)
    model.lm_head.weight[0] *= 0.1  # padding rarely wins
    model.lm_head.weight[EOS] *= 1.5
  return model


@pytest.fixture(scope="module")
def ours_from_hf(tmp_path_factory):
  """(tokens_to_logits, state) of our T5 on the HF weights, read back with our HF reader."""
  directory = tmp_path_factory.mktemp("hf_t5")
  _hf_model().save_pretrained(directory)
  cfg = huggingface.config_from_hf(directory)
  lazy = huggingface.read_huggingface(directory, cfg)
  params = base.unflatten({name: jnp.asarray(a.read_all()) for name, a in lazy.items()})
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, network.param_shapes(cfg))
  module = network.Transformer(cfg)
  encoded, mask = module.apply({"params": params}, jnp.asarray(HF_INPUTS), method=module.encode)
  return decoding.t5_decode_fns(module, params, encoded, mask, batch_size=len(HF_INPUTS),
                                max_length=HF_NEW_TOKENS)


def _hf_generate(**kwargs):
  ids = torch.tensor(HF_INPUTS)
  with torch.no_grad():
    return _hf_model().generate(
        input_ids=ids, attention_mask=(ids > 0).long(), max_new_tokens=HF_NEW_TOKENS,
        min_length=0, do_sample=False, eos_token_id=EOS, pad_token_id=0,
        decoder_start_token_id=0, **kwargs)


def _hf_tokens(sequences, rows):
  """Drops the start token, pads to our length, zeros after EOS (HF's beam pads with EOS)."""
  tokens = sequences[:, 1:].numpy()
  tokens = np.pad(tokens, ((0, 0), (0, HF_NEW_TOKENS - tokens.shape[1])))
  return _pad_after_eos(tokens.reshape(rows, -1, HF_NEW_TOKENS))


@needs_hf
def test_greedy_matches_hugging_face(ours_from_hf):
  fn, state = ours_from_hf
  ours = decoding.greedy(fn, state, batch_size=len(HF_INPUTS), max_length=HF_NEW_TOKENS)
  theirs = _hf_tokens(_hf_generate(num_beams=1), len(HF_INPUTS))[:, 0]
  np.testing.assert_array_equal(ours, theirs)
  assert (theirs == EOS).any(axis=1).sum() >= 2 and (theirs[:, -1] != 0).any()


@needs_hf
def test_beam_search_matches_hugging_face(ours_from_hf):
  """HF's canonical beam search (early_stopping='never') with its length ** alpha penalty."""
  beam, alpha = 4, 0.6
  fn, state = ours_from_hf
  tokens, scores = jax.jit(functools.partial(
      decoding.beam_search, fn, batch_size=len(HF_INPUTS), max_length=HF_NEW_TOKENS,
      beam_size=beam, alpha=alpha, length_penalty="power"))(state)
  out = _hf_generate(num_beams=beam, num_return_sequences=beam, length_penalty=alpha,
                     early_stopping="never", return_dict_in_generate=True, output_scores=True)
  theirs = _hf_tokens(out.sequences, len(HF_INPUTS))
  np.testing.assert_array_equal(tokens, theirs)
  np.testing.assert_allclose(scores, out.sequences_scores.numpy().reshape(-1, beam),
                             rtol=1e-4)
  ended = (theirs == EOS).any(axis=2)
  assert ended.any() and not ended.all()  # both EOS-ended and max-length hypotheses compete
