r"""Reading a prompt: the nearest vocabulary tokens of each row (Lester et al. 2021, section 7).

A learned prompt P [p, d] lives in the space of the frozen embedding table E [vocab, d]. Each
row is read by its k nearest tokens by cosine similarity in E; the paper finds semantic
clusters there, and the class labels persisting in rows initialised from them.

    ids, sims = nearest_tokens(prompt, embedding, k=5)       # [p, k] ids and cosines, best first
    tokens = token_strings(ids, vocabulary)                   # [p][k] SentencePiece pieces
    found = find_class_labels(ids, label_ids(["animal", "food"], vocabulary))
    rows = inspect_prompt(prompt, embedding, vocabulary, k=5, class_labels=["animal"])
    pairs = compare_prompts({"a.npy": a, "b.npy": b})       # how alike several prompts are
    report = inspect_prompts({"a.npy": a}, embedding, vocabulary, k=5)  # what the command shows

The command reads the table from the gin-configured model's INITIAL_CHECKPOINT_PATH (only
`token_embedder/embedding` is read) and the vocabulary from VOCABULARY_PATH; a decoder-only
model (MODEL_CONFIG a causal_lm DecoderConfig, e.g. models/hf_decoder_prompt.gin) reads its
Hugging Face directory's table and tokenizer the same way (tokens shown as the tokenizer's
pieces, e.g. 'Ġcat' or '▁cat'):

    python -m prompt_tuning.inspect --prompt_file=F.npy [--prompt_file=G.npy ...] \
      --gin_file=models/t5_1_1_mini_prompt.gin [--gin.NAME=VALUE ...] [--k=5] \
      [--class_labels=a,b,c] [--json]

Class labels default to the CLASS_LABELS macro when the gin files bind it (e.g.
data/wordnet_topic.gin). A deep prompt file [layers, p, d_model] (methods/deep.gin) is read at
its layer 0: the deeper layers replace hidden states, which do not live in the embedding
table's space. Everything here is numpy; similarities are computed in float64.
"""

import json
import os
from typing import Any, Mapping, Sequence

import gin
import numpy as np
from absl import flags

from prompt_tuning.checkpoints import prompts_io

EMBEDDING_KEY = "token_embedder/embedding"
# Table rows compared with the prompt at a time, as float64: bounds memory for 250k-id tables.
_CHUNK_ELEMENTS = 1 << 22


# ------------------------------------------------------------------------------------------
# Nearest tokens.


def check_k(k: Any, vocab_size: int) -> int:
  """Returns `k` if it is an int in [1, vocab_size], else a ValueError naming it and the fix."""
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= vocab_size:
    raise ValueError(f"k={k!r} must be an integer from 1 to the vocabulary size {vocab_size} "
                     "(the embedding table's rows); pass e.g. --k=5.")
  return int(k)


def _matrix(value: Any, name: str) -> np.ndarray:
  value = np.asarray(value)
  if (value.ndim != 2 or not value.shape[0]
      or (value.dtype.kind not in "fiu" and value.dtype.name != "bfloat16")):
    raise ValueError(f"The {name} must be a 2-D float array with rows, got shape "
                     f"{value.shape} and dtype {value.dtype}.")
  return value


def _unit_rows(x: np.ndarray) -> np.ndarray:
  """[n, d] -> float64 rows of norm 1; an all-zero row stays zero (similarity 0 to all)."""
  x = x.astype(np.float64)
  norms = np.linalg.norm(x, axis=-1, keepdims=True)
  return x / np.maximum(norms, np.finfo(np.float64).tiny)


def _best(ids: np.ndarray, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """The k best columns of each row: highest similarity first, the lower id on ties."""
  order = np.lexsort((ids, -sims), axis=-1)[:, :k]
  return np.take_along_axis(ids, order, -1), np.take_along_axis(sims, order, -1)


def nearest_tokens(prompt: Any, embedding: Any, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
  """The k tokens of the embedding table nearest to each prompt row, by cosine similarity.

  Args:
    prompt: [p, d] the prompt (any float dtype).
    embedding: [vocab, d] the frozen token embedding table.
    k: neighbours per row, 1 <= k <= vocab.

  Returns:
    (ids [p, k] int64, similarities [p, k] float64), each row best first (ties: lower id).

  Raises:
    ValueError: a non-matrix input, widths that differ, or k out of range.
  """
  prompt, embedding = _matrix(prompt, "prompt"), _matrix(embedding, "embedding table")
  if prompt.shape[1] != embedding.shape[1]:
    raise ValueError(f"The prompt {list(prompt.shape)} has width {prompt.shape[1]} but the "
                     f"embedding table {list(embedding.shape)} has width {embedding.shape[1]}; "
                     "read a prompt with the model it was trained for (same d_model).")
  k = check_k(k, embedding.shape[0])
  unit = _unit_rows(prompt)
  ids = np.zeros((len(prompt), 0), np.int64)
  sims = np.zeros((len(prompt), 0), np.float64)
  chunk = max(1, _CHUNK_ELEMENTS // embedding.shape[1])
  for start in range(0, embedding.shape[0], chunk):
    block = _unit_rows(embedding[start:start + chunk])
    block_ids = np.broadcast_to(np.arange(start, start + len(block)), (len(prompt), len(block)))
    ids, sims = _best(np.concatenate([ids, block_ids], 1),
                      np.concatenate([sims, unit @ block.T], 1), k)
  return ids, sims


# ------------------------------------------------------------------------------------------
# Tokens and class labels.


def get_vocabulary(vocabulary: Any) -> Any:
  """A vocabulary object (with `encode`) as is; a path or None through data.vocabularies
  (a .model file, a Hugging Face directory with spiece.model, None for T5's default)."""
  if vocabulary is not None and not isinstance(vocabulary, (str, os.PathLike)):
    return vocabulary
  from prompt_tuning.data import vocabularies  # seqio (and TensorFlow): only when needed
  return vocabularies.get_vocabulary(vocabulary)


def token_string(vocabulary: Any, token_id: int) -> str:
  """The SentencePiece piece of one id ('▁animal' starts a word), '<extra_id_N>' for a
  sentinel, '<unused_ID>' for a table row beyond the vocabulary (T5 pads 32100 to 32128).
  A decoder's tokenizer.json gives its token ('Ġanimal' in byte-level BPE)."""
  token_id = int(token_id)
  sp = getattr(vocabulary, "tokenizer", None)
  if hasattr(sp, "id_to_token"):  # a Hugging Face `tokenizers` tokenizer (decoder-only)
    token = sp.id_to_token(token_id) if token_id >= 0 else None
    return f"<unused_{token_id}>" if token is None else token
  if sp is None:  # not SentencePiece: its decoded text
    return vocabulary.decode([token_id])
  size, extra = vocabulary.vocab_size, getattr(vocabulary, "extra_ids", 0)
  if size - extra <= token_id < size:  # sentinels count down from the top id
    return f"<extra_id_{size - 1 - token_id}>"
  if 0 <= token_id < min(size, sp.get_piece_size()):
    return sp.id_to_piece(token_id)
  return f"<unused_{token_id}>"


def token_strings(ids: Any, vocabulary: Any) -> list:
  """ids [..., k] -> nested lists of the same shape of token strings (see `token_string`).

  `vocabulary`: a seqio vocabulary, or a path for `get_vocabulary` (e.g. the spiece.model).
  """
  vocab = get_vocabulary(vocabulary)
  ids = np.asarray(ids)
  if ids.ndim == 0:
    return token_string(vocab, int(ids))
  return [token_strings(row, vocab) for row in ids]


def check_labels(labels: Any) -> list[str]:
  """Returns `labels` as a list if it is a list of non-empty strings, else a ValueError."""
  if isinstance(labels, str) or not all(isinstance(l, str) and l.strip() for l in labels):
    raise ValueError(f"class labels {labels!r} must be a list of non-empty strings, e.g. "
                     "--class_labels=negative,positive.")
  return list(labels)


def label_ids(labels: Sequence[str], vocabulary: Any) -> dict[str, list[int]]:
  """{label: its piece ids} (no EOS), e.g. {'animal': [608]} with the mini T5's vocabulary."""
  labels = check_labels(labels)
  vocab = get_vocabulary(vocabulary)
  return {label: [int(i) for i in vocab.encode(label)] for label in labels}


def find_class_labels(neighbor_ids: Any, labels: Mapping[str, Sequence[int]]
                      ) -> list[dict[str, list[int]]]:
  """Which class labels appear among each row's neighbours.

  Args:
    neighbor_ids: [p, k] token ids, e.g. from `nearest_tokens`.
    labels: {label: piece ids}, e.g. from `label_ids`.

  Returns:
    One dict per row, {label: its piece ids that are among the row's neighbours}, holding
    the labels with at least one such piece, in the order of `labels`. A one-piece label is
    found or not; a longer one may be found in part (compare with len(labels[label])).
  """
  found = []
  for row in np.asarray(neighbor_ids):
    near = set(int(i) for i in row)
    hits = {label: [i for i in ids if i in near] for label, ids in labels.items()}
    found.append({label: ids for label, ids in hits.items() if ids})
  return found


# ------------------------------------------------------------------------------------------
# Several prompts.


def prompt_similarity(a: Any, b: Any) -> dict[str, float | None]:
  """How alike two prompts [p_a, d] and [p_b, d] are, as two cosine similarities:

  'matching_rows': the mean over i of cos(a[i], b[i]); None when p_a != p_b.
  'mean_vector': cos(mean_i a[i], mean_i b[i]), for any lengths. Where a table's rows share
    a common direction this one runs high even for unrelated prompts; compare it between
    pairs rather than with 0.
  Both are 1 for a prompt with itself.
  """
  a, b = _matrix(a, "prompt"), _matrix(b, "prompt")
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"Prompts of widths {a.shape[1]} and {b.shape[1]} cannot be compared; "
                     "give prompts of the same model.")
  rows = None
  if a.shape[0] == b.shape[0]:
    rows = float(np.mean(np.sum(_unit_rows(a) * _unit_rows(b), axis=-1)))
  means = _unit_rows(np.stack([a.astype(np.float64).mean(0), b.astype(np.float64).mean(0)]))
  return {"matching_rows": rows, "mean_vector": float(means[0] @ means[1])}


def compare_prompts(prompts: Mapping[str, Any]) -> list[dict[str, Any]]:
  """`prompt_similarity` of every pair of {name: [p, d]} prompts, as
  [{'a': name, 'b': name, 'matching_rows': float | None, 'mean_vector': float}], in order."""
  names = list(prompts)
  return [{"a": x, "b": y, **prompt_similarity(prompts[x], prompts[y])}
          for i, x in enumerate(names) for y in names[i + 1:]]


# ------------------------------------------------------------------------------------------
# One report.


def inspect_prompt(prompt: Any, embedding: Any, vocabulary: Any, k: int = 5,
                   class_labels: Sequence[str] = ()) -> list[dict[str, Any]]:
  """Each row of `prompt` [p, d] read against `embedding` [vocab, d], as JSON-ready dicts:

  {'row': i, 'neighbors': [{'id', 'token', 'similarity'}] (k, best first),
   'class_labels': [{'label', 'found': [pieces among the neighbours], 'num_pieces'}]}.
  """
  vocab = get_vocabulary(vocabulary)
  ids, sims = nearest_tokens(prompt, embedding, k)
  tokens = token_strings(ids, vocab)
  labels = label_ids(class_labels, vocab) if class_labels else {}
  found = find_class_labels(ids, labels)
  return [{"row": i,
           "neighbors": [{"id": int(t), "token": s, "similarity": float(c)}
                         for t, s, c in zip(ids[i], tokens[i], sims[i])],
           "class_labels": [{"label": label, "found": [token_string(vocab, t) for t in hit],
                             "num_pieces": len(labels[label])}
                            for label, hit in found[i].items()]}
          for i in range(len(ids))]


def inspect_prompts(prompts: Mapping[str, Any], embedding: Any, vocabulary: Any, k: int = 5,
                    class_labels: Sequence[str] = ()) -> dict[str, Any]:
  """The command's report of several {name: [p, d]} prompts, JSON-ready:

  {'embedding_shape': [vocab, d], 'k', 'class_labels',
   'prompts': [{'name', 'shape', 'rows': inspect_prompt(...)}],
   'similarity': compare_prompts(...) (empty for one prompt)}; with --json the command
  adds 'checkpoint' and 'vocabulary' (the paths read).
  """
  vocab = get_vocabulary(vocabulary)
  return {"embedding_shape": list(np.shape(embedding)), "k": k,
          "class_labels": list(class_labels),
          "prompts": [{"name": name, "shape": list(np.shape(p)),
                       "rows": inspect_prompt(p, embedding, vocab, k, class_labels)}
                      for name, p in prompts.items()],
          "similarity": compare_prompts(prompts)}


def _labels_cell(hits: Sequence[Mapping[str, Any]]) -> str:
  return ", ".join(h["label"] if len(h["found"]) == h["num_pieces"]
                   else f"{h['label']} ({len(h['found'])}/{h['num_pieces']} pieces)"
                   for h in hits)


def format_report(report: Mapping[str, Any]) -> str:
  """`inspect_prompts`' report as plain-text tables: one per prompt, then the similarities."""
  lines = []
  for prompt in report["prompts"]:
    p, d = prompt["shape"]
    lines.append(f"{prompt['name']}: {p} rows x {d}; the {report['k']} nearest of "
                 f"{report['embedding_shape'][0]} tokens by cosine similarity")
    cells = [" ".join(f"{n['token']} {n['similarity']:.3f}" for n in row["neighbors"])
             for row in prompt["rows"]]
    width = max(len("nearest tokens"), *(len(c) for c in cells))
    lines.append(f"{'row':>4}  {'nearest tokens':<{width}}  class labels")
    for row, cell in zip(prompt["rows"], cells):
      lines.append(f"{row['row']:>4}  {cell:<{width}}  {_labels_cell(row['class_labels'])}"
                   .rstrip())
    lines.append("")
  if report["similarity"]:
    lines.append("prompt similarity (matching rows: mean cosine of row i with row i; mean "
                 "vector: cosine of the row means)")
    for pair in report["similarity"]:
      rows = pair["matching_rows"]
      rows = "n/a (lengths differ)" if rows is None else f"{rows:.3f}"
      lines.append(f"  {pair['a']} ~ {pair['b']}: matching rows {rows}, mean vector "
                   f"{pair['mean_vector']:.3f}")
  return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------------
# Reading the inputs of the command.


def read_prompt_file(path: str, width: int,
                     num_layers: int | None = None) -> tuple[str, np.ndarray]:
  """A .npy prompt (local or gs://) -> (its name in the report, float32 [p, width]); one
  clear error if it is missing, unreadable, not a finite float matrix, or of another width
  than the model's.

  A deep prompt [layers, p, width] (methods/deep.gin; `num_layers`, the encoder's, checked
  when given) is read at layer 0, the only layer that lives in the embedding table's space
  (the deeper ones replace hidden states); its name says so.
  """
  value = prompts_io.read_prompt_file(path, name="--prompt_file")
  if value.dtype.names is None and value.ndim == 3:
    from prompt_tuning.prompts import deep
    layers = value.shape[0] if num_layers is None else num_layers
    prompt = deep.check_file(value, layers, None, width, f"--prompt_file={path}")
    return f"{path} (layer 0 of {layers}: a deep prompt)", prompt[0]
  prompt = prompts_io.check_prompt(value, None, f"file {path!r}")
  if prompt.shape[1] != width:
    raise ValueError(f"--prompt_file={path} has width {prompt.shape[1]} (shape "
                     f"{list(prompt.shape)}) but the model's embedding table has width {width} "
                     "(d_model); give the --gin_file of the model the prompt was trained for.")
  return path, prompt


def model_sizes(config: Any) -> tuple[int, int, int]:
  """(vocabulary rows, d_model, layers a deep prompt has) of a T5Config or a DecoderConfig."""
  if hasattr(config, "emb_dim"):  # T5Config
    return config.vocab_size, config.emb_dim, config.num_encoder_layers
  return config.vocab_size, config.d_model, config.num_layers


def read_embedding(checkpoint_path: str | None, config: Any) -> np.ndarray:
  """The frozen token embedding table [vocab, d] float32 of a checkpoint (T5, or a decoder's
  Hugging Face directory); only it is read, raw (Gemma's sqrt(d_model) is applied by the
  network to every row, prompt rows included, so prompts live in the raw table's space)."""
  if checkpoint_path is None:
    raise ValueError("INITIAL_CHECKPOINT_PATH is None, so there is no frozen embedding table "
                     "to read the prompt against; set --gin.INITIAL_CHECKPOINT_PATH to the "
                     "checkpoint the prompt was trained on.")
  from prompt_tuning.checkpoints import loading  # TensorFlow, orbax: after the input checks
  if hasattr(config, "emb_dim"):
    _, lazy = loading.read_checkpoint(checkpoint_path, config)
  else:
    from prompt_tuning.checkpoints import hf_causal_lm  # pylint: disable=g-import-not-at-top
    _, lazy = hf_causal_lm.read_hf_causal_lm(checkpoint_path, config)
  want = model_sizes(config)[:2]
  table = lazy.get(EMBEDDING_KEY)
  if table is None or tuple(table.shape) != want:
    found = "none" if table is None else list(table.shape)
    raise loading.CheckpointError(
        f"Checkpoint {checkpoint_path!r} has no {EMBEDDING_KEY} of shape {list(want)} "
        f"(found {found}); give the checkpoint of the model the gin files name.")
  return table.read_all()


# ------------------------------------------------------------------------------------------
# The command.


def frozen_model(*, initial_checkpoint_path: str | None, vocabulary_path: str | None,
                 model_config: Any) -> tuple[str | None, str | None, Any]:
  """(INITIAL_CHECKPOINT_PATH, VOCABULARY_PATH, MODEL_CONFIG) as the gin files bind them."""
  return initial_checkpoint_path, vocabulary_path, model_config


# Registered when parsed (dynamic registration), so the module may also run as __main__.
_GIN_BINDINGS = """
from __gin__ import dynamic_registration
from prompt_tuning import inspect
inspect.frozen_model:
  initial_checkpoint_path = %INITIAL_CHECKPOINT_PATH
  vocabulary_path = %VOCABULARY_PATH
  model_config = %MODEL_CONFIG
"""
_MODEL_MACROS = ("INITIAL_CHECKPOINT_PATH", "VOCABULARY_PATH", "MODEL_CONFIG")
# What the command suggests when no --gin_file is given: it needs the model's alone.
EXAMPLE_GIN_FILES = ("--gin_file=models/t5_1_1_mini_prompt.gin (the model the prompt was "
                     "trained on)")
_UNBOUND = object()


def _macro(name: str) -> Any:
  """The value gin binds to macro `name`, unevaluated (references stay references), or
  _UNBOUND when no gin file binds it."""
  try:
    return gin.query_parameter(f"%{name}")
  except ValueError:
    return _UNBOUND


def _is_required(value: Any) -> bool:
  """Whether a macro's value is `%gin.REQUIRED` (a gin file asks the user to set it)."""
  return getattr(value, "scoped_selector", None) == "gin.REQUIRED/gin.constant"


def configured_model() -> tuple[str | None, str | None, Any]:
  """The frozen model of the parsed gin files: (checkpoint path, vocabulary path, T5Config or
  DecoderConfig)."""
  values = {name: _macro(name) for name in _MODEL_MACROS}
  missing = [name for name, value in values.items() if value is _UNBOUND]
  if missing:
    raise ValueError(
        f"No gin file binds {', '.join(missing)}; give the model's gin file, e.g. "
        "--gin_file=models/t5_1_1_mini_prompt.gin.")
  required = [name for name, value in values.items() if _is_required(value)]
  if required:
    raise ValueError(
        f"{', '.join(required)} must be set for this model; pass e.g. "
        f"--gin.{required[0]}=/path/to/checkpoint (the one the prompt was trained on).")
  try:
    gin.parse_config(_GIN_BINDINGS)
    return gin.get_configurable(frozen_model)()
  except Exception as e:  # gin raises many kinds; its message names the macro
    raise ValueError(f"Gin configuration error: {e}".replace("\n", " ")) from None


def configured_class_labels() -> list[str]:
  """CLASS_LABELS when the gin files bind it to a list of strings (e.g. data/*.gin), else []."""
  labels = _macro("CLASS_LABELS")  # a list, %gin.REQUIRED or _UNBOUND
  if isinstance(labels, (list, tuple)) and all(isinstance(l, str) for l in labels):
    return list(labels)
  return []


def define_flags() -> None:
  """The command's flags (beside gin_utils' --gin_file, --gin.NAME=VALUE, ...)."""
  flags.DEFINE_multi_string("prompt_file", [], "A .npy prompt [p, d_model] (a deep prompt "
                            "[layers, p, d_model]: its layer 0); repeatable "
                            "(several are also compared pairwise).")
  flags.DEFINE_integer("k", 5, "Nearest tokens per prompt row.")
  flags.DEFINE_list("class_labels", None, "Class labels to look for among the neighbours "
                    "(default: CLASS_LABELS if the gin files bind it).")
  flags.DEFINE_bool("json", False, "Print the report as JSON instead of tables.")


def inspect_command(prompt_files: Sequence[str], k: int = 5,
                    class_labels: Sequence[str] | None = None, as_json: bool = False) -> str:
  """What the command prints, for the gin files already parsed (gin_utils.parse).

  Checks every input (k, the prompt files, the labels) before the checkpoint is read. Class
  labels None means CLASS_LABELS if the gin files bind it, else none.
  """
  if not prompt_files:
    raise ValueError("No --prompt_file given; pass one or more .npy prompts, e.g. "
                     "--prompt_file=/tmp/run/prompts/step_1000.npy.")
  checkpoint_path, vocabulary_path, config = configured_model()
  vocab_size, width, layers = model_sizes(config)
  k = check_k(k, vocab_size)
  prompts = dict(read_prompt_file(path, width, layers) for path in prompt_files)
  labels = configured_class_labels() if class_labels is None else check_labels(
      [l.strip() for l in class_labels])
  report = inspect_prompts(prompts, read_embedding(checkpoint_path, config),
                           vocabulary_path, k, labels)
  if as_json:
    report = {"checkpoint": checkpoint_path, "vocabulary": vocabulary_path, **report}
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"
  return format_report(report)


def main() -> None:
  options = flags.FLAGS
  print(inspect_command(options.prompt_file, options.k, options.class_labels, options.json),
        end="")


if __name__ == "__main__":
  from prompt_tuning import gin_utils
  from prompt_tuning import inspect as inspect_module  # the copy gin configures, not __main__
  inspect_module.define_flags()
  gin_utils.run(inspect_module.main, example=inspect_module.EXAMPLE_GIN_FILES)
