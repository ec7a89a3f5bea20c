"""Hugging Face T5 checkpoints: logits parity with transformers, configs, names, dtypes."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import checkpoint_helpers as helpers
from checkpoint_helpers import hf_models  # noqa: F401 (fixtures)
from prompt_tuning.checkpoints import huggingface, loading
from prompt_tuning.checkpoints.base import CheckpointError
from prompt_tuning.checkpoints.base import flatten as base_flatten
from prompt_tuning.t5 import config as t5_config
from prompt_tuning.t5 import network


def _logits(directory, config):
  params = loading.load_params(directory, config)
  return np.asarray(network.Transformer(config).apply(
      {"params": params}, jnp.asarray(helpers.ENCODER_TOKENS),
      jnp.asarray(helpers.DECODER_TOKENS)))


@pytest.mark.parametrize("name", ["relu", "gated", "gated_tied", "sharded"])
def test_logits_match_transformers(hf_models, name):
  """T5 1.0 (relu, tied, scaled); T5 1.1 (gated-gelu) with its own lm_head, or tied and
  unscaled as transformers>=5 saves it; and a sharded safetensors checkpoint."""
  directory, model = hf_models[name]
  config = huggingface.config_from_hf(directory)
  assert config.logits_via_embedding == (name == "relu")
  assert config.mlp_activations == (("relu",) if name == "relu" else ("gelu", "linear"))
  np.testing.assert_allclose(_logits(directory, config), helpers.hf_logits(model),
                             atol=1e-4, rtol=1e-5)


def test_sharded_checkpoint_has_several_files(hf_models):
  directory, _ = hf_models["sharded"]
  index = helpers.read_json(directory / huggingface.INDEX_FILE)
  assert len(set(index["weight_map"].values())) > 1


def test_weights_are_transposed_and_named(hf_models):
  directory, model = hf_models["gated"]
  params = loading.load_params(directory, huggingface.config_from_hf(directory))
  torch_params = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  np.testing.assert_array_equal(params["decoder"]["relpos_bias"]["rel_embedding"], torch_params[
      "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].T)
  np.testing.assert_array_equal(
      params["decoder"]["layers_1"]["encoder_decoder_attention"]["out"]["kernel"],
      torch_params["decoder.block.1.layer.1.EncDecAttention.o.weight"].T)
  np.testing.assert_array_equal(params["decoder"]["logits_dense"]["kernel"],
                                torch_params["lm_head.weight"].T)
  np.testing.assert_array_equal(params["token_embedder"]["embedding"],
                                torch_params["shared.weight"])


@pytest.mark.parametrize("hf_name,expected", [
    ("shared.weight", ("token_embedder/embedding", False)),
    ("encoder.block.3.layer.0.SelfAttention.k.weight",
     ("encoder/layers_3/attention/key/kernel", True)),
    ("decoder.block.2.layer.1.layer_norm.weight",
     ("decoder/layers_2/pre_cross_attention_layer_norm/scale", False)),
    ("decoder.block.0.layer.2.DenseReluDense.wi.weight", ("decoder/layers_0/mlp/wi/kernel", True)),
    ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
     ("encoder/relpos_bias/rel_embedding", True)),
    ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight", None),
    ("encoder.embed_tokens.weight", None),
    # UMT5 has one bias per layer: no T5X name, so the tree check reports it unexpected.
    ("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight",
     ("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight", False)),
])
def test_t5x_key(hf_name, expected):
  assert huggingface.t5x_key(hf_name) == expected


# Abridged config.json files of public checkpoints, as transformers 4 wrote them.
_HUB_CONFIGS = {
    "t5_1_0_small": {"d_ff": 2048, "d_kv": 64, "d_model": 512, "num_heads": 8, "num_layers": 6,
                     "vocab_size": 32128, "model_type": "t5", "dropout_rate": 0.1},
    "t5_1_1_small": {"d_ff": 1024, "d_kv": 64, "d_model": 512, "num_heads": 6, "num_layers": 8,
                     "num_decoder_layers": 8, "feed_forward_proj": "gated-gelu",
                     "tie_word_embeddings": False, "vocab_size": 32128, "model_type": "t5",
                     "relative_attention_max_distance": 128, "dropout_rate": 0.1},
    "mt5_small": {"d_ff": 1024, "d_kv": 64, "d_model": 512, "num_heads": 6, "num_layers": 8,
                  "num_decoder_layers": 8, "feed_forward_proj": "gated-gelu",
                  "tie_word_embeddings": False, "vocab_size": 250112, "model_type": "mt5",
                  "dropout_rate": 0.1},
}


@pytest.mark.parametrize("name", sorted(_HUB_CONFIGS))
def test_config_from_hub_configs(tmp_path, name):
  (tmp_path / "config.json").write_text(json.dumps(_HUB_CONFIGS[name]))
  assert huggingface.config_from_hf(tmp_path, dropout_rate=0.0) == t5_config.get_config(name)
  assert huggingface.config_from_hf(tmp_path / "config.json").dropout_rate == 0.1


def test_config_from_hf_rejects_other_models(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "umt5"}))
  with pytest.raises(CheckpointError, match="umt5"):
    huggingface.config_from_hf(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps({"feed_forward_proj": "gelu"}))
  with pytest.raises(CheckpointError, match="'gelu'"):
    huggingface.config_from_hf(tmp_path)


def test_bfloat16_weights(tmp_path):
  torch = pytest.importorskip("torch")
  model = helpers.hf_model("gated", 100).to(torch.bfloat16)
  model.save_pretrained(tmp_path)
  tensors = huggingface.read_safetensors(tmp_path / huggingface.WEIGHTS_FILE)
  assert tensors["shared.weight"].dtype.name == "bfloat16"
  params = loading.load_params(tmp_path, huggingface.config_from_hf(tmp_path))
  kernel = params["encoder"]["layers_0"]["mlp"]["wi_1"]["kernel"]
  assert kernel.dtype == np.float32
  np.testing.assert_array_equal(
      kernel, model.encoder.block[0].layer[1].DenseReluDense.wi_1.weight.detach().float().numpy().T)


def test_config_disagreeing_beyond_shapes(hf_models):
  """T5 1.0 weights with a config that would not tie/scale the logits: same shapes, other
  numbers, so it must be refused by name."""
  directory, _ = hf_models["relu"]
  config = huggingface.config_from_hf(directory).replace(logits_via_embedding=False)
  with pytest.raises(CheckpointError, match="logits_via_embedding"):
    loading.load_params(directory, config)


def test_config_json_without_weights(tmp_path, hf_models):
  directory, _ = hf_models["relu"]
  (tmp_path / "config.json").write_text((directory / "config.json").read_text())
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(CheckpointError, match="model.safetensors"):
    loading.load_params(tmp_path, huggingface.config_from_hf(directory))


def test_lazy_reads_only_the_slice(hf_models):
  directory, model = hf_models["gated"]
  lazy = huggingface.read_huggingface(directory)
  kernel = lazy["encoder/layers_1/mlp/wo/kernel"]  # weight [32, 64] -> kernel [64, 32]
  assert kernel.shape == (64, 32)
  part = kernel.read((slice(16, 32), slice(8, 16)))
  weight = model.encoder.block[1].layer[1].DenseReluDense.wo.weight.detach().numpy()
  np.testing.assert_array_equal(part, weight.T[16:32, 8:16])
  assert part.flags.c_contiguous and part.dtype == np.float32


def _random_t5_1_1(seed=0):
  config = t5_config.T5Config(vocab_size=100, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                              num_encoder_layers=2, num_decoder_layers=3,
                              relative_attention_num_buckets=8,
                              relative_attention_max_distance=16)
  import jax  # pylint: disable=g-import-not-at-top
  return config, jax.tree.map(np.asarray, network.init_params(config, jax.random.PRNGKey(seed)))


def test_written_checkpoint_runs_in_transformers(tmp_path):
  """write_huggingface (float32) -> transformers computes our logits; our reader round-trips."""
  pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config, params = _random_t5_1_1()
  huggingface.write_huggingface(params, config, str(tmp_path / "hf"), dtype=np.float32)
  ours = np.asarray(network.Transformer(config).apply(
      {"params": params}, jnp.asarray(helpers.ENCODER_TOKENS),
      jnp.asarray(helpers.DECODER_TOKENS)))
  model = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
  np.testing.assert_allclose(helpers.hf_logits(model), ours, atol=1e-4, rtol=1e-5)
  assert huggingface.config_from_hf(tmp_path / "hf").replace(dropout_rate=0.0) == config
  read = loading.load_params(tmp_path / "hf", config)
  for path, value in base_flatten(params).items():
    np.testing.assert_array_equal(base_flatten(read)[path], value, err_msg=path)


def test_written_bfloat16_loads_as_rounded_float32(tmp_path):
  config, params = _random_t5_1_1(1)
  huggingface.write_huggingface(params, config, str(tmp_path / "hf"),
                                extra_files={"notes.txt": __file__})
  assert (tmp_path / "hf" / "notes.txt").is_file()
  assert not (tmp_path / "hf.tmp").exists()
  read = base_flatten(loading.load_params(tmp_path / "hf", config))
  for path, value in base_flatten(params).items():
    assert read[path].dtype == np.float32
    np.testing.assert_array_equal(read[path], value.astype(jnp.bfloat16).astype(np.float32))


def test_writer_refuses_t5_1_0(tmp_path):
  config = t5_config.get_config("t5_1_0_small")
  with pytest.raises(ValueError, match="T5 1.1-style"):
    huggingface.write_huggingface({}, config, str(tmp_path / "hf"))


# ---- cut and garbled weight files ------------------------------------------------------------

def _weights_dir(tmp_path, shards=1):
  """config.json and safetensors files written by the safetensors package itself, the two
  tensors in `shards` files (with an index when more than one)."""
  safetensors_numpy = pytest.importorskip("safetensors.numpy")
  (tmp_path / "config.json").write_text(json.dumps(huggingface.hf_config(
      t5_config.get_config("t5_1_1_tiny"))))
  rng = np.random.default_rng(0)
  tensors = {"shared.weight": rng.normal(size=(64, 4)).astype(np.float32),
             "lm_head.weight": rng.normal(size=(64, 4)).astype(np.float32)}
  if shards == 1:
    safetensors_numpy.save_file(tensors, str(tmp_path / huggingface.WEIGHTS_FILE))
    return tmp_path / huggingface.WEIGHTS_FILE
  weight_map = {}
  for i, (name, array) in enumerate(tensors.items()):
    weight_map[name] = f"model-{i + 1:05d}-of-00002.safetensors"
    safetensors_numpy.save_file({name: array}, str(tmp_path / weight_map[name]))
  (tmp_path / huggingface.INDEX_FILE).write_text(json.dumps({"weight_map": weight_map}))
  return tmp_path / weight_map["lm_head.weight"]


def _cut(file, size):
  with open(file, "r+b") as f:
    f.truncate(size)


@pytest.mark.parametrize("size, detail", [
    (0, "it has 0 bytes, fewer than the 8 that give the header's length"),
    (5, "it has 5 bytes, fewer than the 8 that give the header's length"),
    (50, r"its header should be \d+ bytes but the file has 50"),
    (-1, r"tensor '[a-z_.]+' ends at byte [\d,]+ but the file has [\d,]+ bytes"),
])
@pytest.mark.parametrize("shards", [1, 2])
def test_a_cut_weights_file_is_named_incomplete(tmp_path, size, detail, shards):
  """A download that stopped: whatever the cut, one error names the file (the shard)."""
  file = _weights_dir(tmp_path, shards)
  _cut(file, size if size >= 0 else file.stat().st_size - 1)
  with pytest.raises(CheckpointError, match=(
      rf"^Hugging Face weights file '{file}' is incomplete or damaged: {detail}\. Download "
      r"it again, or restore it from the model's original files\.$")):
    huggingface.read_huggingface(str(tmp_path))


def test_a_garbled_header_is_named_damaged(tmp_path):
  file = _weights_dir(tmp_path)
  data = bytearray(file.read_bytes())
  header = data[8:8 + int.from_bytes(data[:8], "little")].decode()
  file.write_bytes(bytes(data).replace(header.encode(), header.replace(
      '"shape":[64,4]', '"shape":[64,8]', 1).encode()))
  with pytest.raises(CheckpointError, match=r"is incomplete or damaged: tensor '[a-z_.]+' of "
                     r"shape \[64, 8\] \(F32\) spans 1,024 bytes in the header"):
    huggingface.read_huggingface(str(tmp_path))
  file.write_bytes(data[:8] + b"{" * len(header) + data[8 + len(header):])
  with pytest.raises(CheckpointError, match="is incomplete or damaged: its header is not valid "
                     "JSON"):
    huggingface.read_huggingface(str(tmp_path))


def test_a_cut_shard_index_is_named(tmp_path):
  _weights_dir(tmp_path, shards=2)
  index = tmp_path / huggingface.INDEX_FILE
  index.write_text(index.read_text()[:30])
  with pytest.raises(CheckpointError, match=f"shard index '{index}' is incomplete or damaged"):
    huggingface.read_huggingface(str(tmp_path))
