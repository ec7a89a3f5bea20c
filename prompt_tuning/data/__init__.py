"""The data side: vocabularies, seqio tasks, preprocessors, postprocessors, metrics.

  vocabularies         T5 / mT5 / file / Hugging Face SentencePiece vocabularies
  tasks                registered task and mixture lookup (importing it registers the built-ins)
  glue, super_glue     the benchmark tasks; demo: the embedded demo task; jsonl: user files
  features             model-ready batches (no packing), eval examples, padded eval batches
  evaluation           metrics of text predictions; rank_classification: score each label
  list_tasks           `python -m prompt_tuning.data.list_tasks`

Independent of the model: nothing here imports JAX. See docs/data.md.
"""

import tensorflow as _tf

# TF only feeds the input pipeline: keep it off GPUs so JAX owns their memory.
_tf.config.set_visible_devices([], "GPU")
