"""The `demo_sentiment` task: a tiny embedded sentiment dataset for the one-command CPU demo.

300 synthetic review sentences labelled "positive" / "negative" (200 train, 50 validation,
50 test) and their own 512-piece SentencePiece vocabulary, shipped in assets/ (rebuilt by
assets/make_demo.py). Registered on import; gin_configs/data/demo.gin selects it.
"""

import os

import gin

from prompt_tuning.data import jsonl, vocabularies

TASK_NAME = "demo_sentiment"
CLASS_LABELS = ("positive", "negative")
ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
VOCABULARY_PATH = os.path.join(ASSETS_DIR, "demo_sentiment.model")
FILES = {split: os.path.join(ASSETS_DIR, f"demo_{split}.jsonl")
         for split in ("train", "validation", "test")}


@gin.configurable(module="prompt_tuning.data.demo")
def vocabulary_path() -> str:
  """The demo vocabulary's file, wherever the package is installed (for VOCABULARY_PATH)."""
  return VOCABULARY_PATH


def register() -> None:
  """Registers `demo_sentiment` (accuracy, macro-F1, rank classification over its labels)."""
  jsonl.register_jsonl_task(TASK_NAME, FILES, vocabulary=vocabularies.get_vocabulary(
      VOCABULARY_PATH), class_labels=CLASS_LABELS)


register()
