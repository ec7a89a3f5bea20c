"""PEFT prompt-tuning adapters: export and import, scores equal to PEFT's, bad input, command."""

import json
import subprocess

import numpy as np
import pytest

import checkpoint_helpers as helpers
import peft_helpers
from subprocess_helpers import REPO, job_command, job_env
from prompt_tuning import api, peft_adapter, prompts
from prompt_tuning.checkpoints import huggingface
from prompt_tuning.checkpoints import peft as peft_io
from prompt_tuning.checkpoints import prompts_io

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

P = 5  # prompt length
D = 32  # d_model of checkpoint_helpers' tiny T5
INPUTS = [[5, 6, 7, 8], [9, 10], [11]]  # ragged: make_batch right-pads (and appends EOS)
TARGETS = [[3, 4], [5, 6, 7], [8]]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """(directory, prompted model, its params) of a tiny random T5 1.1 saved by transformers."""
  directory = tmp_path_factory.mktemp("hf_base")
  helpers.hf_model("gated", 100).save_pretrained(directory)
  model, frozen = api.load_frozen(str(directory))
  prompted, params = api.add_prompt(model, frozen, P, prompts.random_uniform())
  return directory, prompted, params


def torch_t5(directory):
  return transformers.T5ForConditionalGeneration.from_pretrained(directory).float().eval()


def peft_log_likelihoods(tuned) -> np.ndarray:
  """[batch] sum over target tokens of ln p under a PEFT model, on the padded batch."""
  return peft_helpers.peft_log_likelihoods(tuned, api.make_batch(INPUTS, TARGETS))


def our_log_likelihoods(base, prompt_file) -> np.ndarray:
  """[batch] ln p(target) of our model with the prompt file (one compiled model for all)."""
  _, prompted, params = base
  prompt = prompts_io.load_prompt(str(prompt_file), (P, D))
  return api.log_likelihood(prompted, {**params, "prompt": {"prompt": prompt}}, INPUTS, TARGETS)


def random_prompt(seed=0, shape=(P, D)) -> np.ndarray:
  return np.random.default_rng(seed).uniform(-0.5, 0.5, shape).astype(np.float32)


# ---- parity with PEFT ---------------------------------------------------------------------------


def test_exported_adapter_scores_in_peft_as_ours(base, tmp_path):
  np.save(tmp_path / "prompt.npy", random_prompt())
  peft_io.export_adapter(str(tmp_path / "prompt.npy"), str(base[0]), str(tmp_path / "adapter"))
  tuned = peft.PeftModel.from_pretrained(torch_t5(base[0]), str(tmp_path / "adapter")).eval()
  theirs = peft_log_likelihoods(tuned)
  ours = our_log_likelihoods(base, tmp_path / "prompt.npy")
  print("export: max |ours - PEFT| =", np.abs(ours - theirs).max())
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_imported_peft_adapter_scores_in_ours_as_in_peft(base, tmp_path):
  config = peft.PromptTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=P)
  tuned = peft.get_peft_model(torch_t5(base[0]), config).eval()
  with torch.no_grad():  # small rows, like a trained prompt; the decoder half differs
    tuned.prompt_encoder["default"].embedding.weight.uniform_(-0.5, 0.5)
  tuned.save_pretrained(tmp_path / "adapter")
  theirs = peft_log_likelihoods(tuned)
  saved = json.loads((tmp_path / "adapter" / peft_io.CONFIG_FILE).read_text())
  assert saved["num_transformer_submodules"] == 2  # PEFT's seq2seq default: 2P rows
  rows = huggingface.read_safetensors(str(tmp_path / "adapter" / peft_io.WEIGHTS_FILE))
  assert rows[peft_io.WEIGHTS_KEY].shape == (2 * P, D)

  prompt = peft_io.import_adapter(str(tmp_path / "adapter"), str(tmp_path / "prompt.npy"),
                                  base_model=str(base[0]))
  np.testing.assert_array_equal(prompt, rows[peft_io.WEIGHTS_KEY][:P])  # the encoder's rows
  np.testing.assert_array_equal(np.load(tmp_path / "prompt.npy"), prompt)
  ours = our_log_likelihoods(base, tmp_path / "prompt.npy")
  print("import: max |ours - PEFT| =", np.abs(ours - theirs).max())
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_export_layout_and_exact_round_trip(base, tmp_path):
  prompt = random_prompt(1)
  peft_io.write_adapter(prompt, str(base[0]), str(tmp_path / "adapter"))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temporary left
  config = json.loads((tmp_path / "adapter" / peft_io.CONFIG_FILE).read_text())
  assert {k: config[k] for k in ("peft_type", "task_type", "num_virtual_tokens", "token_dim",
                                 "num_transformer_submodules", "base_model_name_or_path")} == {
      "peft_type": "PROMPT_TUNING", "task_type": "SEQ_2_SEQ_LM", "num_virtual_tokens": P,
      "token_dim": D, "num_transformer_submodules": 1, "base_model_name_or_path": str(base[0])}
  weights = huggingface.read_safetensors(str(tmp_path / "adapter" / peft_io.WEIGHTS_FILE))
  assert list(weights) == ["prompt_embeddings"]
  assert weights["prompt_embeddings"].dtype == np.float32
  np.testing.assert_array_equal(peft_io.read_adapter(str(tmp_path / "adapter"), D), prompt)
  with pytest.raises(ValueError, match="already holds adapter_config.json and adapter_model"):
    peft_io.write_adapter(prompt + 1, str(base[0]), str(tmp_path / "adapter"))
  np.testing.assert_array_equal(peft_io.read_adapter(str(tmp_path / "adapter")), prompt)
  peft_io.write_adapter(prompt + 1, str(base[0]), str(tmp_path / "adapter"), overwrite=True)
  np.testing.assert_array_equal(peft_io.read_adapter(str(tmp_path / "adapter")), prompt + 1)
  assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
      peft_io.CONFIG_FILE, peft_io.WEIGHTS_FILE]  # no temporary left


# ---- bad input ----------------------------------------------------------------------------------


def _edit_config(directory, **changes):
  file = directory / peft_io.CONFIG_FILE
  file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


def _corrupt(directory, what):
  if what == "lora":
    _edit_config(directory, peft_type="LORA")
  elif what == "causal":
    _edit_config(directory, task_type="CAUSAL_LM")
  elif what == "task":
    _edit_config(directory, task_type="TOKEN_CLS")
  elif what == "no_config":
    (directory / peft_io.CONFIG_FILE).unlink()
  elif what == "bad_json":
    (directory / peft_io.CONFIG_FILE).write_text("{not json")
  elif what == "no_weights":
    (directory / peft_io.WEIGHTS_FILE).unlink()
  elif what == "bad_weights":
    (directory / peft_io.WEIGHTS_FILE).write_bytes(b"\x10\x00\x00")
  elif what == "other_key":
    huggingface.write_safetensors(str(directory / peft_io.WEIGHTS_FILE),
                                  {"lora_A": np.zeros((2, 2), np.float32)})
  elif what == "rows":
    _edit_config(directory, num_virtual_tokens=P + 1)


@pytest.mark.parametrize("what, match", [
    ("lora", r"peft_type 'LORA'; only PROMPT_TUNING"),
    ("causal", r"is a CAUSAL_LM adapter, whose prompt depends on its base model"),
    ("task", r"task_type 'TOKEN_CLS'; only SEQ_2_SEQ_LM .* and CAUSAL_LM"),
    ("no_config", r"adapter_config.json' does not exist"),
    ("bad_json", r"adapter_config.json' is not a readable JSON file"),
    ("no_weights", r"adapter_model.safetensors' does not exist"),
    ("bad_weights", r"adapter_model.safetensors' is not a readable safetensors file"),
    ("other_key", r"has no 'prompt_embeddings' tensor"),
    ("rows", r"has shape \(5, 32\) but adapter_config.json implies \(6, 32\)"),
])
def test_bad_adapters(base, tmp_path, what, match):
  peft_io.write_adapter(random_prompt(), str(base[0]), str(tmp_path / "adapter"))
  _corrupt(tmp_path / "adapter", what)
  with pytest.raises(ValueError, match=match):
    peft_io.import_adapter(str(tmp_path / "adapter"), str(tmp_path / "p.npy"))
  assert not (tmp_path / "p.npy").exists()


def test_import_width_mismatch(base, tmp_path):
  peft_io.write_adapter(random_prompt(), str(base[0]), str(tmp_path / "adapter"))
  with pytest.raises(ValueError, match=r"adapter_model.safetensors' has width 32 but the "
                                       r"model has d_model 16"):
    peft_io.read_adapter(str(tmp_path / "adapter"), d_model=16)
  wide = tmp_path / "wide"
  wide.mkdir()
  (wide / "config.json").write_text(json.dumps({**huggingface.read_hf_config(str(base[0])),
                                                "d_model": 64}))
  with pytest.raises(ValueError, match=r"width 32 but the model has d_model 64"):
    peft_io.import_adapter(str(tmp_path / "adapter"), str(tmp_path / "p.npy"),
                           base_model=str(wide))


def test_export_bad_input(base, tmp_path):
  np.save(tmp_path / "narrow.npy", random_prompt(shape=(P, 16)))
  with pytest.raises(ValueError, match=r"narrow.npy' has width 16 but base model .* has "
                                       r"d_model 32"):
    peft_io.export_adapter(str(tmp_path / "narrow.npy"), str(base[0]), str(tmp_path / "out"))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["narrow.npy"]  # nothing half-written
  np.save(tmp_path / "prompt.npy", random_prompt())
  with pytest.raises(ValueError, match=r"'.*missing' has no config.json"):
    peft_io.export_adapter(str(tmp_path / "prompt.npy"), str(tmp_path / "missing"),
                           str(tmp_path / "out"))
  with pytest.raises(ValueError, match=r"'.*nope.npy' does not exist"):
    peft_io.export_adapter(str(tmp_path / "nope.npy"), str(base[0]), str(tmp_path / "out"))
  (tmp_path / "busy").mkdir()
  (tmp_path / "busy" / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match=r"busy' exists and is not a PEFT adapter"):
    peft_io.export_adapter(str(tmp_path / "prompt.npy"), str(base[0]), str(tmp_path / "busy"))
  assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


# ---- the command --------------------------------------------------------------------------------


def test_command_round_trip(base, tmp_path, capsys):
  np.save(tmp_path / "prompt.npy", random_prompt(2))
  peft_adapter.main(["peft_adapter", "export", f"--prompt_file={tmp_path / 'prompt.npy'}",
                     f"--base_model={base[0]}", f"--output_dir={tmp_path / 'adapter'}"])
  peft_adapter.main(["peft_adapter", "import", f"--adapter_dir={tmp_path / 'adapter'}",
                     f"--output={tmp_path / 'back.npy'}", f"--base_model={base[0]}"])
  np.testing.assert_array_equal(np.load(tmp_path / "back.npy"), random_prompt(2))
  out = capsys.readouterr().out.splitlines()
  assert out[0].startswith("Wrote the PEFT adapter") and out[1].startswith("Wrote the prompt")


@pytest.mark.parametrize("args, match", [
    (["import", "--adapter_dir=/nonexistent", "--output=x.npy"], "does not exist"),
    (["export", "--prompt_file=x.npy"], "export needs --base_model, --output_dir"),
    (["convert"], "Expected one command, export or import"),
    (["import", "--adapter=x"], "Unknown command line flag 'adapter'"),
])
def test_command_bad_input_is_one_line(args, match):
  with pytest.raises(SystemExit) as exit_info:
    peft_adapter.main(["peft_adapter", *args])
  message = str(exit_info.value.code)
  assert message.startswith("error: ") and "\n" not in message and match in message


def test_command_line_exits_with_one_line():
  proc = subprocess.run(job_command("peft_adapter", "import", "--adapter_dir=/nonexistent",
                                    "--output=/tmp/x.npy"),
                        capture_output=True, text=True, timeout=120, cwd=REPO, env=job_env())
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      "error: Adapter directory '/nonexistent' does not exist; give the directory a PEFT "
      "save_pretrained wrote."]
