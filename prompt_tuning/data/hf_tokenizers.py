"""Decoder-only tokenizers: a Hugging Face model directory's tokenizer as a seqio vocabulary.

`decoder_vocabulary(model_dir)` reads `tokenizer.json` (the `tokenizers` library, what
`transformers.AutoTokenizer` loads by default) or, when there is none, `tokenizer.model`
(SentencePiece, through `seqio.SentencePieceVocabulary` without extra ids). Either way the
vocabulary encodes text WITHOUT special tokens; the decoder feature converter
(data/decoder_features.py) adds BOS before the inputs and the task adds EOS after the targets,
using the ids resolved here (docs/decoder_data.md):
  bos_id  the token the tokenizer puts before every sequence, or None when it adds none.
          tokenizer.json: what its post-processor adds (as transformers 5 does);
          tokenizer.model: when tokenizer_config.json's add_bos_token is true (transformers 5
          adds none without it; Llama's and Gemma's files set it).
  eos_id  tokenizer_config.json / special_tokens_map.json `eos_token`, else config.json /
          generation_config.json `eos_token_id` (the first of a list); SentencePiece: else
          the model's own EOS. None anywhere is an error.
  pad_id  the same sources for `pad_token` / `pad_token_id`, else EOS (GPT-2 has no pad
          token; padding is masked out, so its id only has to be a valid one).

Inside tf.data, `tokenizer.json` runs through `tf.numpy_function` (the Rust tokenizer called
from Python): it holds the GIL while it converts, and a dataset holding it cannot be
serialized (tf.data service, saved graphs); it is fine for seqio's on-the-fly tokenization.
"""

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any, Sequence

import numpy as np
import seqio
import tensorflow as tf
from absl import logging

from prompt_tuning.data import errors

TOKENIZER_JSON = "tokenizer.json"
SENTENCEPIECE_MODEL = "tokenizer.model"
TOKENIZER_FILES = (TOKENIZER_JSON, SENTENCEPIECE_MODEL)
# Where the special tokens are named (as text), then where they are given as ids.
TOKEN_FILES = ("tokenizer_config.json", "special_tokens_map.json")
ID_FILES = ("config.json", "generation_config.json")


class TokenizerError(errors.DataError):
  """A tokenizer that cannot be used as it is: one message naming the file and the fix."""


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """The ids the decoder layout adds.

  bos_id: put before every inputs sequence; None when the tokenizer adds no BOS.
  eos_id: appended after the targets (and where decoding stops).
  pad_id: fills the padding (which the batch's mask excludes).
  """
  bos_id: int | None
  eos_id: int
  pad_id: int


class _WithSpecialIds:
  """bos_id, eos_id and pad_id from the class's `special_ids` (SpecialIds)."""

  @property
  def bos_id(self) -> int | None:
    return self.special_ids.bos_id

  @property
  def eos_id(self) -> int:
    return self.special_ids.eos_id

  @property
  def pad_id(self) -> int:
    return self.special_ids.pad_id


class HfTokenizerVocabulary(_WithSpecialIds, seqio.Vocabulary):
  """A `tokenizer.json` as a seqio vocabulary; encodes without special tokens.

  Decoding skips special tokens (BOS, EOS, pad), as `tokenizer.decode(ids,
  skip_special_tokens=True)` does, and stops at the first EOS (seqio's decode).
  """

  def __init__(self, tokenizer_json: str, special_ids: SpecialIds, path: str = ""):
    """tokenizer_json: the file's text; path: where it came from (for messages only)."""
    self._json = tokenizer_json
    self._special_ids = special_ids
    self._path = path
    self._tokenizer = None
    super().__init__(extra_ids=0)

  @property
  def tokenizer(self):
    """The `tokenizers.Tokenizer`, built on first use."""
    if self._tokenizer is None:
      import tokenizers  # pylint: disable=g-import-not-at-top
      self._tokenizer = tokenizers.Tokenizer.from_str(self._json)
    return self._tokenizer

  @property
  def special_ids(self) -> SpecialIds:
    return self._special_ids

  @functools.cached_property
  def unk_id(self) -> int | None:
    model = json.loads(self._json).get("model", {})
    if isinstance(model.get("unk_id"), int):  # Unigram
      return model["unk_id"]
    unk = model.get("unk_token")  # BPE, WordLevel, WordPiece
    return None if unk is None else self.tokenizer.token_to_id(unk)

  @property
  def _base_vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  def _encode(self, s: str) -> Sequence[int]:
    return self.tokenizer.encode(s, add_special_tokens=False).ids

  def _decode(self, ids) -> str:
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

  def _encode_strings(self, strings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bytes [n] -> (all ids [total] int32, ids per string [n] int64)."""
    texts = [s.decode("utf-8") for s in strings.reshape(-1).tolist()]
    encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
    lengths = np.asarray([len(e.ids) for e in encodings], np.int64)
    values = [i for e in encodings for i in e.ids]
    return np.asarray(values, np.int32), lengths

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
    """A string scalar -> ids [n] int32; a string vector -> ragged ids [batch, None]."""
    s = tf.convert_to_tensor(s, tf.string)
    if s.shape.rank not in (0, 1):
      raise ValueError(f"encode_tf takes a string scalar or vector, got shape {s.shape}.")
    values, lengths = tf.numpy_function(self._encode_strings, [tf.reshape(s, [-1])],
                                        [tf.int32, tf.int64], stateful=False)
    values.set_shape([None])
    if s.shape.rank == 0:
      return values
    lengths.set_shape([None])
    return tf.RaggedTensor.from_row_lengths(values, lengths)

  def _decode_rows(self, ids: np.ndarray) -> np.ndarray:
    rows = ids.reshape(-1, ids.shape[-1]) if ids.ndim else ids.reshape(1, 1)
    texts = [self._decode(row).encode("utf-8") for row in rows.tolist()]
    return np.asarray(texts, dtype=object).reshape(ids.shape[:-1])

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """ids [n] -> a string scalar; ids [batch, n] -> strings [batch]."""
    ids = tf.convert_to_tensor(ids)
    texts = tf.numpy_function(self._decode_rows, [ids], tf.string, stateful=False)
    texts.set_shape(ids.shape[:-1])
    return texts

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_tokenizer"] = None  # rebuilt from the JSON text when needed
    return state

  def __eq__(self, other):
    return (isinstance(other, HfTokenizerVocabulary) and self._json == other._json
            and self._special_ids == other._special_ids)

  def __repr__(self) -> str:  # stable across processes: registry.vocabulary_suffix uses it
    digest = hashlib.sha1(self._json.encode("utf-8")).hexdigest()[:12]
    return (f"HfTokenizerVocabulary(file={self._path!r}, sha1={digest}, "
            f"{self._special_ids})")

  __str__ = __repr__


class SentencePieceDecoderVocabulary(_WithSpecialIds, seqio.SentencePieceVocabulary):
  """A decoder's `tokenizer.model`: seqio's SentencePiece vocabulary (no extra ids) whose
  BOS/EOS/pad ids are the model directory's (SpecialIds), not the .model file's."""

  def __init__(self, model_file: str, special_ids: SpecialIds):
    super().__init__(model_file, extra_ids=0)
    self._special_ids = special_ids

  @property
  def special_ids(self) -> SpecialIds:
    return self._special_ids


@dataclasses.dataclass(frozen=True)
class DecoderVocabulary(_WithSpecialIds):
  """What `decoder_vocabulary` returns: the seqio vocabulary and the ids of the layout."""
  vocabulary: HfTokenizerVocabulary | SentencePieceDecoderVocabulary
  tokenizer_file: str

  @property
  def special_ids(self) -> SpecialIds:
    return self.vocabulary.special_ids


def special_ids(vocabulary: seqio.Vocabulary) -> SpecialIds:
  """The layout's ids of any seqio vocabulary: ours carry them; another (e.g. T5's
  SentencePiece) gets no BOS, its own EOS and its own pad id."""
  ids = getattr(vocabulary, "special_ids", None)
  if isinstance(ids, SpecialIds):
    return ids
  if vocabulary.eos_id is None:
    raise TokenizerError(f"Vocabulary {vocabulary} has no EOS id; the decoder layout needs one "
                         "after the targets.")
  return SpecialIds(bos_id=None, eos_id=int(vocabulary.eos_id), pad_id=int(vocabulary.pad_id))


def _join(directory: str, name: str) -> str:
  return directory.rstrip("/") + "/" + name if "://" in directory else os.path.join(directory,
                                                                                     name)


def find_tokenizer_file(model_dir: str) -> str:
  """`model_dir`/tokenizer.json, else `model_dir`/tokenizer.model.

  Raises:
    FileNotFoundError: no such directory; or neither file, naming the directory and both.
  """
  model_dir = os.fspath(model_dir)
  if "://" not in model_dir:
    model_dir = os.path.expanduser(model_dir)
  if not tf.io.gfile.isdir(model_dir):
    raise FileNotFoundError(f"Tokenizer directory {model_dir!r} does not exist (or is not a "
                         "directory); give the Hugging Face model directory.")
  for name in TOKENIZER_FILES:
    path = _join(model_dir, name)
    if tf.io.gfile.exists(path):
      return path
  raise FileNotFoundError(
      f"Model directory {model_dir!r} has no tokenizer: looked for {' and '.join(TOKENIZER_FILES)} "
      "(a decoder-only model's Hugging Face tokenizer); copy the model's tokenizer files "
      "there.")


def is_decoder_directory(path: str) -> bool:
  """A local directory with a decoder tokenizer (tokenizer.json / .model) and no T5
  spiece.model: what `vocabularies.get_vocabulary` hands to `decoder_vocabulary`."""
  path = os.path.expanduser(os.fspath(path))
  if "://" in path or not os.path.isdir(path) or os.path.isfile(os.path.join(path,
                                                                               "spiece.model")):
    return False
  return any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES)


def _read_json(path: str) -> dict[str, Any]:
  if not tf.io.gfile.exists(path):
    return {}
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      value = json.load(f)
  except json.JSONDecodeError as e:
    raise TokenizerError(f"{path} is not valid JSON ({e.msg}, line {e.lineno}); repair or "
                         "remove it.") from None
  if not isinstance(value, dict):
    raise TokenizerError(f"{path} holds a JSON {type(value).__name__}, not an object.")
  return value


def _token_text(value: Any) -> str | None:
  """A special token as tokenizer_config.json writes it: text, or {"content": text}."""
  if isinstance(value, dict):
    value = value.get("content")
  return value if isinstance(value, str) else None


def _config_id(value: Any) -> int | None:
  """An id as config.json writes it: int, a list of ints (several EOS: the first), null."""
  if isinstance(value, list):
    value = value[0] if value else None
  if isinstance(value, bool) or not isinstance(value, int):
    return None
  return value


class _Files:
  """The directory's JSON files, read once."""

  def __init__(self, model_dir: str):
    self.dir = model_dir
    self.json = {name: _read_json(_join(model_dir, name)) for name in TOKEN_FILES + ID_FILES}

  def special_id(self, kind: str, token_to_id) -> tuple[int | None, str]:
    """(id, where it came from) of special token `kind` ("bos", "eos", "pad")."""
    for name in TOKEN_FILES:
      text = _token_text(self.json[name].get(f"{kind}_token"))
      if text is not None:
        token_id = token_to_id(text)
        if token_id is None:
          raise TokenizerError(
              f"{_join(self.dir, name)} names {kind}_token {text!r}, which the tokenizer does "
              "not know; fix the token or the tokenizer file.")
        return token_id, name
    for name in ID_FILES:
      token_id = _config_id(self.json[name].get(f"{kind}_token_id"))
      if token_id is not None:
        return token_id, name
    return None, ""

  def add_bos_token(self) -> bool | None:
    value = self.json["tokenizer_config.json"].get("add_bos_token")
    return value if isinstance(value, bool) else None


def _check_id(token_id: int, kind: str, vocab_size: int, where: str, model_dir: str) -> int:
  if not 0 <= token_id < vocab_size:
    raise TokenizerError(f"{_join(model_dir, where)}: {kind} id {token_id} is outside the "
                         f"tokenizer's {vocab_size} ids.")
  return token_id


def _no_eos(model_dir: str) -> TokenizerError:
  return TokenizerError(
      f"The tokenizer in {model_dir!r} has no EOS token: none of tokenizer_config.json / "
      "special_tokens_map.json (eos_token), config.json / generation_config.json "
      "(eos_token_id) names one; add \"eos_token\" to tokenizer_config.json.")


def _eos_and_pad(files: _Files, token_to_id, vocab_size: int, own_eos: int | None = None,
                 own_pad: int | None = None) -> tuple[int, int]:
  eos_id, where = files.special_id("eos", token_to_id)
  if eos_id is None:
    eos_id, where = own_eos, SENTENCEPIECE_MODEL
  if eos_id is None:
    raise _no_eos(files.dir)
  eos_id = _check_id(eos_id, "EOS", vocab_size, where, files.dir)
  pad_id, where = files.special_id("pad", token_to_id)
  if pad_id is None:
    pad_id, where = own_pad, SENTENCEPIECE_MODEL
  pad_id = eos_id if pad_id is None else _check_id(pad_id, "pad", vocab_size, where, files.dir)
  return eos_id, pad_id


def _added_bos(tokenizer, path: str) -> int | None:
  """The token(s) the post-processor puts before a sequence: one id, or None."""
  encoding = tokenizer.encode("a", add_special_tokens=True)
  prefix = []
  for token_id, special in zip(encoding.ids, encoding.special_tokens_mask):
    if not special:
      break
    prefix.append(token_id)
  if len(prefix) > 1:
    raise TokenizerError(f"{path}: its post-processor puts {len(prefix)} tokens {prefix} before "
                         "each sequence; the decoder layout supports one BOS token or none.")
  return prefix[0] if prefix else None


def _hf_vocabulary(path: str, files: _Files) -> HfTokenizerVocabulary:
  import tokenizers  # pylint: disable=g-import-not-at-top
  with tf.io.gfile.GFile(path, "r") as f:
    text = f.read()
  try:
    tokenizer = tokenizers.Tokenizer.from_str(text)
  except Exception as e:  # pylint: disable=broad-except  # the Rust parser's own exception
    raise TokenizerError(f"{path} is not a Hugging Face tokenizers file ({e}); replace it "
                         "with the model's tokenizer.json.") from None
  size = tokenizer.get_vocab_size(with_added_tokens=True)
  eos_id, pad_id = _eos_and_pad(files, tokenizer.token_to_id, size)
  bos_id = _added_bos(tokenizer, path)
  wanted = files.add_bos_token()
  if wanted is not None and wanted != (bos_id is not None):
    logging.warning("%s: tokenizer_config.json says add_bos_token=%s but the tokenizer's "
                    "post-processor %s; following the post-processor, as transformers does.",
                    files.dir, wanted, "adds one" if bos_id is not None else "adds none")
  vocabulary = HfTokenizerVocabulary(text, SpecialIds(bos_id, eos_id, pad_id), path)
  vocabulary._tokenizer = tokenizer  # pylint: disable=protected-access  # parsed once
  return vocabulary


def _sentencepiece_vocabulary(path: str, files: _Files) -> SentencePieceDecoderVocabulary:
  import sentencepiece  # pylint: disable=g-import-not-at-top
  with tf.io.gfile.GFile(path, "rb") as f:
    proto = f.read()
  model = sentencepiece.SentencePieceProcessor()
  try:
    model.LoadFromSerializedProto(proto)
  except Exception as e:  # pylint: disable=broad-except  # RuntimeError or OSError
    raise TokenizerError(f"{path} is not a SentencePiece model ({e}); replace it with the "
                         "model's tokenizer.model.") from None
  size = model.GetPieceSize()

  def token_to_id(text):
    token_id = model.PieceToId(text)
    return None if token_id == model.unk_id() and text != model.IdToPiece(token_id) else token_id

  def own(token_id):
    return token_id if token_id >= 0 else None

  eos_id, pad_id = _eos_and_pad(files, token_to_id, size, own(model.eos_id()),
                                own(model.pad_id()))
  bos_id = None
  if files.add_bos_token():  # as transformers 5 reads a tokenizer.model: no BOS unless asked
    bos_id, where = files.special_id("bos", token_to_id)
    if bos_id is None:
      bos_id, where = own(model.bos_id()), SENTENCEPIECE_MODEL
    if bos_id is None:
      raise TokenizerError(f"{files.dir}: tokenizer_config.json says add_bos_token=true but no "
                           "BOS token is named, nor has the SentencePiece model one; name "
                           "\"bos_token\" in tokenizer_config.json.")
    bos_id = _check_id(bos_id, "BOS", size, where, files.dir)
  return SentencePieceDecoderVocabulary(path, SpecialIds(bos_id, eos_id, pad_id))


def decoder_vocabulary(model_dir: str) -> DecoderVocabulary:
  """The tokenizer of the decoder-only model in `model_dir` (local or gs://), as a seqio
  vocabulary with its BOS/EOS/pad ids (module docstring). The same unchanged files give the
  same object.

  Raises:
    FileNotFoundError: no tokenizer.json / tokenizer.model in the directory (naming both).
    TokenizerError: an unreadable tokenizer, no EOS token, a special token the tokenizer does
      not know, an id outside the vocabulary.
  """
  path = find_tokenizer_file(model_dir)
  directory = os.path.dirname(path) if "://" not in path else path.rsplit("/", 1)[0]
  signature = []
  for name in (os.path.basename(path), *TOKEN_FILES, *ID_FILES):
    file = _join(directory, name)
    stat = tf.io.gfile.stat(file) if tf.io.gfile.exists(file) else None
    signature.append((name, stat.length if stat else None, stat.mtime_nsec if stat else None))
  return _load(path, tuple(signature))


@functools.lru_cache(maxsize=None)
def _load(path: str, signature: tuple) -> DecoderVocabulary:
  del signature  # part of the cache key only: edited files load afresh
  directory = path.rsplit("/", 1)[0] if "://" in path else os.path.dirname(path)
  files = _Files(directory)
  if path.endswith(TOKENIZER_JSON):
    vocabulary = _hf_vocabulary(path, files)
  else:
    vocabulary = _sentencepiece_vocabulary(path, files)
  return DecoderVocabulary(vocabulary, path)
