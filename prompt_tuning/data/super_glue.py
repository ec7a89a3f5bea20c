"""SuperGLUE tasks (TFDS `super_glue/*`), text-to-text and taskless; registered on import.

Inputs are "field: text ..." with no dataset prefix; targets are the TFDS label names (ReCoRD:
an answer; simplified WSC: the referent). AX-b is cast as RTE ("premise:", "hypothesis:")
so an RTE prompt can be evaluated on it; AX-b and AX-g have only a "test" split (labelled).
"""

import functools
from typing import Callable, Mapping

import seqio
import tensorflow as tf

from prompt_tuning.data import metrics, postprocessors, preprocessors, registry, vocabularies

TFDS_VERSION = "1.0.2"
SPLITS = ("train", "validation", "test")
BOOL = ("False", "True")
NLI2 = ("entailment", "not_entailment")

# name: (tfds config, [(input field name, tfds feature)], label names, metric fns, splits)
_CLASSIFICATION = {
    "super_glue_boolq": ("boolq", [("question", "question"), ("passage", "passage")], BOOL,
                         [metrics.accuracy], SPLITS),
    "super_glue_cb": ("cb", [("premise", "premise"), ("hypothesis", "hypothesis")],
                      ("entailment", "contradiction", "neutral"),
                      [functools.partial(metrics.macro_f1_and_accuracy, num_classes=3)], SPLITS),
    "super_glue_copa": ("copa", [("premise", "premise"), ("question", "question"),
                                 ("choice1", "choice1"), ("choice2", "choice2")],
                        ("choice1", "choice2"), [metrics.accuracy], SPLITS),
    "super_glue_rte": ("rte", [("premise", "premise"), ("hypothesis", "hypothesis")], NLI2,
                       [metrics.accuracy], SPLITS),
    "super_glue_wic": ("wic", [("sentence1", "sentence1"), ("sentence2", "sentence2"),
                               ("word", "word")], BOOL, [metrics.accuracy], SPLITS),
    "super_glue_axb": ("axb", [("premise", "sentence1"), ("hypothesis", "sentence2")], NLI2,
                       [metrics.matthews_corr, metrics.accuracy], ("test",)),
    "super_glue_axg": ("axg", [("premise", "premise"), ("hypothesis", "hypothesis")], NLI2,
                       [metrics.accuracy], ("test",)),
}
TASK_NAMES = (*_CLASSIFICATION, "super_glue_multirc", "super_glue_record", "super_glue_wsc",
              "super_glue_wsc_simple")

# Official train-set sizes: the rates of the proportional mixture (fixed here, since TFDS
# only knows them once the data is prepared).
TRAIN_SIZES = {"super_glue_boolq": 9427, "super_glue_cb": 250, "super_glue_copa": 400,
               "super_glue_multirc": 27243, "super_glue_record": 100730, "super_glue_rte": 2490,
               "super_glue_wic": 5428, "super_glue_wsc": 554}
PROPORTIONAL_MIXTURE = "super_glue_proportional"
MIXTURE_NAMES = (PROPORTIONAL_MIXTURE,)


class SplitTransformedTfdsSource(seqio.TfdsDataSource):
  """A TFDS source that transforms the raw examples of some splits only.

  seqio preprocessors do not know the split, but ReCoRD trains on one example per answer and
  WSC-simple on positive examples only, while evaluating on every example.
  """

  def __init__(self, tfds_name: str, splits,
               transforms: Mapping[str, Callable[[tf.data.Dataset], tf.data.Dataset]]):
    super().__init__(tfds_name, splits=splits)
    self._transforms = dict(transforms)

  def get_dataset(self, split=None, shuffle=True, seed=None, shard_info=None, **kwargs):
    ds = super().get_dataset(split, shuffle, seed, shard_info, **kwargs)
    transform = self._transforms.get(split or "train")
    return transform(ds) if transform else ds


def _source(config: str, splits=SPLITS, transforms=None) -> seqio.TfdsDataSource:
  name = f"super_glue/{config}:{TFDS_VERSION}"
  if transforms:
    return SplitTransformedTfdsSource(name, splits, transforms)
  return seqio.TfdsDataSource(name, splits=splits)


def register(vocabulary: seqio.Vocabulary | None = None) -> None:
  """Registers every SuperGLUE task and the proportional mixture (default: T5's vocabulary)."""
  vocabulary = vocabulary or vocabularies.get_vocabulary()
  for name, (config, fields, labels, metric_fns, splits) in _CLASSIFICATION.items():
    registry.add_classification_task(name, source=_source(config, splits), fields=fields,
                                     label_names=labels, metric_fns=metric_fns,
                                     vocabulary=vocabulary)
  registry.add_task(
      "super_glue_multirc", source=_source("multirc"),
      preprocessors=[functools.partial(
          preprocessors.classification, label_names=BOOL,
          fields=[("question", "question"), ("answer", "answer"), ("paragraph", "paragraph")])],
      vocabulary=vocabulary, postprocess_fn=postprocessors.multirc,
      metric_fns=[metrics.multirc], class_labels=BOOL)
  registry.add_task(
      "super_glue_record",
      source=_source("record", transforms={"train": preprocessors.one_per_answer}),
      preprocessors=[preprocessors.record], vocabulary=vocabulary,
      postprocess_fn=postprocessors.record, metric_fns=[metrics.record])
  # wsc.fixed: the WSC release with its span indices corrected.
  registry.add_task(
      "super_glue_wsc", source=_source("wsc.fixed"),
      preprocessors=[functools.partial(preprocessors.wsc, label_names=BOOL)],
      vocabulary=vocabulary,
      postprocess_fn=functools.partial(postprocessors.label_index, label_names=BOOL),
      metric_fns=[metrics.accuracy], class_labels=BOOL)
  registry.add_task(
      "super_glue_wsc_simple",
      source=_source("wsc.fixed", transforms={"train": preprocessors.positives_only}),
      preprocessors=[preprocessors.wsc_simple], vocabulary=vocabulary,
      postprocess_fn=postprocessors.wsc_simple, metric_fns=[metrics.accuracy])
  registry.add_mixture(PROPORTIONAL_MIXTURE, list(TRAIN_SIZES.items()))


register()
