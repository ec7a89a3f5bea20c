"""Lists every registered seqio task and mixture: `python -m prompt_tuning.data.list_tasks`.

For a task: its splits, output features (with vocabulary), metrics and class labels; for a
mixture: its tasks and rates. `--gin_file`/`--gin_bindings` may be given to include tasks that
gin registers (e.g. data/jsonl.gin with --gin.JSONL_TRAIN=...); extra `--module`s are imported
for their registrations.
"""

import functools
import importlib
import os
import sys
from typing import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# pylint: disable=g-import-not-at-top
import gin
import seqio
from absl import app, flags

from prompt_tuning import gin_utils  # defines --gin_file, --gin_bindings, --gin_search_paths
from prompt_tuning.data import registry, tasks
# pylint: enable=g-import-not-at-top

_MODULES = flags.DEFINE_multi_string("module", [], "Python module to import for its tasks.")
FLAGS = flags.FLAGS


def _function_name(fn: Callable[..., object]) -> str:
  if isinstance(fn, functools.partial):
    args = ", ".join(f"{k}={v!r}" for k, v in fn.keywords.items())
    return f"{_function_name(fn.func)}({args})"
  return getattr(fn, "__name__", repr(fn))


def _splits(task: seqio.Task) -> str:
  try:
    return ", ".join(task.splits)
  except Exception as e:  # pylint: disable=broad-except  # e.g. TFDS info not available
    return f"(unknown: {type(e).__name__})"


def _source(task: seqio.Task) -> str:
  tfds_dataset = getattr(task.source, "tfds_dataset", None)
  if tfds_dataset is not None:
    return f"TFDS {tfds_dataset.name}"
  return type(task.source).__name__


def _vocabulary(vocab: seqio.Vocabulary) -> str:
  model = getattr(vocab, "sentencepiece_model_file", None)
  if model is None:
    return type(vocab).__name__
  return f"SentencePiece {model} + {getattr(vocab, 'extra_ids', 0)} extra ids"


def describe_task(task: seqio.Task) -> list[str]:
  """Lines describing `task`: source, splits, features, metrics, class labels."""
  lines = [f"{task.name}  [task, {_source(task)}]", f"  splits:   {_splits(task)}"]
  by_vocab: dict[str, list[str]] = {}
  for key, feature in task.output_features.items():
    by_vocab.setdefault(_vocabulary(feature.vocabulary), []).append(key)
  for vocab, keys in by_vocab.items():
    lines.append(f"  features: {', '.join(keys)} ({vocab}; EOS-terminated)")
  metric_names = [_function_name(fn) for fn in task.metric_fns] or ["(none)"]
  lines.append(f"  metrics:  {', '.join(metric_names)}")
  labels = registry.class_labels(task.name)
  if labels:
    lines.append(f"  labels:   {', '.join(labels)}  (rank classification available)")
  return lines


def describe_mixture(mixture: seqio.Mixture) -> list[str]:
  """Lines describing `mixture`: each task with its share of the examples."""
  rates = {t.name: float(mixture.get_rate(t)) for t in mixture.tasks}
  total = sum(rates.values()) or 1.0
  return [f"{mixture.name}  [mixture]"] + [
      f"  task:     {name} (rate {rate:g}, {100 * rate / total:.1f}%)"
      for name, rate in rates.items()]


def listing() -> str:
  """The listing of every registered task and mixture, sorted by name."""
  lines = []
  for name in tasks.registered_names():
    provider = tasks.get_mixture_or_task(name)
    if isinstance(provider, seqio.Mixture):
      lines += describe_mixture(provider)
    else:
      lines += describe_task(provider)
  return "\n".join(lines)


@gin.configurable(module="prompt_tuning.data.list_tasks")
def configured_task(name: str | None = None) -> str | None:
  """MIXTURE_OR_TASK_NAME as gin evaluates it (calling e.g. @jsonl_task(), which registers)."""
  return name


def _register_from_gin(gin_files: Sequence[str], bindings: Sequence[str],
                       search_paths: Sequence[str]) -> None:
  gin_utils.parse(gin_files, bindings, search_paths)
  gin.parse_config("prompt_tuning.data.list_tasks.configured_task.name = %MIXTURE_OR_TASK_NAME")
  configured_task()


def main(argv: Sequence[str]) -> None:
  del argv
  for module in _MODULES.value:
    importlib.import_module(module)
  if FLAGS.gin_file:
    _register_from_gin(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
  print(listing())


if __name__ == "__main__":
  app.run(main, argv=gin_utils.rewrite_gin_args(sys.argv))
