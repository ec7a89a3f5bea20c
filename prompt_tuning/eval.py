"""The eval job: `python -m prompt_tuning.eval --gin_file=... --gin_file=runs/prompt_eval.gin`.

Metrics of a trained prompt (PROMPT_FILE, or the latest checkpoint in MODEL_DIR) on top of the
frozen model at INITIAL_CHECKPOINT_PATH, for every task of MIXTURE_OR_TASK_NAME that has the
split. Predictions are decoded text, or, with rank classification, the most likely class label.
Every process reads the whole split and feeds its slice of each batch, so the order (and the
output) is the same whatever the number of hosts.
"""

import functools
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np
from absl import logging
from flax import linen as nn

from prompt_tuning import gin_utils, job_utils, optim, partitioning
from prompt_tuning.checkpoints import job as job_ckpt
from prompt_tuning.checkpoints import prompts_io
from prompt_tuning.data import evaluation, features, rank_classification, tasks


def run_batches(fn: Callable, params: Any, examples: Sequence[dict], batch_size: int,
                feature_lengths: dict[str, int], mesh: Any) -> Iterator[np.ndarray]:
  """fn(params, global batch) for each batch of `examples`, as host arrays of real rows only."""
  per_process = batch_size // jax.process_count()
  lo = jax.process_index() * per_process
  for batch, real in features.batch_examples(examples, batch_size, feature_lengths):
    local = {k: v[lo:lo + per_process] for k, v in batch.items()}
    out = fn(params, partitioning.global_batch(local, mesh))
    yield job_utils.to_host(out)[np.asarray(real)]


def decode_texts(model: Any, params: Any, task: Any, examples: Sequence[dict],
                 batch_size: int, feature_lengths: dict[str, int], method: str,
                 mesh: Any) -> list[str]:
  """Generated text for each example, in order."""
  predict = jax.jit(functools.partial(model.predict, method=method,
                                      max_decode_length=feature_lengths["targets"]))
  vocabulary = task.output_features["targets"].vocabulary
  texts = []
  for tokens in run_batches(predict, params, examples, batch_size, feature_lengths,
                             mesh):
    texts.extend(vocabulary.decode(row.tolist()) for row in tokens)
  return texts


def scores(model: Any, params: Any, examples: Sequence[dict], batch_size: int,
           feature_lengths: dict[str, int], mesh: Any) -> np.ndarray:
  """[num_examples] log-likelihood of each example's targets (EOS included), in order."""
  score = _jitted(model.score)
  chunks = list(run_batches(score, params, examples, batch_size, feature_lengths, mesh))
  return np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)


@functools.lru_cache(maxsize=8)
def _jitted(method: Callable) -> Callable:
  """One compiled function per bound method, so periodic evals in a run compile once."""
  return jax.jit(method)


def rank_classify(model: Any, params: Any, task: Any, examples: Sequence[dict],
                  labels: Sequence[str], batch_size: int,
                  feature_lengths: dict[str, int], mesh: Any) -> list[str]:
  """The most likely of `labels` for each example (scored, never generated)."""
  candidates = rank_classification.candidate_batch(labels, task, feature_lengths)
  # Rows need a target to batch; the candidates replace it, so any will do.
  rows = [{"inputs": ex["inputs"], "targets": candidates["decoder_target_tokens"][0]}
          for ex in examples]
  score = _jitted(model.score_candidates)
  table = list(run_batches(lambda p, batch: score(p, batch, candidates), params, rows,
                           batch_size, feature_lengths, mesh))
  table = np.concatenate(table) if table else np.zeros((0, len(labels)), np.float32)
  return rank_classification.choose(table.reshape(-1), labels, num_examples=len(examples))


def evaluate_params(params: Any, mesh: Any, *, model: Any, mixture_or_task_name: str,
                    task_feature_lengths: dict[str, int], batch_size: int,
                    split: str = "validation", use_rank_classification: bool = False,
                    decode_method: str = "greedy",
                    vocabulary_path: str | None = None) -> dict[str, float]:
  """{'task/metric': value} for each task of the mixture with `split`."""
  metrics = {}
  name = tasks.with_vocabulary(mixture_or_task_name, vocabulary_path)
  for task in tasks_with_split(name, split):
    examples = features.get_examples(task.name, split, task_feature_lengths)
    labels = rank_classification.get_class_labels(task) if use_rank_classification else None
    if labels:
      predictions = rank_classify(model, params, task, examples, labels, batch_size,
                                  task_feature_lengths, mesh)
    else:
      predictions = decode_texts(model, params, task, examples, batch_size,
                                 task_feature_lengths, decode_method, mesh)
    for metric, value in evaluation.compute_metrics(task, examples, predictions).items():
      metrics[f"{tasks.base_name(task.name)}/{metric}"] = float(value)
  return metrics


def tasks_with_split(name: str, split: str) -> list[Any]:
  found = tasks.get_mixture_or_task(name)
  leaves = found.tasks if hasattr(found, "tasks") else [found]
  chosen = [t for t in leaves if split in t.splits]
  if not chosen:
    raise ValueError(f"No task of {name!r} has a {split!r} split (splits: "
                     f"{sorted({s for t in leaves for s in t.splits})}); set the split.")
  return chosen


def make_evaluator(**kwargs) -> Callable[[Any, Any], dict[str, float]]:
  """(params, mesh) -> metrics, for the train job's periodic eval (gin binds the kwargs)."""
  return functools.partial(evaluate_params, **kwargs)


def trained_params(model: Any, *, initial_checkpoint_path: str | None, model_dir: str | None,
                   prompt_file: str | None, trainable_regex: str, mesh: Any, rules: Any,
                   random_seed: int = 0) -> tuple[Any, str, int]:
  """(params, where the trained leaves came from, their step; 0 for a PROMPT_FILE).

  Frozen weights plus the trained leaves: PROMPT_FILE if given, else MODEL_DIR's latest.
  """
  params = job_utils.place_params(model, initial_checkpoint_path, mesh, rules,
                                  jax.random.PRNGKey(random_seed))
  trainable, frozen = optim.partition(params, trainable_regex)
  if prompt_file is not None:
    if "prompt" not in params:
      raise ValueError(f"PROMPT_FILE={prompt_file} is given but the model has no prompt; use "
                       "a models/*_prompt.gin file.")
    current = params["prompt"]["prompt"]
    prompt = prompts_io.load_prompt(prompt_file, expected_shape=current.shape)
    params["prompt"] = {"prompt": jax.device_put(prompt, current.sharding)}
    return params, f"PROMPT_FILE={prompt_file}", 0
  if model_dir is None:
    raise ValueError("Neither PROMPT_FILE nor MODEL_DIR is set; give the trained prompt "
                     "(--gin.PROMPT_FILE=...) or the training run (--gin.MODEL_DIR=...).")
  trainable, step = job_ckpt.restore_trainable(model_dir, trainable)
  return optim.merge(trainable, frozen), f"{model_dir} step {step}", step


def evaluate(*, model: Any, initial_checkpoint_path: str | None, mixture_or_task_name: str,
             task_feature_lengths: dict[str, int], batch_size: int, model_dir: str | None = None,
             prompt_file: str | None = None, split: str = "validation",
             use_rank_classification: bool = False, decode_method: str = "greedy",
             vocabulary_path: str | None = None, num_partitions: int = 1,
             trainable_regex: str = optim.PROMPT_REGEX,
             rules: partitioning.Rules = partitioning.DEFAULT_RULES) -> dict[str, float]:
  """Evaluates a trained prompt; logs the metrics and writes them under MODEL_DIR/eval."""
  mesh = partitioning.make_mesh(num_partitions)
  partitioning.check_batch_size(batch_size, mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    params, source, step = trained_params(
        model, initial_checkpoint_path=initial_checkpoint_path, model_dir=model_dir,
        prompt_file=prompt_file, trainable_regex=trainable_regex, mesh=mesh, rules=rules)
    metrics = evaluate_params(
        params, mesh, model=model, mixture_or_task_name=mixture_or_task_name,
        task_feature_lengths=task_feature_lengths, batch_size=batch_size, split=split,
        use_rank_classification=use_rank_classification, decode_method=decode_method,
        vocabulary_path=vocabulary_path)
  logging.info("Metrics of %s on %s/%s: %s", source, mixture_or_task_name, split, metrics)
  if model_dir is not None:
    job_utils.Summaries(model_dir, f"eval_{split}").scalars(step, metrics)
  return metrics


def main() -> None:
  gin_utils.call_configured(evaluate, "runs/prompt_eval.gin")


if __name__ == "__main__":
  from prompt_tuning import eval as eval_module  # the copy gin configures, not __main__
  gin_utils.run(eval_module.main)
