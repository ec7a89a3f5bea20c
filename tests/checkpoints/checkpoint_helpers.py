"""Helpers for the checkpoint tests: fixture paths, tiny Hugging Face T5s, a T5X-style writer.

The pytest fixtures live here, not in a conftest.py, because tests/conftest.py is imported by
name (`from conftest import ...`) and a second conftest module would shadow it. Test modules
import the fixtures they use.
"""

import json
from pathlib import Path

import msgpack
import numpy as np
import pytest
from flax import serialization

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
T5X_TINY = FIXTURES / "t5x_t5_1_1_tiny_checkpoint_3"

# Inputs with padding: encoder rows end in 0 pads; decoder rows start with 0 (the start token).
ENCODER_TOKENS = np.array([[5, 6, 7, 8, 1, 0, 0], [9, 10, 1, 0, 0, 0, 0],
                           [11, 12, 13, 14, 15, 16, 1]])
DECODER_TOKENS = np.array([[0, 3, 4, 2, 1], [0, 5, 1, 0, 0], [0, 7, 8, 9, 10]])


def hf_model(kind: str, vocab: int):
  """A random tiny T5ForConditionalGeneration: 'relu' (T5 1.0, tied, scaled logits),
  'gated' (T5 1.1 with its own lm_head) or 'gated_tied' (transformers>=5's T5 1.1: lm_head
  is the embedding, unscaled)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  proj = "relu" if kind == "relu" else "gated-gelu"
  config = transformers.T5Config(
      vocab_size=vocab, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
      num_decoder_layers=2, relative_attention_num_buckets=8,
      relative_attention_max_distance=16, feed_forward_proj=proj, dropout_rate=0.0,
      tie_word_embeddings=kind == "relu", decoder_start_token_id=0)
  torch.manual_seed({"relu": 0, "gated": 1, "gated_tied": 2}[kind])
  model = transformers.T5ForConditionalGeneration(config)
  with torch.no_grad():  # layer norms init to 1; randomise them so a mix-up would show
    for name, param in model.named_parameters():
      if "layer_norm" in name:
        param.uniform_(0.5, 1.5)
  if kind == "gated":
    model.lm_head.weight = torch.nn.Parameter(torch.randn(vocab, 32))
  return model.eval()


@pytest.fixture
def t5x_tiny():
  """The real T5X checkpoint (read in place); skips where ../shared/fixtures is absent."""
  if not T5X_TINY.is_dir():
    pytest.skip(f"fixture folder {T5X_TINY} is absent")
  return T5X_TINY


_HF_MODELS: dict = {}  # built once per session, whichever test module asks first


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory):
  """{name: (directory, torch model)} saved with save_pretrained (safetensors)."""
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  if not _HF_MODELS:
    for name, kind, vocab, shard in [("relu", "relu", 100, None), ("gated", "gated", 100, None),
                                     ("gated_tied", "gated_tied", 100, None),
                                     ("sharded", "gated", 128, "40KB")]:
      directory = tmp_path_factory.mktemp(f"hf_{name}")
      model = hf_model(kind, vocab)
      model.save_pretrained(directory, **({"max_shard_size": shard} if shard else {}))
      _HF_MODELS[name] = (directory, model)
  return _HF_MODELS


def hf_logits(model, encoder_tokens=ENCODER_TOKENS, decoder_tokens=DECODER_TOKENS):
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    out = model(input_ids=torch.tensor(encoder_tokens),
                attention_mask=torch.tensor(encoder_tokens != 0),
                decoder_input_ids=torch.tensor(decoder_tokens))
  return out.logits.numpy()


def write_t5x(directory: Path, params: dict, *, layout: str = "optimizer", version: int = 3,
              gcs_written: bool = False, zarr_dtype=None, optimizer_state=None) -> None:
  """Writes `params` the way T5X does: arrays of rank >= 2 as zarr folders named by dotted
  path (spec recording the 'gfile' kvstore, or the gs:// form when `gcs_written`), the rest
  inline in the msgpack file `checkpoint`."""
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  directory.mkdir(parents=True, exist_ok=True)

  def convert(tree, prefix):
    out = {}
    for key, value in tree.items():
      name = f"{prefix}.{key}"
      if isinstance(value, dict):
        out[key] = convert(value, name)
      elif np.ndim(value) < 2:
        out[key] = np.asarray(value)
      else:
        array = np.asarray(value) if zarr_dtype is None else np.asarray(value).astype(zarr_dtype)
        if version < 3 and array.dtype.name == "bfloat16":
          array = array.view(np.uint16)
        metadata = {"chunks": list(array.shape), "compressor": {"id": "gzip", "level": 1},
                    "dtype": array.dtype.str if array.dtype.name != "bfloat16" else "bfloat16",
                    "shape": list(array.shape)}
        store = ts.open({"driver": "zarr", "kvstore": {"driver": "file",
                                                        "path": str(directory / name)},
                         "metadata": metadata}, create=True).result()
        store.write(array).result()
        if gcs_written:  # what T5X records when it writes to gs://
          out[key] = {"driver": "zarr", "kvstore": {"bucket": "t5x-dummy-bucket",
                                                    "driver": "gcs"},
                      "path": name, "metadata": metadata}
        else:
          out[key] = {"driver": "zarr", "kvstore": {"driver": "gfile", "path": name},
                      "metadata": metadata}
    return out

  target = convert(params, "target")
  state = {"step": np.int32(3), "param_states": optimizer_state or {}}
  if layout == "optimizer":
    tree = {"version": version, "optimizer": {"target": target, "state": state}}
  else:
    tree = {"version": version, "target": target, "state": state}
  data = serialization.msgpack_serialize(tree)
  (directory / "checkpoint").write_bytes(data)


def garbage_ext():
  """A msgpack ndarray extension value that cannot be decoded."""
  return msgpack.ExtType(1, b"\xc1 not an array")


def read_json(path: Path):
  return json.loads(Path(path).read_text())
