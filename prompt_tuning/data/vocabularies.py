"""SentencePiece vocabularies: T5's, mT5's, any .model file, or a Hugging Face checkpoint's.

Every T5 checkpoint family pads its SentencePiece pieces with 100 "extra ids" (sentinels
<extra_id_0> ... <extra_id_99>, placed at the top of the id range), so that is the default.
A local decoder-only model directory (tokenizer.json or tokenizer.model, no spiece.model)
gives its own tokenizer instead (data/hf_tokenizers.py).
"""

import functools
import os

import seqio

from prompt_tuning.data import hf_tokenizers

T5_VOCABULARY_PATH = "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
MT5_VOCABULARY_PATH = "gs://t5-data/vocabs/mc4.250000.100extra/sentencepiece.model"
DEFAULT_EXTRA_IDS = 100
# The SentencePiece file inside a Hugging Face T5 checkpoint directory.
HF_VOCABULARY_FILE = "spiece.model"

_KIND_PATHS = {"t5": T5_VOCABULARY_PATH, "mt5": MT5_VOCABULARY_PATH}


def resolve_vocabulary_path(path: str | None = None, *, kind: str = "t5") -> str:
  """Returns the SentencePiece .model file that `path` (or the default of `kind`) names.

  Args:
    path: None for the default of `kind`; a .model file; or a directory (a Hugging Face
      checkpoint) holding `spiece.model` (for a local decoder-only model directory without
      one: its tokenizer.json or tokenizer.model). Remote paths (with "://") are not checked
      here, since that needs the network; a remote directory must not end in ".model".
    kind: "t5" (English T5 1.0 / 1.1 / LM-adapted) or "mt5".

  Raises:
    ValueError: unknown `kind`.
    FileNotFoundError: a local path that does not exist, or a directory without spiece.model.
  """
  if path is None:
    if kind not in _KIND_PATHS:
      raise ValueError(f"Unknown vocabulary kind {kind!r}; use one of {sorted(_KIND_PATHS)} "
                       "or pass a SentencePiece .model path.")
    return _KIND_PATHS[kind]
  path = os.fspath(path)
  if "://" in path:
    return path if path.endswith(".model") else path.rstrip("/") + "/" + HF_VOCABULARY_FILE
  path = os.path.expanduser(path)
  if os.path.isdir(path):
    candidate = os.path.join(path, HF_VOCABULARY_FILE)
    if not os.path.isfile(candidate):
      if hf_tokenizers.is_decoder_directory(path):
        return hf_tokenizers.find_tokenizer_file(path)
      raise FileNotFoundError(
          f"Vocabulary directory {path!r} has no {HF_VOCABULARY_FILE} (T5), nor "
          f"{' or '.join(hf_tokenizers.TOKENIZER_FILES)} (decoder-only); point VOCABULARY_PATH "
          "at a SentencePiece .model file or a Hugging Face checkpoint directory.")
    return candidate
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"Vocabulary file {path!r} does not exist; set VOCABULARY_PATH to a SentencePiece "
        ".model file, a Hugging Face checkpoint directory, or None for T5's default.")
  return path


def get_vocabulary(path: str | None = None, *, kind: str = "t5",
                   extra_ids: int = DEFAULT_EXTRA_IDS) -> seqio.Vocabulary:
  """Returns the SentencePiece vocabulary at `path` (default: the one of `kind`).

  The file is read lazily on first use; the same (file, extra_ids) gives the same object,
  so tasks built from it compare equal cheaply.

  Args:
    path: None, a .model file, or a Hugging Face checkpoint directory with spiece.model;
      a local decoder-only model directory gives `hf_tokenizers.decoder_vocabulary(path)`'s
      vocabulary (its own BOS/EOS/pad ids; `kind` and `extra_ids` do not apply).
    kind: "t5" or "mt5"; used only when `path` is None.
    extra_ids: sentinel ids appended after the SentencePiece pieces (100 for all T5s).

  Raises:
    FileNotFoundError: naming the missing file. ValueError: unknown kind, negative extra_ids.
  """
  if extra_ids < 0:
    raise ValueError(f"extra_ids must be >= 0, got {extra_ids}.")
  if path is not None and hf_tokenizers.is_decoder_directory(path):
    return hf_tokenizers.decoder_vocabulary(path).vocabulary
  return _load(resolve_vocabulary_path(path, kind=kind), extra_ids)


@functools.lru_cache(maxsize=None)
def _load(model_file: str, extra_ids: int) -> seqio.Vocabulary:
  return seqio.SentencePieceVocabulary(model_file, extra_ids=extra_ids)


def same_vocabulary(a: seqio.Vocabulary, b: seqio.Vocabulary) -> bool:
  """True when `a` and `b` tokenize identically; never raises (unreadable means different).

  Compares file names first so that remote files need no download when they are the same.
  """
  if a is b:
    return True
  if type(a) is not type(b):  # e.g. a decoder's tokenizer.model vs T5's reading of that file
    return False
  file_a = getattr(a, "sentencepiece_model_file", None)
  file_b = getattr(b, "sentencepiece_model_file", None)
  if file_a is None or file_b is None:
    return a == b
  if getattr(a, "extra_ids", None) != getattr(b, "extra_ids", None):
    return False
  if file_a == file_b:
    return True
  try:  # seqio's == also compares file names; the model bytes are what matters
    return a.sp_model == b.sp_model
  except Exception:  # pylint: disable=broad-except  # e.g. a gs:// file without network
    return False
