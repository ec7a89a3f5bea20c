"""The prompt on a decoder-only model (decoder_model.py): scores equal PEFT prompt tuning
(CAUSAL_LM) on random tiny Llama, Qwen2, Gemma and GPT-2 models, the prompt after BOS equals
transformers on the same embedded rows, left-padded rows equal themselves alone, cached
greedy decoding equals an uncached argmax loop, the loss and its prompt gradient equal PEFT's,
rank classification."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import decoder_model, optim
from prompt_tuning.causal_lm import config as decoder_config
from prompt_tuning.causal_lm import network
from prompt_tuning.checkpoints import hf_causal_lm
from prompt_tuning.data import decoder_features
from prompt_tuning.data.hf_tokenizers import SpecialIds

import hf_decoder_helpers as helpers

P = 4  # prompt rows
EOS = 2
NO_BOS = SpecialIds(bos_id=None, eos_id=EOS, pad_id=0)
WITH_BOS = SpecialIds(bos_id=1, eos_id=EOS, pad_id=0)
LENGTHS = {"inputs": 6, "targets": 4}
FAMILIES = ("llama", "qwen2", "gemma", "gpt2")


def _examples(seed=1):
  """Inputs of 5, 0 and 3 tokens (empty inputs: the prompt alone predicts the first target)
  and targets of 2, 3, 1 tokens plus EOS; ids avoid BOS/EOS/pad."""
  rs = np.random.RandomState(seed)
  inputs = [rs.randint(3, helpers.VOCAB, n).tolist() for n in (5, 0, 3)]
  targets = [rs.randint(3, helpers.VOCAB, n).tolist() + [EOS] for n in (2, 3, 1)]
  return inputs, targets


def _prompt(d_model, seed=0):
  return np.random.RandomState(seed).uniform(-0.5, 0.5, (P, d_model)).astype(np.float32)


@pytest.fixture(scope="module")
def families(tmp_path_factory):
  """{family: (transformers model, our PromptedDecoderModel without BOS, params with the
  prompt)}, built once for the module."""
  root = tmp_path_factory.mktemp("prompted_decoders")
  out = {}
  for case in FAMILIES:
    hf = helpers.build(case)
    hf.save_pretrained(root / case)
    config = decoder_config.config_from_hf(root / case)
    model = decoder_model.PromptedDecoderModel(config, P, eos_id=EOS)
    params = model.with_prompt_file(hf_causal_lm.load_params(root / case),
                                    _prompt(config.d_model), "test prompt")
    out[case] = (hf, model, params)
  return out



def _full_logits(model, params, tokens, mask):
  """logits [batch, L + P, vocab] of [BOS] + P + the row, P in every row (the model shares
  the prompt's computation between rows; this does not)."""
  module = model.module
  embedded = module.apply({"params": params}, tokens, method="embed")
  prompt = params["prompt"]["prompt"]
  rows = jnp.broadcast_to(prompt, (tokens.shape[0],) + prompt.shape)
  combined, mask, _, _ = decoder_model.insert_prompt(embedded, mask, rows,
                                                     int(model.bos_id is not None))
  return module.apply({"params": params}, combined, decoder_model.positions_from_mask(mask), mask)

def _peft_prompt(model, params):
  """Our prompt as PEFT's: transformers 5 scales Gemma's embeddings inside its embedding
  module, so rows passed as inputs_embeds (PEFT's prompt) are not scaled, while ours are
  scaled like the tokens beside them (docs/decoder_only.md)."""
  return np.asarray(params["prompt"]["prompt"]) * _multiplier(model.config)


def _multiplier(config):
  return np.float32(decoder_config.embedding_multiplier(config) if config.scale_embeddings
                    else 1.0)


def _peft(hf, prompt):
  import peft  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  tuned = peft.get_peft_model(hf, peft.PromptTuningConfig(
      task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=prompt.shape[0])).eval()
  with torch.no_grad():
    tuned.prompt_encoder["default"].embedding.weight[:] = torch.tensor(prompt)
  return tuned


def _peft_scores(tuned, batch):
  """Sum of ln p of the target tokens under PEFT (its logits start with the P prompt rows:
  slot j of the batch is predicted by logit row P + j - 1)."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    logits = tuned(input_ids=torch.tensor(batch["tokens"], dtype=torch.long),
                   attention_mask=torch.tensor(batch["mask"].astype(np.int64))).logits
  log_p = torch.log_softmax(logits.double(), -1).numpy()
  tokens, target = batch["tokens"], batch["target_mask"]
  return np.array([sum(log_p[b, P + j - 1, tokens[b, j]] for j in np.flatnonzero(target[b]))
                   for b in range(len(tokens))])


@pytest.mark.parametrize("case", FAMILIES)
def test_scores_equal_peft_prompt_tuning(families, case):
  hf, model, params = families[case]
  inputs, targets = _examples()
  batch = decoder_features.to_model_batch(inputs, targets, LENGTHS, NO_BOS)  # right padding
  ours = np.asarray(jax.jit(model.score)(params, batch))
  theirs = _peft_scores(_peft(hf, _peft_prompt(model, params)), batch)
  assert np.abs(ours - theirs).max() <= 1e-4, (ours, theirs)

  # Left padding: the prompt moves with its row, and every row scores what it scores alone.
  left = decoder_features.to_model_batch(inputs, targets, LENGTHS, NO_BOS, padding_side="left")
  assert np.abs(np.asarray(jax.jit(model.score)(params, left)) - ours).max() <= 1e-4


def test_prompt_after_bos_equals_transformers_on_the_same_rows(families):
  """With BOS the row is [BOS] + P + inputs + targets: transformers fed those embedded rows
  (inputs_embeds; transformers 5 scales Gemma's rows in its embedding module, so we pass them
  scaled) gives the same scores, right- and left-padded."""
  import torch  # pylint: disable=g-import-not-at-top
  hf, model, params = families["gemma"]  # Gemma: the prompt rows are scaled like the tokens
  model = decoder_model.PromptedDecoderModel(model.config, P, eos_id=EOS, bos_id=1)
  inputs, targets = _examples(seed=2)
  table = np.asarray(params["token_embedder"]["embedding"])
  prompt = np.asarray(params["prompt"]["prompt"])
  expected = []
  for x, y in zip(inputs, targets):
    rows = np.concatenate([table[[1]], prompt, table[x + y]])[None] * _multiplier(model.config)
    with torch.no_grad():
      logits = hf(inputs_embeds=torch.tensor(rows)).logits
    log_p = torch.log_softmax(logits.double(), -1).numpy()[0]
    start = 1 + P + len(x)  # the first target's slot
    expected.append(sum(log_p[start + i - 1, t] for i, t in enumerate(y)))
  for side in ("right", "left"):
    batch = decoder_features.to_model_batch(inputs, targets, LENGTHS, WITH_BOS,
                                            padding_side=side)
    ours = np.asarray(jax.jit(model.score)(params, batch))
    assert np.abs(ours - np.asarray(expected)).max() <= 1e-4, side


def test_insert_prompt_layout_by_hand():
  """Row slots hold their token index + 10 (0 = padding); the prompt rows hold -1, -2."""
  tokens = np.array([[10, 11, 12, 0], [0, 0, 10, 11]])
  mask = tokens > 0
  embedded = jnp.asarray(tokens, jnp.float32)[..., None]
  prompt = jnp.array([[[-1.0], [-2.0]]] * 2)
  combined, new_mask, _, _ = decoder_model.insert_prompt(embedded, jnp.asarray(mask), prompt, 1)
  got = np.where(np.asarray(new_mask), np.asarray(combined)[..., 0], 0)
  np.testing.assert_array_equal(got, [[10, -1, -2, 11, 12, 0], [0, 0, 10, -1, -2, 11]])
  combined, new_mask, _, _ = decoder_model.insert_prompt(embedded, jnp.asarray(mask), prompt, 0,
                                                         jnp.array([1, 1]))
  got = np.where(np.asarray(new_mask), np.asarray(combined)[..., 0], 0)
  np.testing.assert_array_equal(got, [[-1, 10, 11, 12, 0, 0], [0, 0, 0, -1, 10, 11]])


def test_loss_and_prompt_gradient_equal_peft(families):
  """The training loss (mean over target tokens, EOS included) and its gradient, taken with
  respect to the trainable leaves only (PROMPT_REGEX), against PyTorch autograd through PEFT."""
  import torch  # pylint: disable=g-import-not-at-top
  hf, model, params = families["llama"]
  inputs, targets = _examples()
  batch = decoder_features.to_model_batch(inputs, targets, LENGTHS, NO_BOS)
  trainable, frozen = optim.partition(params, optim.PROMPT_REGEX)
  assert set(trainable) == {"prompt"}
  loss_fn = lambda t: model.loss(optim.merge(t, frozen), batch)[0]
  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(trainable)
  num = sum(len(t) for t in targets)
  np.testing.assert_allclose(float(loss), -float(np.sum(model.score(params, batch))) / num,
                             rtol=1e-5)

  tuned = _peft(hf, _peft_prompt(model, params))
  table = tuned.prompt_encoder["default"].embedding.weight
  tokens = torch.tensor(batch["tokens"], dtype=torch.long)
  labels = tokens.masked_fill(~torch.tensor(batch["target_mask"]), -100)
  theirs = tuned(input_ids=tokens, attention_mask=torch.tensor(batch["mask"].astype(np.int64)),
                 labels=labels).loss
  theirs.backward()
  np.testing.assert_allclose(float(loss), theirs.item(), rtol=1e-5)
  expected = table.grad.numpy()
  np.testing.assert_allclose(np.asarray(grads["prompt"]["prompt"]), expected, rtol=0,
                             atol=1e-4 * np.abs(expected).max())


def _prompt_batch(inputs, ids=NO_BOS):
  return decoder_features.to_prompt_batch(inputs, LENGTHS["inputs"], ids)  # left padding


def _peft_generate(tuned, tokens, mask, new):
  """PEFT's greedy tokens [batch, new] and where they are clear: every step so far had its
  best token ahead of the second by more than float noise (a near tie in a random model may
  flip either way)."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    out = tuned.generate(input_ids=torch.tensor(tokens, dtype=torch.long),
                         attention_mask=torch.tensor(mask.astype(np.int64)), max_new_tokens=new,
                         do_sample=False, eos_token_id=EOS, pad_token_id=0, output_scores=True,
                         return_dict_in_generate=True)
  top2 = np.sort(torch.stack(out.scores, 1).numpy(), axis=-1)[..., -2:]
  clear = np.cumprod(top2[..., 1] - top2[..., 0] > 1e-4, axis=1).astype(bool)
  return out.sequences.numpy()[:, -new:], clear


@pytest.mark.parametrize("case", ["llama", "gpt2"])
def test_greedy_equals_peft_generate(families, case):
  """Batched left-padded greedy decoding equals PEFT's `generate` token by token, and each
  row equals itself decoded alone. Llama: PEFT's own left-padded batch. GPT-2: PEFT drops
  position ids, so its GPT-2 counts the padding slots as positions; each row is compared with
  PEFT on that row alone, which is what our padded row computes."""
  hf, model, params = families[case]
  inputs = [x for x in _examples(seed=3)[0] + [[7, 8]] if x]
  batch = _prompt_batch(inputs)
  new = 6
  predict = jax.jit(lambda p, b: model.predict(p, b, max_new_tokens=new))
  ours = np.asarray(predict(params, batch))
  tuned = _peft(hf, _peft_prompt(model, params))
  if case == "gpt2":
    rows = [_peft_generate(tuned, np.asarray([x]), np.ones((1, len(x)), bool), new)
            for x in inputs]
    theirs, clear = (np.concatenate(parts) for parts in zip(*rows))
  else:
    theirs, clear = _peft_generate(tuned, batch["tokens"], batch["mask"], new)
  assert clear[:, 0].all() and clear.sum() >= clear.size // 2, clear
  np.testing.assert_array_equal(ours[clear], theirs[clear])
  for row, x in enumerate(inputs):
    alone = np.asarray(predict(params, _prompt_batch([x])))
    np.testing.assert_array_equal(alone[0], ours[row])


def test_cached_greedy_equals_an_uncached_argmax_loop(families):
  """The prompt lives in the prefill: each step runs one token on the cache, and gives the
  argmax of a full forward over [BOS] + P + inputs + the tokens so far."""
  _, model, params = families["qwen2"]
  model = decoder_model.PromptedDecoderModel(model.config, P, eos_id=EOS, bos_id=1)
  inputs = [[5, 6, 7, 8, 9], [10, 11]]
  new = 4
  ours = np.asarray(jax.jit(lambda p, b: model.predict(p, b, max_new_tokens=new))(
      params, _prompt_batch(inputs, WITH_BOS)))
  full = jax.jit(functools.partial(_full_logits, model))
  for row, x in enumerate(inputs):
    seq = [1] + x
    for step in range(new):
      tokens = np.asarray([seq])
      logits = np.asarray(full(params, tokens, np.ones_like(tokens, bool)))
      seq.append(int(np.argmax(logits[0, -1])))
      if seq[-1] == EOS:
        break
    np.testing.assert_array_equal(ours[row, :len(seq) - 1 - len(x)], seq[1 + len(x):])


def test_rank_classification_picks_the_best_candidate(families):
  """score_candidates equals `score` of every (input, candidate) pair, and its argmax is the
  candidate with the highest hand-summed log-probability."""
  _, model, params = families["gemma"]
  model = decoder_model.PromptedDecoderModel(model.config, P, eos_id=EOS, bos_id=1)
  inputs = [[5, 6, 7], [8, 9, 10, 11, 12]]
  candidates = [[20, EOS], [30, 31, EOS], [40, EOS]]
  tokens = np.zeros((3, 3), np.int32)
  for i, c in enumerate(candidates):
    tokens[i, :len(c)] = c
  got = np.asarray(jax.jit(model.score_candidates)(
      params, _prompt_batch(inputs, WITH_BOS), {"tokens": tokens, "mask": tokens > 0}))
  pairs = decoder_features.to_model_batch(
      [x for x in inputs for _ in candidates], [c for _ in inputs for c in candidates],
      LENGTHS, WITH_BOS)
  each = np.asarray(jax.jit(model.score)(params, pairs)).reshape(2, 3)
  np.testing.assert_allclose(got, each, atol=1e-4)
  # By hand: the log-softmax of full forwards over [BOS] + P + x + c, summed over c.
  full = jax.jit(functools.partial(_full_logits, model))
  for row, x in enumerate(inputs):
    sums = []
    for c in candidates:
      seq = np.asarray([[1] + x + c])
      log_p = jax.nn.log_softmax(full(params, seq, np.ones_like(seq, bool))[0])
      start = P + 1 + len(x)
      sums.append(sum(float(log_p[start + i - 1, t]) for i, t in enumerate(c)))
    assert int(np.argmax(got[row])) == int(np.argmax(sums))
    np.testing.assert_allclose(got[row], sums, atol=1e-4)


def test_prompt_table_rows_equal_each_prompt_alone(families):
  _, model, params = families["llama"]
  prompts = [_prompt(model.config.d_model, 5)[:2], _prompt(model.config.d_model, 6)]
  table = model.with_prompt_table(params, prompts)
  inputs, targets = _examples()
  for side in ("right", "left"):
    batch = decoder_features.to_model_batch(inputs, targets, LENGTHS, NO_BOS, padding_side=side)
    batch["prompt_ids"] = np.array([0, 1, 0], np.int32)
    mixed = np.asarray(model.score(table, batch))
    for row, pid in enumerate(batch["prompt_ids"]):
      alone = decoder_model.PromptedDecoderModel(model.config, len(prompts[pid]), eos_id=EOS)
      single = alone.with_prompt_file(params, prompts[pid], "p")
      one = {k: v[row:row + 1] for k, v in batch.items() if k != "prompt_ids"}
      np.testing.assert_allclose(mixed[row], np.asarray(alone.score(single, one))[0], atol=1e-4)


def test_bad_inputs_raise_clear_errors(families):
  _, model, params = families["llama"]
  with pytest.raises(ValueError, match="eos_id=500"):
    decoder_model.DecoderModel(model.config, eos_id=500)
  with pytest.raises(ValueError, match="not a DecoderConfig"):
    decoder_model.DecoderModel("llama", eos_id=2)
  with pytest.raises(ValueError, match="PROMPT_LENGTH"):
    model.with_prompt_file(params, np.zeros((P + 1, model.config.d_model)), "f.npy")
  with pytest.raises(ValueError, match="lacks"):
    model.score(params, {"tokens": np.zeros((1, 3), np.int32)})
  with pytest.raises(ValueError, match="max_new_tokens"):
    model.predict(params, _prompt_batch([[5]]), max_new_tokens=0)


def test_sampling_at_temperature_zero_and_one_beam_are_greedy(families):
  """The cache state (prefill logits, positions, the started flag) also serves decoding.py's
  sampling and beam search loops."""
  _, model, params = families["gpt2"]
  batch = _prompt_batch([[5, 6, 7, 8, 9], [10, 11]])
  run = lambda **kw: np.asarray(jax.jit(lambda p, b: model.predict(
      p, b, max_new_tokens=5, **kw))(params, batch))
  greedy = run()
  np.testing.assert_array_equal(run(method="sample", rng=jax.random.PRNGKey(0),
                                    temperature=0.0), greedy)
  np.testing.assert_array_equal(run(method="beam", beam_size=1), greedy)
  sampled = run(method="sample", rng=jax.random.PRNGKey(0), temperature=1.0)
  assert sampled.shape == greedy.shape and ((sampled >= 0) & (sampled < 97)).all()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ids", [NO_BOS, WITH_BOS], ids=["no_bos", "bos"])
def test_shared_prompt_prefix_equals_the_prompt_in_every_row(families, family, ids):
  """The prompt's keys and values, computed once for the batch, give each row's loss, score
  and prompt gradient that the prompt inserted in every row gives (the table path, which
  never shares), with an empty input and a left-padded batch among the rows."""
  _, base, params = families[family]
  model = decoder_model.PromptedDecoderModel(base.config, P, eos_id=EOS, bos_id=ids.bos_id)
  params = {**params, "prompt": {"prompt": _prompt(base.config.d_model)}}
  table = model.with_prompt_table(params, [np.asarray(params["prompt"]["prompt"])])
  inputs, targets = [[5, 6, 7], [], [8, 9, 10, 11, 12]], [[20, EOS], [21, 22, EOS], [EOS]]
  batch = decoder_features.to_model_batch(inputs, targets, LENGTHS, ids)
  each = {**batch, "prompt_ids": np.zeros(3, np.int32)}
  shared_loss = lambda p: model.loss({**params, "prompt": p}, batch)[0]
  table_loss = lambda p: model.loss({**table, "prompt": {"table": p[None], "lengths":
                                                         np.asarray([P], np.int32)}}, each)[0]
  prompt = params["prompt"]["prompt"]
  got, got_grad = jax.jit(jax.value_and_grad(shared_loss))({"prompt": prompt})
  want, want_grad = jax.jit(jax.value_and_grad(table_loss))(prompt)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(got_grad["prompt"], want_grad, atol=1e-6)
  np.testing.assert_allclose(jax.jit(model.score)(params, batch),
                             jax.jit(model.score)(table, each), atol=1e-4)
  prompts = _prompt_batch(inputs, ids)
  np.testing.assert_array_equal(
      jax.jit(lambda p, b: model.predict(p, b, max_new_tokens=3))(params, prompts),
      jax.jit(lambda p, b: model.predict(p, b, max_new_tokens=3))(
          table, {**prompts, "prompt_ids": np.zeros(3, np.int32)}))
