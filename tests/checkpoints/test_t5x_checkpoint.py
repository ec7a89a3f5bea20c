"""T5X checkpoints: the real fixture, read independently and run, and T5X-style variants."""

import gzip
import json
import itertools

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import serialization

import checkpoint_helpers as helpers
from checkpoint_helpers import t5x_tiny  # noqa: F401 (fixtures)
from prompt_tuning.checkpoints import base, loading, t5x
from prompt_tuning.checkpoints.base import CheckpointError
from prompt_tuning.t5 import config as t5_config
from prompt_tuning.t5 import network

TINY = t5_config.get_config("t5_1_1_tiny")
SMALL_VOCAB = TINY.replace(vocab_size=64)


def _read_zarr_raw(folder):
  """A zarr v2 array from its gzip chunk files with numpy only (no TensorStore)."""
  meta = json.loads((folder / ".zarray").read_text())
  assert meta["compressor"]["id"] == "gzip" and meta["order"] == "C"
  shape, chunks = meta["shape"], meta["chunks"]
  out = np.zeros(shape, np.dtype(meta["dtype"]))
  grid = [range(-(-s // c)) for s, c in zip(shape, chunks)]
  for position in itertools.product(*grid):
    data = gzip.decompress((folder / ".".join(map(str, position))).read_bytes())
    chunk = np.frombuffer(data, np.dtype(meta["dtype"])).reshape(chunks)
    region = tuple(slice(p * c, min((p + 1) * c, s)) for p, c, s in zip(position, chunks, shape))
    out[region] = chunk[tuple(slice(0, r.stop - r.start) for r in region)]
  return out


def _msgpack_target(directory):
  state = serialization.msgpack_restore((directory / "checkpoint").read_bytes())
  return state["optimizer"]["target"]


def test_fixture_loads_every_array_exactly(t5x_tiny):
  params = base.flatten(loading.load_params(t5x_tiny, TINY))
  inline = base.flatten(_msgpack_target(t5x_tiny))
  assert set(params) == set(base.flatten(network.param_shapes(TINY)))
  zarr_keys = 0
  for key, value in params.items():
    assert isinstance(value, np.ndarray) and value.dtype == np.float32, key
    folder = t5x_tiny / ("target." + key.replace("/", "."))
    if folder.is_dir():
      expected, zarr_keys = _read_zarr_raw(folder), zarr_keys + 1
    else:
      expected = inline[key]
      assert isinstance(expected, np.ndarray), key
    np.testing.assert_array_equal(value, expected, err_msg=key)
  assert zarr_keys == len([d for d in t5x_tiny.iterdir() if d.is_dir()]) == 38


def test_fixture_forward_pass(t5x_tiny):
  params = loading.load_params(t5x_tiny, TINY)
  logits = network.Transformer(TINY).apply(
      {"params": params}, jnp.asarray(helpers.ENCODER_TOKENS), jnp.asarray(helpers.DECODER_TOKENS))
  assert logits.shape == (*helpers.DECODER_TOKENS.shape, TINY.vocab_size)
  assert logits.dtype == jnp.float32
  assert bool(jnp.isfinite(logits).all())


def test_read_one_variable(t5x_tiny):
  target = _msgpack_target(t5x_tiny)
  np.testing.assert_array_equal(
      t5x.read_t5x_variable(t5x_tiny, "decoder/relpos_bias/rel_embedding"),
      target["decoder"]["relpos_bias"]["rel_embedding"])
  np.testing.assert_array_equal(
      t5x.read_t5x_variable(t5x_tiny, "target/encoder/layers_1/mlp/wo/kernel"),
      _read_zarr_raw(t5x_tiny / "target.encoder.layers_1.mlp.wo.kernel"))
  with pytest.raises(CheckpointError, match="encoder/prompt/prompt"):
    t5x.read_t5x_variable(t5x_tiny, "encoder/prompt/prompt")


def _random_params(config, seed=0):
  rng = np.random.default_rng(seed)
  shapes = base.flatten(network.param_shapes(config))
  return base.unflatten({k: rng.normal(size=s.shape).astype(np.float32)
                         for k, s in shapes.items()})


@pytest.mark.parametrize("layout,gcs_written", [("optimizer", False), ("target", False),
                                                ("optimizer", True)])
def test_t5x_layouts(tmp_path, layout, gcs_written):
  """`optimizer/target` (v3) and `target` (newer); specs written locally ('gfile') or on GCS
  (kvstore 'gcs' with a dummy bucket, path at top level) both resolve to the local folder."""
  params = _random_params(SMALL_VOCAB)
  # Undecodable optimizer state proves only the weights are decoded.
  helpers.write_t5x(tmp_path, params, layout=layout, gcs_written=gcs_written,
                    optimizer_state={"token_embedder": {"embedding": {"v": helpers.garbage_ext()}}})
  loaded = base.flatten(loading.load_params(tmp_path, SMALL_VOCAB))
  for key, value in base.flatten(params).items():
    np.testing.assert_array_equal(loaded[key], value, err_msg=key)


@pytest.mark.parametrize("version", [2, 3])
def test_bfloat16_arrays_become_float32(tmp_path, version):
  """Version 3 stores bfloat16 natively; version 2 stored its bits as uint16."""
  params = _random_params(SMALL_VOCAB)
  helpers.write_t5x(tmp_path, params, version=version, zarr_dtype=ml_dtypes.bfloat16)
  loaded = base.flatten(loading.load_params(tmp_path, SMALL_VOCAB))
  kernel = "encoder/layers_0/attention/query/kernel"
  assert loaded[kernel].dtype == np.float32
  expected = base.flatten(params)[kernel].astype(ml_dtypes.bfloat16).astype(np.float32)
  np.testing.assert_array_equal(loaded[kernel], expected)


def test_prompt_checkpoint_variable_and_strict_tree(tmp_path):
  params = _random_params(SMALL_VOCAB)
  prompt = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
  params["encoder"]["prompt"] = {"prompt": prompt}
  helpers.write_t5x(tmp_path, params)
  np.testing.assert_array_equal(t5x.read_t5x_variable(tmp_path, "encoder/prompt/prompt"), prompt)
  with pytest.raises(CheckpointError, match=r"unexpected: encoder/prompt/prompt \[5, 4\]"):
    loading.load_params(tmp_path, SMALL_VOCAB)


def test_missing_zarr_folder(tmp_path):
  helpers.write_t5x(tmp_path, _random_params(SMALL_VOCAB))
  folder = tmp_path / "target.decoder.layers_1.mlp.wo.kernel"
  for file in folder.iterdir():
    file.unlink()
  folder.rmdir()
  with pytest.raises(CheckpointError, match=r"decoder/layers_1/mlp/wo/kernel.*"
                                            r"target\.decoder\.layers_1\.mlp\.wo\.kernel"):
    loading.load_params(tmp_path, SMALL_VOCAB)


def test_wrong_config_names_key_and_shapes(t5x_tiny):
  with pytest.raises(CheckpointError) as error:
    loading.load_params(t5x_tiny, TINY.replace(mlp_dim=16))
  message = str(error.value)
  assert str(t5x_tiny) in message
  assert "shape mismatch: encoder/layers_0/mlp/wi_0/kernel: checkpoint [4, 8], model [4, 16]" \
      in message


def test_not_a_msgpack_checkpoint(tmp_path):
  (tmp_path / "checkpoint").write_bytes(b"\xc1\xc1 garbage")
  with pytest.raises(CheckpointError, match="checkpoint"):
    loading.load_params(tmp_path, TINY)


def test_gcs_paths_become_gcs_kvstore_specs():
  zarr_spec = t5x._zarr_spec  # pylint: disable=protected-access
  recorded = {"driver": "zarr", "kvstore": {"driver": "gfile", "path": "target.x"}}
  assert zarr_spec("gs://bucket/models/checkpoint_100", "x", recorded) == {
      "driver": "zarr",
      "kvstore": {"driver": "gcs", "bucket": "bucket", "path": "models/checkpoint_100/target.x/"}}
  gcs_written = {"driver": "zarr", "kvstore": {"driver": "gcs", "bucket": "t5x-dummy-bucket"},
                 "path": "target.x"}
  assert zarr_spec("/ckpt", "x", gcs_written)["kvstore"] == {"driver": "file",
                                                             "path": "/ckpt/target.x/"}
