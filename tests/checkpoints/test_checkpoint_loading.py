"""Format detection, the readers registry, and clear errors for bad paths and trees."""

import numpy as np
import pytest
from safetensors.numpy import save_file

from checkpoint_helpers import hf_models, t5x_tiny  # noqa: F401 (fixtures)

from prompt_tuning.checkpoints import base, huggingface, loading
from prompt_tuning.checkpoints.base import CheckpointError
from prompt_tuning.t5 import config as t5_config
from prompt_tuning.t5 import network

TINY = t5_config.get_config("t5_1_1_tiny", vocab_size=64)


def test_detect_format(t5x_tiny, hf_models, tmp_path):
  assert loading.detect_format(t5x_tiny) == "t5x"
  assert loading.detect_format(hf_models["relu"][0]) == "huggingface"
  (tmp_path / "one").mkdir()
  (tmp_path / "one" / "_CHECKPOINT_METADATA").write_text("{}")
  assert loading.detect_format(tmp_path / "one") == "orbax"
  (tmp_path / "steps" / "200").mkdir(parents=True)
  (tmp_path / "steps" / "200" / "_CHECKPOINT_METADATA").write_text("{}")
  assert loading.detect_format(tmp_path / "steps") == "orbax"


def test_missing_path(tmp_path):
  missing = tmp_path / "no_such_checkpoint"
  with pytest.raises(FileNotFoundError, match="no_such_checkpoint"):
    loading.load_params(missing, TINY)


def test_neither_format(tmp_path):
  with pytest.raises(CheckpointError) as error:
    loading.load_params(tmp_path, TINY)
  message = str(error.value)
  assert str(tmp_path) in message
  assert all(name in message for name in ("'checkpoint'", "'config.json'",
                                          "'_CHECKPOINT_METADATA'"))
  (tmp_path / "checkpoint_100").mkdir()
  (tmp_path / "checkpoint_2000").mkdir()
  with pytest.raises(CheckpointError, match="pass one, e.g. .*checkpoint_2000"):
    loading.detect_format(tmp_path)


def test_file_instead_of_directory(tmp_path):
  (tmp_path / "model.safetensors").write_bytes(b"")
  with pytest.raises(CheckpointError, match="is a file"):
    loading.load_params(tmp_path / "model.safetensors", TINY)


def _random_flat(config):
  rng = np.random.default_rng(0)
  return {k: rng.normal(size=s.shape).astype(np.float32)
          for k, s in base.flatten(network.param_shapes(config)).items()}


def test_model_tuning_job_checkpoint_loads_as_initial_checkpoint(tmp_path):
  from prompt_tuning.checkpoints import job
  flat = _random_flat(TINY)
  state = {"step": np.int32(7), "trainable": base.unflatten(flat), "opt_state": {}}
  job.save(job.manager(str(tmp_path)), state, {"step": 7})
  for path in (tmp_path / "checkpoints", tmp_path / "checkpoints" / "7"):
    assert loading.detect_format(path) == "orbax"
    params = base.flatten(loading.load_params(path, TINY))
    assert params.keys() == flat.keys()
    for key, value in flat.items():
      np.testing.assert_array_equal(params[key], value)


def test_wrong_shape_names_path_key_and_shapes(hf_models):
  directory, _ = hf_models["gated"]  # d_model 32
  config = huggingface.config_from_hf(directory, emb_dim=48)
  with pytest.raises(CheckpointError) as error:
    loading.load_params(directory, config)
  message = str(error.value)
  assert str(directory) in message
  assert "50 mis-shaped, 0 missing, 0 unexpected" in message
  assert "shape mismatch: decoder/decoder_norm/scale: checkpoint [32], model [48]" in message
  assert ("shape mismatch: decoder/layers_0/mlp/wo/kernel: checkpoint [64, 32], model [64, 48]"
          in message)
  assert "... and 30 more" in message  # capped, not thousands of lines


def _hf_copy_with(tmp_path, hf_dir, change):
  """A copy of a Hugging Face checkpoint whose tensors went through `change(dict)`."""
  tensors = {k: np.asarray(v) for k, v in huggingface.read_tensors(hf_dir).items()}
  change(tensors)
  save_file(tensors, str(tmp_path / huggingface.WEIGHTS_FILE))
  (tmp_path / huggingface.CONFIG_FILE).write_text((hf_dir / huggingface.CONFIG_FILE).read_text())
  return tmp_path


def test_missing_and_unexpected_keys(hf_models, tmp_path):
  hf_dir, _ = hf_models["relu"]

  def change(tensors):
    del tensors["decoder.block.1.layer.2.DenseReluDense.wo.weight"]
    tensors["encoder.block.0.layer.0.adapter.weight"] = np.zeros((3, 2), np.float32)

  directory = _hf_copy_with(tmp_path, hf_dir, change)
  with pytest.raises(CheckpointError) as error:
    loading.load_params(directory, huggingface.config_from_hf(directory))
  message = str(error.value)
  assert "missing: decoder/layers_1/mlp/wo/kernel [64, 32]" in message
  assert "unexpected: encoder.block.0.layer.0.adapter.weight [3, 2]" in message
  assert "1 missing, 1 unexpected" in message


def test_unsharded_load_returns_float32_numpy(hf_models):
  directory, _ = hf_models["relu"]
  params = loading.load_params(directory, huggingface.config_from_hf(directory))
  leaves = base.flatten(params)
  assert "decoder/logits_dense/kernel" not in leaves  # tied
  assert all(type(v) is np.ndarray and v.dtype == np.float32 for v in leaves.values())


def test_embedding_saved_under_the_encoder_name(hf_models, tmp_path):
  hf_dir, _ = hf_models["gated"]

  def rename(tensors):
    tensors["encoder.embed_tokens.weight"] = tensors.pop("shared.weight")

  directory = _hf_copy_with(tmp_path, hf_dir, rename)
  config = huggingface.config_from_hf(directory)
  np.testing.assert_array_equal(
      loading.load_params(directory, config)["token_embedder"]["embedding"],
      huggingface.read_tensors(hf_dir)["shared.weight"])
  tensors = {k: np.asarray(v) for k, v in huggingface.read_tensors(directory).items()}
  tensors["decoder.embed_tokens.weight"] = tensors["encoder.embed_tokens.weight"] + 1
  save_file(tensors, str(directory / huggingface.WEIGHTS_FILE))
  with pytest.raises(CheckpointError, match="different encoder and decoder embeddings"):
    loading.load_params(directory, config)
