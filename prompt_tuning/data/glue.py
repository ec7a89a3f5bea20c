"""GLUE tasks (TFDS `glue/*`), text-to-text and taskless; registered on import.

Inputs are "field: text ..." in each dataset's natural field order; targets are the TFDS label
names. MNLI's "validation"/"test" splits are its matched ones; the mismatched ones are the
splits "validation_mismatched"/"test_mismatched".
"""

import functools

import seqio

from prompt_tuning.data import metrics, postprocessors, preprocessors, registry, vocabularies

TFDS_VERSION = "2.0.0"
SPLITS = ("train", "validation", "test")
MNLI_SPLITS = {"train": "train", "validation": "validation_matched",
               "validation_matched": "validation_matched",
               "validation_mismatched": "validation_mismatched", "test": "test_matched",
               "test_matched": "test_matched", "test_mismatched": "test_mismatched"}

# name: (tfds config, [(input field name, tfds feature)], label names, metric fns)
_CLASSIFICATION = {
    "glue_cola": ("cola", [("sentence", "sentence")], ("unacceptable", "acceptable"),
                  [metrics.matthews_corr]),
    "glue_sst2": ("sst2", [("sentence", "sentence")], ("negative", "positive"),
                  [metrics.accuracy]),
    "glue_mrpc": ("mrpc", [("sentence1", "sentence1"), ("sentence2", "sentence2")],
                  ("not_equivalent", "equivalent"), [metrics.f1_and_accuracy]),
    "glue_qqp": ("qqp", [("question1", "question1"), ("question2", "question2")],
                 ("not_duplicate", "duplicate"), [metrics.f1_and_accuracy]),
    "glue_mnli": ("mnli", [("premise", "premise"), ("hypothesis", "hypothesis")],
                  ("entailment", "neutral", "contradiction"), [metrics.accuracy]),
    "glue_qnli": ("qnli", [("question", "question"), ("sentence", "sentence")],
                  ("entailment", "not_entailment"), [metrics.accuracy]),
    "glue_rte": ("rte", [("sentence1", "sentence1"), ("sentence2", "sentence2")],
                 ("entailment", "not_entailment"), [metrics.accuracy]),
    "glue_wnli": ("wnli", [("sentence1", "sentence1"), ("sentence2", "sentence2")],
                  ("not_entailment", "entailment"), [metrics.accuracy]),
}
TASK_NAMES = (*_CLASSIFICATION, "glue_stsb")


def _source(config: str, splits=SPLITS) -> seqio.TfdsDataSource:
  return seqio.TfdsDataSource(f"glue/{config}:{TFDS_VERSION}", splits=splits)


def register(vocabulary: seqio.Vocabulary | None = None) -> None:
  """Registers every GLUE task (default: T5's vocabulary)."""
  vocabulary = vocabulary or vocabularies.get_vocabulary()
  for name, (config, fields, label_names, metric_fns) in _CLASSIFICATION.items():
    splits = MNLI_SPLITS if config == "mnli" else SPLITS
    registry.add_classification_task(name, source=_source(config, splits), fields=fields,
                                     label_names=label_names, metric_fns=metric_fns,
                                     vocabulary=vocabulary)
  registry.add_task(
      "glue_stsb", source=_source("stsb"),
      preprocessors=[functools.partial(
          preprocessors.stsb, fields=[("sentence1", "sentence1"), ("sentence2", "sentence2")])],
      vocabulary=vocabulary, postprocess_fn=postprocessors.to_float,
      metric_fns=[metrics.pearson_and_spearman])


register()
