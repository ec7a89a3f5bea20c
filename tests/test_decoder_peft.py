"""PEFT CAUSAL_LM prompt-tuning adapters for decoder prompts: a prompt exported here scores in
PEFT (PeftModel.from_pretrained on transformers' Llama and Gemma) as PromptedDecoderModel
scores it, an adapter PEFT saved imports to the prompt that scores as PEFT does, and export
gives PEFT's rows back; the bad inputs of the kind, the width, a deep prompt."""

import json

import jax
import numpy as np
import pytest

from prompt_tuning import decoder_model, peft_adapter
from prompt_tuning.causal_lm import config as decoder_config
from prompt_tuning.checkpoints import hf_causal_lm, huggingface
from prompt_tuning.checkpoints import peft as peft_io
from prompt_tuning.data import decoder_features
from prompt_tuning.data.hf_tokenizers import SpecialIds

import hf_decoder_helpers as helpers

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

P = 3  # prompt rows
D = 24  # hf_decoder_helpers' d_model
EOS = 2
NO_BOS = SpecialIds(bos_id=None, eos_id=EOS, pad_id=0)  # where PEFT's layout is ours
LENGTHS = {"inputs": 6, "targets": 4}
INPUTS = [[5, 6, 7, 8, 9], [], [11, 12, 13]]  # empty inputs: the prompt predicts the target
TARGETS = [[20, 21, EOS], [22, 23, 24, EOS], [25, EOS]]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
  """{case: (directory, our PromptedDecoderModel, frozen params)} for a tiny random Llama and
  Gemma saved by transformers."""
  root = tmp_path_factory.mktemp("peft_decoders")
  out = {}
  for case in ("llama", "gemma"):
    helpers.build(case).save_pretrained(root / case)
    config = decoder_config.config_from_hf(root / case)
    model = decoder_model.PromptedDecoderModel(config, P, eos_id=EOS)
    out[case] = (root / case, model, hf_causal_lm.load_params(root / case))
  return out


def random_prompt(seed=0, shape=(P, D)):
  return np.random.default_rng(seed).uniform(-0.5, 0.5, shape).astype(np.float32)


def our_scores(base, prompt):
  _, model, frozen = base
  params = model.with_prompt_file(frozen, prompt, "test prompt")
  batch = decoder_features.to_model_batch(INPUTS, TARGETS, LENGTHS, NO_BOS)
  return np.asarray(jax.jit(model.score)(params, batch))


def peft_scores(tuned):
  """Sum of ln p of the target tokens under a PEFT CAUSAL_LM model: its logits start with the
  P virtual tokens, so slot j of the batch is predicted by logit row P + j - 1."""
  batch = decoder_features.to_model_batch(INPUTS, TARGETS, LENGTHS, NO_BOS)
  with torch.no_grad():
    logits = tuned(input_ids=torch.tensor(batch["tokens"], dtype=torch.long),
                   attention_mask=torch.tensor(batch["mask"].astype(np.int64))).logits
  log_p = torch.log_softmax(logits.double(), -1).numpy()
  return np.array([sum(log_p[b, P + j - 1, batch["tokens"][b, j]]
                       for j in np.flatnonzero(batch["target_mask"][b]))
                   for b in range(len(INPUTS))])


def torch_lm(directory):
  return transformers.AutoModelForCausalLM.from_pretrained(directory).float().eval()


def gemma_factor():
  return np.float32(np.sqrt(np.float32(D)))


@pytest.mark.parametrize("case", ["llama", "gemma"])
def test_exported_prompt_scores_in_peft_as_ours(bases, case, tmp_path):
  directory = bases[case][0]
  prompt = random_prompt()
  np.save(tmp_path / "prompt.npy", prompt)
  peft_io.export_adapter(str(tmp_path / "prompt.npy"), str(directory), str(tmp_path / "adapter"))
  config = json.loads((tmp_path / "adapter" / peft_io.CONFIG_FILE).read_text())
  assert {k: config[k] for k in ("task_type", "num_virtual_tokens", "token_dim",
                                 "num_transformer_submodules", "num_layers")} == {
      "task_type": "CAUSAL_LM", "num_virtual_tokens": P, "token_dim": D,
      "num_transformer_submodules": 1, "num_layers": 2}
  rows = huggingface.read_safetensors(str(tmp_path / "adapter" / peft_io.WEIGHTS_FILE))
  # Gemma's rows carry the embedding multiplier sqrt(24) (float32), exactly; Llama's are ours.
  factor = gemma_factor() if case == "gemma" else np.float32(1)
  np.testing.assert_array_equal(rows[peft_io.WEIGHTS_KEY], prompt * factor)

  tuned = peft.PeftModel.from_pretrained(torch_lm(directory), str(tmp_path / "adapter")).eval()
  theirs, ours = peft_scores(tuned), our_scores(bases[case], prompt)
  print(f"{case} export: max |ours - PEFT| =", np.abs(ours - theirs).max())
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", ["llama", "gemma"])
def test_peft_adapter_imports_to_the_prompt_that_scores_as_peft(bases, case, tmp_path):
  directory = bases[case][0]
  tuned = peft.get_peft_model(torch_lm(directory), peft.PromptTuningConfig(
      task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=P)).eval()
  peft_rows = random_prompt(1) * (gemma_factor() if case == "gemma" else 1)  # a PEFT-scale prompt
  with torch.no_grad():
    tuned.prompt_encoder["default"].embedding.weight[:] = torch.tensor(peft_rows)
  tuned.save_pretrained(tmp_path / "adapter")
  theirs = peft_scores(tuned)

  prompt = peft_io.import_adapter(str(tmp_path / "adapter"), str(tmp_path / "prompt.npy"),
                                  base_model=str(directory))
  np.testing.assert_array_equal(np.load(tmp_path / "prompt.npy"), prompt)
  if case == "llama":
    np.testing.assert_array_equal(prompt, peft_rows)
  else:
    np.testing.assert_array_equal(prompt, peft_rows / gemma_factor())
  ours = our_scores(bases[case], prompt)
  print(f"{case} import: max |ours - PEFT| =", np.abs(ours - theirs).max())
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)

  # And back: exporting the imported prompt gives PEFT's rows (Gemma: x / s * s, within an ulp).
  peft_io.write_adapter(prompt, str(directory), str(tmp_path / "again"))
  again = huggingface.read_safetensors(str(tmp_path / "again" / peft_io.WEIGHTS_FILE))
  np.testing.assert_allclose(again[peft_io.WEIGHTS_KEY], peft_rows, rtol=2 ** -23, atol=0)


def test_command_round_trip_on_a_decoder(bases, tmp_path, capsys):
  directory = bases["gemma"][0]
  np.save(tmp_path / "prompt.npy", random_prompt(2))
  peft_adapter.main(["peft_adapter", "export", f"--prompt_file={tmp_path / 'prompt.npy'}",
                     f"--base_model={directory}", f"--output_dir={tmp_path / 'adapter'}"])
  peft_adapter.main(["peft_adapter", "import", f"--adapter_dir={tmp_path / 'adapter'}",
                     f"--output={tmp_path / 'back.npy'}", f"--base_model={directory}"])
  np.testing.assert_allclose(np.load(tmp_path / "back.npy"), random_prompt(2), rtol=2 ** -23,
                             atol=0)
  out = capsys.readouterr().out.splitlines()
  assert out[0] == (f"Wrote the PEFT adapter {tmp_path / 'adapter'} (prompt {P} x {D}) for "
                    f"{directory}.")


# ---- bad input ----------------------------------------------------------------------------------


def t5_dir(tmp_path, d_model=D):
  """A T5 base model as far as adapters look: its config.json."""
  directory = tmp_path / "t5"
  directory.mkdir()
  (directory / "config.json").write_text(json.dumps(
      {"model_type": "t5", "d_model": d_model, "num_layers": 2, "num_heads": 4}))
  return directory


def test_bad_input(bases, tmp_path):
  llama = str(bases["llama"][0])
  np.save(tmp_path / "deep.npy", random_prompt(shape=(2, P, D)))
  with pytest.raises(ValueError, match=r"deep.npy' has shape \(2, 3, 24\): a deep prompt .*no "
                                       r"PEFT adapter holds"):
    peft_io.export_adapter(str(tmp_path / "deep.npy"), llama, str(tmp_path / "out"))
  np.save(tmp_path / "wide.npy", random_prompt(shape=(P, 32)))
  with pytest.raises(ValueError, match=r"wide.npy' has width 32 but base model .*llama' "
                                       r"\(llama\) has d_model 24"):
    peft_io.export_adapter(str(tmp_path / "wide.npy"), llama, str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()

  # A T5 (SEQ_2_SEQ_LM) adapter on a decoder, a CAUSAL_LM adapter on a T5, and without a base.
  t5 = str(t5_dir(tmp_path))
  peft_io.write_adapter(random_prompt(), t5, str(tmp_path / "t5_adapter"))
  with pytest.raises(ValueError, match=r"t5_adapter' is a SEQ_2_SEQ_LM adapter \(a prompt for "
                                       r"a T5 model's encoder\) but base model .* is a llama "
                                       r"model, which takes CAUSAL_LM adapters"):
    peft_io.import_adapter(str(tmp_path / "t5_adapter"), str(tmp_path / "p.npy"), llama)
  peft_io.write_adapter(random_prompt(), llama, str(tmp_path / "llama_adapter"))
  with pytest.raises(ValueError, match=r"is a CAUSAL_LM adapter \(a prompt for a decoder-only "
                                       r"model\) but base model .* is a t5 model"):
    peft_io.import_adapter(str(tmp_path / "llama_adapter"), str(tmp_path / "p.npy"), t5)
  with pytest.raises(ValueError, match=r"is a CAUSAL_LM adapter, whose prompt depends on its "
                                       r"base model .*--base_model"):
    peft_io.import_adapter(str(tmp_path / "llama_adapter"), str(tmp_path / "p.npy"))
  # The adapter's width against another base of the same kind.
  (tmp_path / "wide_llama").mkdir()
  hf = json.loads((bases["llama"][0] / "config.json").read_text())
  (tmp_path / "wide_llama" / "config.json").write_text(json.dumps({**hf, "hidden_size": 48}))
  with pytest.raises(ValueError, match=r"has width 24 but the model has d_model 48"):
    peft_io.import_adapter(str(tmp_path / "llama_adapter"), str(tmp_path / "p.npy"),
                           str(tmp_path / "wide_llama"))
  # An architecture neither kind supports.
  (tmp_path / "bert").mkdir()
  (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
  with pytest.raises(ValueError, match=r"model_type 'bert' is not a supported decoder-only "
                                       r"family; supported: llama, qwen2, gemma, gpt2.*PEFT "
                                       r"adapters are written for T5"):
    peft_io.export_adapter(str(tmp_path / "wide.npy"), str(tmp_path / "bert"),
                           str(tmp_path / "out"))
  with open(tmp_path / "llama_adapter" / peft_io.CONFIG_FILE) as f:
    config = json.load(f)
  (tmp_path / "llama_adapter" / peft_io.CONFIG_FILE).write_text(
      json.dumps({**config, "num_transformer_submodules": 2}))
  with pytest.raises(ValueError, match=r"num_transformer_submodules 2; a CAUSAL_LM "
                                       r"prompt-tuning adapter has 1 \(or none"):
    peft_io.import_adapter(str(tmp_path / "llama_adapter"), str(tmp_path / "p.npy"), llama)
  assert not (tmp_path / "p.npy").exists()
