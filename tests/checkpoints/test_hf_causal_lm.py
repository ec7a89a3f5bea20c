"""Hugging Face decoder-only checkpoints: sharded files, FROZEN_DTYPE, placement into
shardings, writing (read back by transformers) and one clear error per bad input."""

import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from prompt_tuning import partitioning
from prompt_tuning.causal_lm import config as decoder_config
from prompt_tuning.causal_lm import network
from prompt_tuning.checkpoints import hf_causal_lm
from prompt_tuning.checkpoints.base import CheckpointError

import hf_decoder_helpers as helpers


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
  """A random tiny Llama (grouped-query, untied) saved whole and in small shards."""
  root = tmp_path_factory.mktemp("hf_llama")
  model = helpers.build("llama")
  model.save_pretrained(root / "single")
  model.save_pretrained(root / "sharded", max_shard_size="20KB")
  return root


def _copy(src, dst):
  dst.mkdir()
  for file in src.iterdir():
    (dst / file.name).write_bytes(file.read_bytes())
  return dst


def test_sharded_checkpoint_loads_the_same(llama_dir):
  assert (llama_dir / "sharded" / "model.safetensors.index.json").is_file()
  assert len(list((llama_dir / "sharded").glob("*.safetensors"))) > 2
  single = hf_causal_lm.load_params(llama_dir / "single")
  sharded = hf_causal_lm.load_params(llama_dir / "sharded")
  jax.tree.map(np.testing.assert_array_equal, single, sharded)
  # Each kernel is the transposed nn.Linear weight of the file.
  weights = load_file(str(llama_dir / "single" / "model.safetensors"))
  np.testing.assert_array_equal(single["layers_1"]["attention"]["key"]["kernel"],
                                weights["model.layers.1.self_attn.k_proj.weight"].T)


def test_frozen_dtype_and_shardings(llama_dir):
  path = llama_dir / "sharded"
  config = decoder_config.config_from_hf(path)
  full = hf_causal_lm.load_params(path)
  mesh = partitioning.make_mesh(1)
  shardings = partitioning.logical_to_sharding(network.param_axes(config), mesh,
                                               shapes=network.param_shapes(config))
  placed = hf_causal_lm.load_params(path, config, shardings=shardings, frozen_dtype="bfloat16")
  for array, leaf, sharding in zip(jax.tree.leaves(full), jax.tree.leaves(placed),
                                   jax.tree.leaves(shardings)):
    assert isinstance(leaf, jax.Array) and leaf.dtype == jnp.bfloat16
    assert leaf.sharding == sharding
    np.testing.assert_array_equal(np.asarray(leaf), array.astype(ml_dtypes.bfloat16))
  with pytest.raises(ValueError, match="FROZEN_DTYPE='float16' is not supported"):
    hf_causal_lm.load_params(path, frozen_dtype="float16")


@pytest.mark.parametrize("name", ["llama_tiny", "gemma_tiny", "gpt2_tiny"])
def test_written_directory_is_read_by_transformers(tmp_path, name):
  import transformers  # pylint: disable=g-import-not-at-top
  config = decoder_config.CONFIGS[name]
  params = network.init_params(config, jax.random.PRNGKey(0))
  hf_causal_lm.write_hf_causal_lm(params, config, tmp_path / "model")
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "model")).float().eval()
  tokens, mask = helpers.batch()
  theirs = helpers.logits(model, tokens, mask)
  ours = network.DecoderOnly(config).apply({"params": params}, jnp.asarray(tokens),
                                           jnp.asarray(mask),
                                           method=network.DecoderOnly.token_logits)
  assert np.abs(np.asarray(ours) - theirs)[mask].max() < 1e-4
  jax.tree.map(np.testing.assert_array_equal, params,
               hf_causal_lm.load_params(tmp_path / "model"))
  with pytest.raises(FileExistsError, match="overwrite=True"):
    hf_causal_lm.write_hf_causal_lm(params, config, tmp_path / "model")


# ---------------------------------------------------------------------------------------------
# Bad input: one clear error each

def _edit_config(path, **changes):
  config = json.loads((path / "config.json").read_text())
  config.update(changes)
  (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("model_type", ["bert", "mistral", "gemma2"])
def test_unsupported_architecture_names_the_supported_ones(tmp_path, llama_dir, model_type):
  path = _copy(llama_dir / "single", tmp_path / "model")
  _edit_config(path, model_type=model_type)
  with pytest.raises(CheckpointError, match=f"model_type '{model_type}' is not a supported "
                     "decoder-only family; supported: llama, qwen2, gemma, gpt2"):
    hf_causal_lm.load_params(path)


def test_unimplemented_rope_scaling_is_refused():
  with pytest.raises(CheckpointError, match="rope scaling 'yarn' is not implemented; "
                     "supported: default, linear, llama3"):
    decoder_config.config_from_hf({"model_type": "llama", "rope_parameters": {
        "rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}})
  with pytest.raises(CheckpointError, match="use_sliding_window=true is not supported"):
    decoder_config.config_from_hf({"model_type": "qwen2", "use_sliding_window": True})


def test_shapes_that_disagree_with_config_json(tmp_path, llama_dir):
  path = _copy(llama_dir / "single", tmp_path / "model")
  _edit_config(path, num_key_value_heads=3)  # the file was saved with 1 key/value head
  with pytest.raises(CheckpointError) as error:
    hf_causal_lm.load_params(path)
  message = str(error.value)
  assert "does not fit its config.json (4 mis-shaped, 0 missing, 0 unexpected)" in message
  assert ("model.layers.0.self_attn.k_proj.weight: the file has [8, 24], config.json implies "
          "[24, 24]") in message


def test_missing_weight(tmp_path, llama_dir):
  path = _copy(llama_dir / "single", tmp_path / "model")
  tensors = load_file(str(path / "model.safetensors"))
  del tensors["model.layers.1.mlp.up_proj.weight"]
  save_file(tensors, str(path / "model.safetensors"))
  with pytest.raises(CheckpointError, match=r"\(0 mis-shaped, 1 missing, 0 unexpected\):\n  "
                     r"missing: model.layers.1.mlp.up_proj.weight \[40, 24\]"):
    hf_causal_lm.load_params(path)


def test_config_that_computes_differently(llama_dir):
  config = decoder_config.config_from_hf(llama_dir / "single").replace(rope_theta=500000.0)
  with pytest.raises(CheckpointError, match="rope_theta: config.json implies 10000.0, the "
                     "config has 500000.0"):
    hf_causal_lm.load_params(llama_dir / "single", config)
