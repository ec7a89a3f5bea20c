"""Registering seqio tasks (text-to-text, SentencePiece) and the class labels of each task.

seqio has no notion of a task's label set, which rank classification needs, so it is kept
here beside seqio's own registry, keyed by task name.
"""

import functools
import hashlib
from typing import Callable, Mapping, Sequence

import seqio

from prompt_tuning.data import postprocessors, preprocessors, vocabularies

_CLASS_LABELS: dict[str, tuple[str, ...]] = {}


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  """`inputs` and `targets`, both tokenized with `vocabulary` and ending in EOS."""
  return {"inputs": seqio.Feature(vocabulary, add_eos=True),
          "targets": seqio.Feature(vocabulary, add_eos=True)}


def add_task(name: str, *, source: seqio.DataSource,
             preprocessors: Sequence[Callable[..., object]],
             vocabulary: seqio.Vocabulary,
             postprocess_fn: Callable[..., object],
             metric_fns: Sequence[Callable[..., Mapping[str, float]]],
             class_labels: Sequence[str] | None = None,
             shuffle_buffer_size: int = seqio.SHUFFLE_BUFFER_SIZE) -> seqio.Task:
  """Registers (or re-registers) a text-to-text task: formatting, then tokenize + EOS.

  `preprocessors` must produce string features `inputs` and `targets`; EOS is appended
  after seqio's trimming so a cut sequence still ends in EOS. `class_labels` are the
  target words of a classification task, for rank classification.
  """
  seqio.TaskRegistry.remove(name)
  task = seqio.TaskRegistry.add(
      name, source=source,
      preprocessors=[*preprocessors, seqio.preprocessors.tokenize,
                     seqio.preprocessors.append_eos_after_trim],
      output_features=output_features(vocabulary),
      postprocess_fn=postprocess_fn,
      metric_fns=list(metric_fns),
      shuffle_buffer_size=shuffle_buffer_size)
  set_class_labels(name, class_labels)
  return task


def add_classification_task(name: str, *, source: seqio.DataSource,
                            fields: Sequence[tuple[str, str]], label_names: Sequence[str],
                            metric_fns: Sequence[Callable[..., Mapping[str, float]]],
                            vocabulary: seqio.Vocabulary) -> seqio.Task:
  """Registers a classification task: inputs "field: text ...", label words as targets, the
  label's index (-1 for other text) as what the metrics compare."""
  return add_task(
      name, source=source,
      preprocessors=[functools.partial(preprocessors.classification, fields=fields,
                                       label_names=label_names)],
      vocabulary=vocabulary,
      postprocess_fn=functools.partial(postprocessors.label_index, label_names=label_names),
      metric_fns=metric_fns, class_labels=label_names)


def add_mixture(name: str, tasks_and_rates: Sequence[tuple[str, float]]) -> seqio.Mixture:
  """Registers (or re-registers) a mixture sampling each task with weight `rate`."""
  seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, list(tasks_and_rates))


def set_class_labels(name: str, class_labels: Sequence[str] | None) -> None:
  if class_labels is None:
    _CLASS_LABELS.pop(name, None)
  else:
    _CLASS_LABELS[name] = tuple(class_labels)


def class_labels(name: str) -> tuple[str, ...] | None:
  """The target words of classification task `name`, or None (free text, or unknown)."""
  return _CLASS_LABELS.get(name)


def vocabulary_suffix(vocabulary: seqio.Vocabulary) -> str:
  """A short stable id of a vocabulary, for task names (seqio allows [\\w.:#])."""
  model = getattr(vocabulary, "sentencepiece_model_file", repr(vocabulary))
  key = f"{model}:{getattr(vocabulary, 'extra_ids', '')}"
  return "vocab_" + hashlib.sha1(key.encode()).hexdigest()[:8]


def with_vocabulary(provider: seqio.Task | seqio.Mixture, vocabulary: seqio.Vocabulary) -> str:
  """Name of a registered copy of `provider` whose features use `vocabulary`.

  Returns the provider's own name when its vocabulary already tokenizes the same way (e.g.
  a Hugging Face checkpoint's spiece.model for T5's default); otherwise registers
  "{name}.vocab_{hash}" once (sharing source, preprocessing, postprocessing, metrics,
  class labels). Works for any seqio Task or Mixture, registered here or not.
  """
  if isinstance(provider, seqio.Mixture):
    names = [with_vocabulary(t, vocabulary) for t in provider.tasks]
    if names == [t.name for t in provider.tasks]:
      return provider.name
    name = f"{provider.name}.{vocabulary_suffix(vocabulary)}"
    if name not in seqio.MixtureRegistry.names():
      add_mixture(name, [(n, provider.get_rate(t)) for n, t in zip(names, provider.tasks)])
    return name
  features = provider.output_features
  if all(vocabularies.same_vocabulary(f.vocabulary, vocabulary) for f in features.values()):
    return provider.name
  name = f"{provider.name}.{vocabulary_suffix(vocabulary)}"
  if name not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(
        name, source=provider.source,
        preprocessors=provider.preprocessors,
        output_features={k: seqio.Feature(vocabulary, add_eos=f.add_eos, required=f.required,
                                          dtype=f.dtype, rank=f.rank)
                         for k, f in features.items()},
        postprocess_fn=provider.postprocessor,
        metric_fns=provider.metric_fns,
        shuffle_buffer_size=provider.shuffle_buffer_size)
    set_class_labels(name, class_labels(provider.name))
  return name
