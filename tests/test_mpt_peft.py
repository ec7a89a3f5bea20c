"""MPT records (prompts/mpt.py) as PEFT MULTITASK_PROMPT_TUNING adapters: an exported record
scores in PEFT (task_ids per row) as our MPT model scores it (prompt_ids per row), a PEFT-saved
adapter imports to the record that scores as PEFT does, the round trip is exact, the command,
and the bad inputs (rank > 1, the decoder half, the task count, the wrong kind, the width)."""

import json
import pathlib
import sys

import jax
import numpy as np
import pytest

from prompt_tuning import api, peft_adapter
from prompt_tuning import model as model_lib
from prompt_tuning.checkpoints import huggingface
from prompt_tuning.checkpoints import peft as peft_io
from prompt_tuning.checkpoints import peft_mpt
from prompt_tuning.prompts import mpt

sys.path.insert(0, str(pathlib.Path(__file__).parent / "checkpoints"))
import checkpoint_helpers  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

P, D = 4, 32  # prompt rows; d_model of checkpoint_helpers' tiny T5
TASKS = ("task_a", "task_b", "task_c")
INPUTS = [[5, 6, 7, 8], [9, 10], [11], [12, 13, 14]]  # ragged: make_batch right-pads
TARGETS = [[3, 4], [5, 6, 7], [8], [9, 10]]
TASK_IDS = [2, 0, 1, 0]  # a mixed batch: every task, one twice


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """(directory, our MPT model over TASKS, its frozen params, its jitted score) of a tiny
  random T5 1.1."""
  directory = tmp_path_factory.mktemp("hf_base")
  checkpoint_helpers.hf_model("gated", 100).save_pretrained(directory)
  model, frozen = api.load_frozen(str(directory))
  prompted = model_lib.PromptedT5Model(model.config, P, eos_id=model.eos_id,
                                       method=mpt.MultiTask(TASKS))
  return directory, prompted, frozen, jax.jit(prompted.score)


def random_record(seed=0, tasks=TASKS, width=D) -> np.ndarray:
  """An MPT record with random P*, u and v (trained ones are not ones; a swapped or dropped
  factor would show)."""
  rng = np.random.default_rng(seed)
  k = len(tasks)
  return mpt.pack(rng.uniform(-0.5, 0.5, (P, width)), rng.uniform(0.5, 1.5, (k, P)),
                  rng.uniform(0.5, 1.5, (k, width)), tasks)


def our_scores(base, record, task_ids=TASK_IDS) -> np.ndarray:
  """[batch] ln p(target) under our MPT model, row b with task task_ids[b]'s prompt."""
  _, prompted, frozen, score = base
  params = prompted.with_prompt_file(frozen, record, "test record")
  batch = api.make_batch(INPUTS, TARGETS, prompt_ids=task_ids, num_prompts=len(TASKS))
  return np.asarray(score(params, batch))


def peft_scores(tuned, task_ids=TASK_IDS) -> np.ndarray:
  """[batch] ln p(target) under a PEFT MPT model. Its seq2seq MPT forward takes the decoder's
  input from `labels` (T5 shifts them right, -100 to padding) and ignores decoder_input_ids."""
  batch = api.make_batch(INPUTS, TARGETS)
  targets = torch.tensor(batch["decoder_target_tokens"], dtype=torch.long)
  weights = torch.tensor(batch["decoder_loss_weights"])
  inputs = torch.tensor(batch["encoder_input_tokens"], dtype=torch.long)
  with torch.no_grad():
    logits = tuned(input_ids=inputs, attention_mask=(inputs > 0).long(),
                   labels=torch.where(weights > 0, targets, -100),
                   task_ids=torch.tensor(task_ids, dtype=torch.long)).logits
  picked = torch.gather(torch.log_softmax(logits.double(), -1), -1, targets[..., None])[..., 0]
  return (picked * weights).sum(-1).numpy()


def torch_t5(directory):
  return transformers.T5ForConditionalGeneration.from_pretrained(directory).float().eval()


def export(base, tmp_path, record, name="adapter") -> pathlib.Path:
  np.save(tmp_path / f"{name}.npy", record)
  peft_io.export_adapter(str(tmp_path / f"{name}.npy"), str(base[0]), str(tmp_path / name))
  return tmp_path / name


# ---- parity with PEFT ---------------------------------------------------------------------------


def test_exported_record_scores_in_peft_as_ours(base, tmp_path):
  record = random_record()
  tuned = peft.PeftModel.from_pretrained(torch_t5(base[0]),
                                         str(export(base, tmp_path, record))).eval()
  for task_ids in (TASK_IDS, [0] * 4, [1] * 4, [2] * 4):
    theirs, ours = peft_scores(tuned, task_ids), our_scores(base, record, task_ids)
    print(f"export, task_ids {task_ids}: max |ours - PEFT| =", np.abs(ours - theirs).max())
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
  # Each task's prompt matters: scores under different tasks differ by far more than that.
  assert np.abs(peft_scores(tuned, [0] * 4) - peft_scores(tuned, [1] * 4)).max() > 1e-2
  # PEFT's prompt for task k is the plain prompt file P_k the train job writes beside it.
  prompts = tuned.get_prompt(batch_size=3, task_ids=torch.tensor([0, 1, 2])).detach().numpy()
  files = mpt.task_files(record)
  for k, task in enumerate(TASKS):
    np.testing.assert_allclose(prompts[k], files[task], rtol=1e-6, atol=1e-7)


def test_peft_saved_adapter_imports_to_the_record_that_scores_as_peft(base, tmp_path):
  config = peft.MultitaskPromptTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM,
                                            num_virtual_tokens=P, num_tasks=len(TASKS),
                                            num_ranks=1, num_transformer_submodules=1)
  tuned = peft.get_peft_model(torch_t5(base[0]), config).eval()
  encoder = tuned.prompt_encoder["default"]
  with torch.no_grad():  # PEFT starts cols and rows near 0; trained-like values instead
    encoder.embedding.weight.uniform_(-0.5, 0.5)
    encoder.prefix_task_cols.uniform_(0.5, 1.5)
    encoder.prefix_task_rows.uniform_(0.5, 1.5)
  tuned.save_pretrained(tmp_path / "adapter")
  weights = huggingface.read_safetensors(str(tmp_path / "adapter" / peft_io.WEIGHTS_FILE))
  assert {k: v.shape for k, v in weights.items()} == {
      "prompt_embeddings": (P, D), "prefix_task_cols": (3, P, 1), "prefix_task_rows": (3, 1, D)}
  theirs = peft_scores(tuned)

  record = peft_io.import_adapter(str(tmp_path / "adapter"), str(tmp_path / "record.npy"),
                                  base_model=str(base[0]), tasks=list(TASKS))
  saved = np.load(tmp_path / "record.npy")
  assert mpt.is_mpt_file(saved) and saved.tobytes() == record.tobytes()
  parts = mpt.unpack(saved, "imported")
  assert parts["tasks"] == list(TASKS)
  np.testing.assert_array_equal(parts["shared"], weights["prompt_embeddings"])
  np.testing.assert_array_equal(parts["task_rows"], weights["prefix_task_cols"][:, :, 0])
  np.testing.assert_array_equal(parts["task_cols"], weights["prefix_task_rows"][:, 0, :])
  ours = our_scores(base, saved)
  print("import: max |ours - PEFT| =", np.abs(ours - theirs).max())
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_export_layout_and_exact_round_trip(base, tmp_path):
  record = random_record(1)
  adapter = export(base, tmp_path, record)
  config = json.loads((adapter / peft_io.CONFIG_FILE).read_text())
  assert {k: config[k] for k in ("peft_type", "task_type", "num_virtual_tokens", "token_dim",
                                 "num_transformer_submodules", "num_tasks", "num_ranks")} == {
      "peft_type": "MULTITASK_PROMPT_TUNING", "task_type": "SEQ_2_SEQ_LM",
      "num_virtual_tokens": P, "token_dim": D, "num_transformer_submodules": 1, "num_tasks": 3,
      "num_ranks": 1}
  assert sorted(p.name for p in adapter.iterdir()) == [peft_io.CONFIG_FILE, peft_io.WEIGHTS_FILE]
  back = peft_mpt.read_adapter(str(adapter), TASKS, base_model=str(base[0]))
  assert back.tobytes() == record.tobytes()  # every field, the names included
  default = peft_mpt.read_adapter(str(adapter))
  assert [str(t) for t in default["tasks"]] == ["task_0", "task_1", "task_2"]
  np.testing.assert_array_equal(default["task_cols"], record["task_cols"])
  # Overwrite rules as for plain adapters: refused without --overwrite, then replaced.
  with pytest.raises(ValueError, match="already holds adapter_config.json and adapter_model"):
    peft_mpt.write_adapter(random_record(2), str(base[0]), str(adapter))
  assert peft_mpt.read_adapter(str(adapter), TASKS).tobytes() == record.tobytes()
  peft_mpt.write_adapter(random_record(2), str(base[0]), str(adapter), overwrite=True)
  assert peft_mpt.read_adapter(str(adapter), TASKS).tobytes() == random_record(2).tobytes()
  assert sorted(p.name for p in adapter.iterdir()) == [peft_io.CONFIG_FILE, peft_io.WEIGHTS_FILE]


def test_decoder_mpt_adapter_gives_each_task_its_plain_prompt_in_peft(tmp_path):
  """CAUSAL_LM, on Gemma (whose PEFT rows carry sqrt(d_model)): PEFT's MPT model with task_ids
  k gives the logits of PEFT's plain adapter of P_k (which tests/test_decoder_peft.py finds
  scoring as ours); import divides the factor out again."""
  import hf_decoder_helpers  # pylint: disable=g-import-not-at-top
  gemma = tmp_path / "gemma"
  hf_decoder_helpers.build("gemma").save_pretrained(gemma)
  tasks = ("x", "y")
  record = random_record(4, tasks, width=24)  # hf_decoder_helpers' d_model
  np.save(tmp_path / "record.npy", record)
  peft_io.export_adapter(str(tmp_path / "record.npy"), str(gemma), str(tmp_path / "mpt"))
  lm = lambda: transformers.AutoModelForCausalLM.from_pretrained(gemma).float().eval()
  tuned = peft.PeftModel.from_pretrained(lm(), str(tmp_path / "mpt")).eval()
  ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
  files = mpt.task_files(record)
  for k, task in enumerate(tasks):
    peft_io.write_adapter(files[task], str(gemma), str(tmp_path / task))
    plain = peft.PeftModel.from_pretrained(lm(), str(tmp_path / task)).eval()
    with torch.no_grad():
      theirs = tuned(input_ids=ids, task_ids=torch.tensor([k, k])).logits.numpy()
      want = plain(input_ids=ids).logits.numpy()
    print(f"decoder task {task}: max |MPT - plain| =", np.abs(theirs - want).max())
    np.testing.assert_allclose(theirs, want, atol=1e-4, rtol=0)
  back = peft_mpt.read_adapter(str(tmp_path / "mpt"), tasks, base_model=str(gemma))
  np.testing.assert_allclose(back["shared"], record["shared"], rtol=1e-6, atol=0)
  assert back["task_rows"].tobytes() == record["task_rows"].tobytes()
  with pytest.raises(ValueError, match=r"is a CAUSAL_LM adapter, whose prompt depends on its "
                                       r"base model"):
    peft_mpt.read_adapter(str(tmp_path / "mpt"), tasks)


# ---- bad input ----------------------------------------------------------------------------------


def _edit_config(directory, **changes):
  file = directory / peft_io.CONFIG_FILE
  file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


def test_rank_above_one_is_refused(base, tmp_path):
  config = peft.MultitaskPromptTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM,
                                            num_virtual_tokens=P, num_tasks=2, num_ranks=2,
                                            num_transformer_submodules=1)
  peft.get_peft_model(torch_t5(base[0]), config).save_pretrained(tmp_path / "adapter")
  with pytest.raises(ValueError, match=r"has num_ranks 2: each task's update prefix_task_cols "
                                       r"@ prefix_task_rows is then a rank-2 matrix, .* rank "
                                       r"one .* Train the PEFT adapter with num_ranks=1"):
    peft_io.import_adapter(str(tmp_path / "adapter"), str(tmp_path / "r.npy"))
  assert not (tmp_path / "r.npy").exists()


def test_peft_default_seq2seq_layout_is_refused(base, tmp_path):
  """PEFT's default seq2seq MPT adapter also prompts the decoder: it does not map."""
  config = peft.MultitaskPromptTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM,
                                            num_virtual_tokens=P, num_tasks=2)
  tuned = peft.get_peft_model(torch_t5(base[0]), config).eval()
  tuned.save_pretrained(tmp_path / "adapter")
  assert json.loads((tmp_path / "adapter" / peft_io.CONFIG_FILE).read_text())[
      "num_transformer_submodules"] == 2
  # The claim checked: changing only the second half's rows changes PEFT's scores.
  before = peft_scores(tuned, [0] * 4)
  with torch.no_grad():
    tuned.prompt_encoder["default"].embedding.weight[P:] += 1.0
  assert np.abs(peft_scores(tuned, [0] * 4) - before).max() > 1e-3
  with pytest.raises(ValueError, match=r"num_transformer_submodules 2: PEFT's seq2seq "
                                       r"multi-task prompt then also goes in front of T5's "
                                       r"decoder input"):
    peft_io.import_adapter(str(tmp_path / "adapter"), str(tmp_path / "r.npy"))


@pytest.mark.parametrize("tasks, match", [
    (["a", "b"], r"--tasks names 2 tasks \['a', 'b'\] but adapter .* has num_tasks 3; give one "
                 r"name per PEFT task id"),
    (["a", "b", "c", "d"], r"names 4 tasks .* has num_tasks 3"),
    (["a", "a", "b"], r"repeat \['a'\]; give each task once"),
    (["a", "shared", "b"], r"include \['shared'\]"),
    ("a,b,c", r"tasks='a,b,c' is one string; give a list"),
])
def test_bad_task_names(base, tmp_path, tasks, match):
  adapter = export(base, tmp_path, random_record())
  with pytest.raises(ValueError, match=match):
    peft_io.import_adapter(str(adapter), str(tmp_path / "r.npy"), tasks=tasks)
  assert not (tmp_path / "r.npy").exists()


def test_wrong_kind_either_way(base, tmp_path):
  plain = np.random.default_rng(0).uniform(-0.5, 0.5, (P, D)).astype(np.float32)
  # A plain prompt where an MPT record is needed, and the other way round.
  with pytest.raises(ValueError, match=r"Prompt to export has shape \(4, 32\) and dtype float32"
                                       r": not an MPT record .* written as a PROMPT_TUNING"):
    peft_mpt.write_adapter(plain, str(base[0]), str(tmp_path / "x"))
  with pytest.raises(ValueError, match=r"is an MPT record .* MULTITASK_PROMPT_TUNING adapter: "
                                       r"write it with export_adapter or peft_mpt"):
    peft_io.write_adapter(random_record(), str(base[0]), str(tmp_path / "x"))
  assert not (tmp_path / "x").exists()
  # A plain adapter given tasks or read as MPT; an MPT adapter read as one prompt.
  peft_io.write_adapter(plain, str(base[0]), str(tmp_path / "plain"))
  with pytest.raises(ValueError, match=r"is a PROMPT_TUNING adapter, one prompt without tasks, "
                                       r"but tasks \['a'\] were given"):
    peft_io.import_adapter(str(tmp_path / "plain"), str(tmp_path / "r.npy"), tasks=["a"])
  with pytest.raises(ValueError, match=r"is a PROMPT_TUNING adapter, one prompt and no tasks, "
                                       r"not a MULTITASK_PROMPT_TUNING one"):
    peft_mpt.read_adapter(str(tmp_path / "plain"))
  adapter = export(base, tmp_path, random_record())
  with pytest.raises(ValueError, match=r"is a MULTITASK_PROMPT_TUNING adapter .* not one "
                                       r"prompt; import it with peft_adapter import"):
    peft_io.read_adapter(str(adapter))
  assert not (tmp_path / "r.npy").exists()


def test_width_mismatch_and_mismatched_files(base, tmp_path):
  np.save(tmp_path / "narrow.npy", random_record(width=16))
  with pytest.raises(ValueError, match=r"narrow.npy' has width 16 \(shared prompt 4 x 16\) but "
                                       r"base model .* has d_model 32"):
    peft_io.export_adapter(str(tmp_path / "narrow.npy"), str(base[0]), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()
  adapter = export(base, tmp_path, random_record())
  with pytest.raises(ValueError, match=r"has width 32 but the model has d_model 16"):
    peft_mpt.read_adapter(str(adapter), d_model=16)
  _edit_config(adapter, num_tasks=2)
  with pytest.raises(ValueError, match=r"has shapes prompt_embeddings \(4, 32\), "
                                       r"prefix_task_cols \(3, 4, 1\), prefix_task_rows "
                                       r"\(3, 1, 32\) but adapter_config.json implies .* "
                                       r"prefix_task_cols \(2, 4, 1\)"):
    peft_io.import_adapter(str(adapter), str(tmp_path / "r.npy"))
  huggingface.write_safetensors(str(adapter / peft_io.WEIGHTS_FILE),
                                {"prompt_embeddings": np.zeros((P, D), np.float32)})
  with pytest.raises(ValueError, match=r"has no 'prefix_task_cols' or 'prefix_task_rows' "
                                       r"tensor"):
    peft_io.import_adapter(str(adapter), str(tmp_path / "r.npy"))


# ---- the command --------------------------------------------------------------------------------


def test_command_round_trip(base, tmp_path, capsys):
  np.save(tmp_path / "record.npy", random_record(3))
  peft_adapter.main(["peft_adapter", "export", f"--prompt_file={tmp_path / 'record.npy'}",
                     f"--base_model={base[0]}", f"--output_dir={tmp_path / 'adapter'}"])
  peft_adapter.main(["peft_adapter", "import", f"--adapter_dir={tmp_path / 'adapter'}",
                     f"--output={tmp_path / 'back.npy'}", "--tasks=task_a,task_b,task_c"])
  assert np.load(tmp_path / "back.npy").tobytes() == random_record(3).tobytes()
  out = capsys.readouterr().out.splitlines()
  assert out[0] == (f"Wrote the PEFT MULTITASK_PROMPT_TUNING adapter {tmp_path / 'adapter'} "
                    f"(shared prompt 4 x 32; task_ids 0=task_a, 1=task_b, 2=task_c) for "
                    f"{base[0]}.")
  assert out[1].startswith(f"Wrote the MPT record {tmp_path / 'back.npy'} (shared prompt 4 x "
                           "32; task_ids 0=task_a, 1=task_b, 2=task_c)")
  with pytest.raises(SystemExit) as exit_info:  # an existing file is kept without --overwrite
    peft_adapter.main(["peft_adapter", "import", f"--adapter_dir={tmp_path / 'adapter'}",
                       f"--output={tmp_path / 'back.npy'}"])
  assert "already exists; pass --overwrite" in str(exit_info.value.code)
  peft_adapter.main(["peft_adapter", "import", f"--adapter_dir={tmp_path / 'adapter'}",
                     f"--output={tmp_path / 'back.npy'}", "--overwrite"])
  assert [str(t) for t in np.load(tmp_path / "back.npy")["tasks"]] == [
      "task_0", "task_1", "task_2"]
  with pytest.raises(SystemExit) as exit_info:
    peft_adapter.main(["peft_adapter", "export", f"--prompt_file={tmp_path / 'record.npy'}",
                       f"--base_model={base[0]}", f"--output_dir={tmp_path / 'other'}",
                       "--tasks=a,b,c"])
  message = str(exit_info.value.code)
  assert message.startswith("error: --tasks is for import") and "\n" not in message
