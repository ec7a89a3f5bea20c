"""Models pretrained and shipped by this project (see docs/mini_t5.md).

`t5_1_1_mini`: a T5 1.1 (gated GELU, untied logits) of 10.5M parameters, pretrained from
scratch on WordNet 3.0 by span corruption and then LM-adapted, with its own 8,192-id
SentencePiece vocabulary (8,092 pieces + 100 sentinels). Stored as a Hugging Face directory
(config.json, bfloat16 model.safetensors, spiece.model), loaded as float32; remade from nothing
by `python -m prompt_tuning.pretrained.make_mini`.

`t5_1_1_mini_prompts/`: source prompts of the mini T5 for prompt transfer (SPoT), each
trained on a WordNet mixture and named after it (`.deep` for a deep prompt);
`mini_source_prompt_path` gives one, and prompts/mini_source.gin (prompts/mini_deep_source.gin)
starts a new task's prompt (deep prompt) from it (docs/methods.md, "Many tasks").

`llama_mini`: a Llama-architecture decoder of the same size, corpus and vocabulary, pretrained
by next-token prediction (docs/decoder_only.md, "Mini decoder"); made by
`python -m prompt_tuning.pretrained.make_mini_decoder`.
"""

import os

import gin

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
MINI_DIR = os.path.join(PACKAGE_DIR, "t5_1_1_mini")
MINI_VOCABULARY_PATH = os.path.join(MINI_DIR, "spiece.model")
# The same run before LM adaptation, for comparisons: in the repository (a clone or an
# editable install), not in the installed package, which keeps under 30 MB.
MINI_SPAN_CORRUPTION_DIR = os.path.join(PACKAGE_DIR, "t5_1_1_mini_span_corruption")
MINI_DECODER_DIR = os.path.join(PACKAGE_DIR, "llama_mini")
MINI_PROMPTS_DIR = os.path.join(PACKAGE_DIR, "t5_1_1_mini_prompts")


def _require(path: str) -> str:
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"The mini T5 file {path!r} is missing: the package was installed without it (the "
        "span-corruption-only model is in the repository, not the package). Install from a "
        "clone with `pip install -e .`, or remake both models with "
        "`python -m prompt_tuning.pretrained.make_mini`.")
  return path


@gin.configurable(module="prompt_tuning.pretrained")
def mini_checkpoint_path() -> str:
  """The shipped LM-adapted mini T5 (a Hugging Face directory), for INITIAL_CHECKPOINT_PATH."""
  return _require(MINI_DIR)


@gin.configurable(module="prompt_tuning.pretrained")
def mini_span_corruption_path() -> str:
  """The mini T5 before LM adaptation (span corruption only), a Hugging Face directory."""
  return _require(MINI_SPAN_CORRUPTION_DIR)


@gin.configurable(module="prompt_tuning.pretrained")
def mini_vocabulary_path() -> str:
  """The mini T5's SentencePiece model, for VOCABULARY_PATH."""
  return _require(MINI_VOCABULARY_PATH)


@gin.configurable(module="prompt_tuning.pretrained")
def mini_source_prompt_path(mixture: str = "wordnet_topic_pos", method: str = "plain",
                            length: int = 20) -> str:
  """The mini T5's shipped source prompt trained on WordNet `mixture`, for PROMPT_FILE: the
  plain prompt [20, d_model] (prompts/mini_source.gin), or with method='deep' the deep
  prompt [encoder layers, length, d_model] of methods/deep.gin, 20 or 100 rows
  (prompts/mini_deep_source.gin, which passes PROMPT_LENGTH)."""
  suffixes = {"plain": "", "deep": ".deep"}
  if method not in suffixes:
    raise ValueError(f"No shipped source prompt of method {method!r}; use one of "
                     f"{sorted(suffixes)}.")
  name = f"{mixture}{suffixes[method]}{'' if length == 20 else length}"
  path = os.path.join(MINI_PROMPTS_DIR, f"{name}.npy")
  if not os.path.isfile(path):
    shipped = sorted(n[:-len(".npy")] for n in os.listdir(MINI_PROMPTS_DIR) if n.endswith(".npy"))
    raise FileNotFoundError(f"No shipped {method} source prompt of {length} rows for mixture "
                            f"{mixture!r}; the mini T5 has {shipped} (a name's number is its "
                            "rows, 20 without one).")
  return path


@gin.configurable(module="prompt_tuning.pretrained")
def mini_decoder_path() -> str:
  """The mini decoder (a Hugging Face Llama directory with its tokenizer.model), for
  INITIAL_CHECKPOINT_PATH (runs/cpu_demo_decoder.gin, models/llama_mini.gin)."""
  if not os.path.isfile(os.path.join(MINI_DECODER_DIR, "model.safetensors")):
    raise FileNotFoundError(
        f"The mini decoder {MINI_DECODER_DIR!r} does not exist yet: make it with "
        "`python -m prompt_tuning.pretrained.make_mini_decoder` (about 1.5 hours on 2 CPU "
        "cores), or give another decoder directory with --gin.INITIAL_CHECKPOINT_PATH.")
  return MINI_DECODER_DIR
