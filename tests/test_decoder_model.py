"""The prompt on a decoder-only model (decoder_model.py): scores equal PEFT prompt tuning
(CAUSAL_LM) on random tiny Llama, Qwen2, Gemma and GPT-2 models, the prompt after BOS equals
transformers on the same embedded rows, left-padded rows equal themselves alone, cached
greedy decoding equals an uncached argmax loop, the loss and its prompt gradient equal PEFT's,
rank classification."""

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
