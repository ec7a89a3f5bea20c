"""The eval job: `python -m prompt_tuning.eval --gin_file=... --gin_file=runs/prompt_eval.gin`.

Metrics of a trained prompt (PROMPT_FILE, or the latest checkpoint in MODEL_DIR) on top of the
frozen model at INITIAL_CHECKPOINT_PATH, for every task of MIXTURE_OR_TASK_NAME that has the
split. Predictions are decoded text, or, with rank classification, the most likely class label.
Every process reads the whole split and feeds its slice of each batch, so the order (and the
output) is the same whatever the number of hosts.
"""

import functools
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np
from absl import logging
from flax import linen as nn

from prompt_tuning import ensembles, gin_utils, job_io, job_utils, optim, partitioning
from prompt_tuning.checkpoints import job as job_ckpt
from prompt_tuning.checkpoints import prompts_io
from prompt_tuning.data import evaluation, preprocessors, rank_classification, tasks


def run_batches(fn: Callable, params: Any, batches: Iterator[tuple[dict, np.ndarray]],
                batch_size: int, mesh: Any) -> Iterator[np.ndarray]:
  """fn(params, global batch) for each (batch, real rows) of `batches` (job_io's, every batch
  full), as host arrays of real rows only."""
  per_process = batch_size // jax.process_count()
  lo = jax.process_index() * per_process
  for batch, real in batches:
    local = {k: v[lo:lo + per_process] for k, v in batch.items()}
    out = fn(params, partitioning.global_batch(local, mesh))
    yield job_utils.to_host(out)[np.asarray(real)]


def decode_tokens(model: Any, params: Any, examples: Sequence[dict], batch_size: int,
                  feature_lengths: dict[str, int], method: str, mesh: Any) -> np.ndarray:
  """[num_examples, targets length] decoded token ids (0 after EOS), in order."""
  arch = job_io.for_model(model)
  predict = _jitted_predict(model.predict, method, arch.predict_length_arg,
                            feature_lengths["targets"])
  batches = arch.decode_batches(model, examples, batch_size, feature_lengths)
  chunks = list(run_batches(predict, params, batches, batch_size, mesh))
  return (np.concatenate(chunks) if chunks
          else np.zeros((0, feature_lengths["targets"]), np.int32))


def decode_texts(model: Any, params: Any, task: Any, examples: Sequence[dict],
                 batch_size: int, feature_lengths: dict[str, int], method: str,
                 mesh: Any) -> list[str]:
  """Generated text for each example, in order."""
  tokens = decode_tokens(model, params, examples, batch_size, feature_lengths, method, mesh)
  return _texts(task, tokens)


def _texts(task: Any, tokens: np.ndarray) -> list[str]:
  vocabulary = task.output_features["targets"].vocabulary
  return [vocabulary.decode(row.tolist()) for row in tokens]


def scores(model: Any, params: Any, examples: Sequence[dict], batch_size: int,
           feature_lengths: dict[str, int], mesh: Any) -> np.ndarray:
  """[num_examples] log-likelihood of each example's targets (EOS included), in order."""
  score = _jitted(model.score)
  batches = job_io.for_model(model).score_batches(model, examples, batch_size, feature_lengths)
  chunks = list(run_batches(score, params, batches, batch_size, mesh))
  return np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)


@functools.lru_cache(maxsize=8)
def _jitted(method: Callable) -> Callable:
  """One compiled function per bound method, so periodic evals in a run compile once."""
  return jax.jit(method)


@functools.lru_cache(maxsize=8)
def _jitted_predict(method: Callable, decode_method: str, length_arg: str,
                    max_decode_length: int) -> Callable:
  return jax.jit(functools.partial(method, method=decode_method,
                                   **{length_arg: max_decode_length}))


def label_scores(model: Any, params: Any, task: Any, examples: Sequence[dict],
                 labels: Sequence[str], batch_size: int, feature_lengths: dict[str, int],
                 mesh: Any) -> np.ndarray:
  """[num_examples, num_labels] log-likelihood of each label (EOS included) for each example."""
  arch = job_io.for_model(model)
  candidates = arch.candidates(model, labels, task, feature_lengths)
  batches = arch.rank_batches(model, examples, candidates, batch_size, feature_lengths)
  score = _jitted(model.score_candidates)
  table = list(run_batches(lambda p, batch: score(p, batch, candidates), params, batches,
                           batch_size, mesh))
  return np.concatenate(table) if table else np.zeros((0, len(labels)), np.float32)


def rank_classify(model: Any, params: Any, task: Any, examples: Sequence[dict],
                  labels: Sequence[str], batch_size: int,
                  feature_lengths: dict[str, int], mesh: Any) -> list[str]:
  """The most likely of `labels` for each example (scored, never generated)."""
  table = label_scores(model, params, task, examples, labels, batch_size, feature_lengths, mesh)
  return rank_classification.choose(table.reshape(-1), labels, num_examples=len(examples))


# ---- several tasks, prompts or ensemble members in one pass ----------------------------------


def run_groups(model: Any, params: Any, groups: Sequence[tuple[Any, Sequence[dict]]],
               mode: str, batch_size: int, feature_lengths: dict[str, int], mesh: Any,
               decode_method: str = "greedy") -> list[Any]:
  """Each group's outputs from one pass over all groups' rows, batches mixing groups.

  Args:
    groups: [(task, rows)]; rows may carry `prompt_id`, a row of the params' prompt table.
    mode: 'predict' (decoded text per row), 'score' (log-likelihood of the targets per row)
      or 'rank' (a [rows, labels] table of the log-likelihood of each of the task's labels).
  """
  rows = [row for _, group_rows in groups for row in group_rows]
  splits = np.cumsum([len(group_rows) for _, group_rows in groups])[:-1]
  if mode == "score":
    flat = scores(model, params, rows, batch_size, feature_lengths, mesh)
    return [part.tolist() for part in np.split(flat, splits)]
  if mode == "predict":
    tokens = decode_tokens(model, params, rows, batch_size, feature_lengths, decode_method, mesh)
    return [_texts(task, part) for (task, _), part in zip(groups, np.split(tokens, splits))]
  labels = [rank_classification.get_class_labels(task) for task, _ in groups]
  union = list(dict.fromkeys(label for task_labels in labels for label in task_labels))
  table = label_scores(model, params, groups[0][0], rows, union, batch_size, feature_lengths,
                       mesh)
  return [part[:, [union.index(label) for label in task_labels]]
          for task_labels, part in zip(labels, np.split(table, splits))]


def with_prompts(task: Any, examples: Sequence[dict], prompt_names: Sequence[str] | None,
                 members: int = 1) -> list[dict]:
  """The rows to run for `examples`, each with its `prompt_id` (a row of the prompt table).

  prompt_names (PROMPTS' keys, in table order): an example runs under the prompt its
  `prompt` field names (a JSONL line's "prompt"), else under its task's name.
  members > 1 (an ensemble): each example becomes `members` rows in a row, prompt_id 0..n-1.
  """
  if members > 1:
    return [{**ex, "prompt_id": m} for ex in examples for m in range(members)]
  if prompt_names is None:
    return list(examples)
  index = {name: i for i, name in enumerate(prompt_names)}
  rows = []
  for number, ex in enumerate(examples, start=1):
    name = ex.get("prompt") or tasks.base_name(task.name)
    if name not in index:
      raise ValueError(
          f"Example {number} of {tasks.base_name(task.name)} ({_quote(ex)}) runs under prompt "
          f"{name!r}, which is not in PROMPTS {sorted(index)}; add it to PROMPTS or fix the "
          "example's \"prompt\" field.")
    rows.append({**ex, "prompt_id": index[name]})
  return rows


def task_prompt_names(model: Any, chosen: Sequence[Any]) -> list[str] | None:
  """A multi-task model's task names (prompts/mpt.py), the prompt_ids of `with_prompts`,
  once the `chosen` tasks are checked to have a prompt each; None for other models."""
  method = getattr(model, "method", None)
  if not getattr(method, "routes_by_task", False):
    return None
  names = [tasks.base_name(t.name) for t in chosen]
  method.check_serving_tasks(names, f"The tasks {names}")
  return list(method.task_names)


def _quote(example: dict) -> str:
  text = example.get("inputs_pretokenized", "")
  text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
  return f"inputs {text[:40]!r}" + ("..." if len(text) > 40 else "")


def predictions(model: Any, params: Any, groups: Sequence[tuple[Any, Sequence[dict]]], *,
                use_rank_classification: bool, batch_size: int,
                feature_lengths: dict[str, int], mesh: Any, decode_method: str = "greedy",
                members: int = 1) -> list[tuple[list[str], list[list[str]]]]:
  """For each (task, rows) group: (predictions, each member's predictions).

  Ranked groups (rank classification on, class labels known) and decoded ones each run as one
  pass. With members > 1 the rows are example-major (`with_prompts`), and the predictions
  are the ensemble's vote; otherwise the members' list holds the predictions alone.
  """
  ranked = [use_rank_classification and bool(rank_classification.get_class_labels(task))
            for task, _ in groups]
  out: list[Any] = [None] * len(groups)
  for rank in (True, False):
    chosen = [i for i, r in enumerate(ranked) if r == rank]
    if not chosen:
      continue
    results = run_groups(model, params, [groups[i] for i in chosen],
                         "rank" if rank else "predict", batch_size, feature_lengths, mesh,
                         decode_method)
    for i, result in zip(chosen, results):
      out[i] = _vote(groups[i][0], result, rank, members)
  return out


def _vote(task: Any, result: Any, rank: bool, members: int) -> tuple[list[str], list[list[str]]]:
  if rank:
    labels = rank_classification.get_class_labels(task)
    tables = np.asarray(result).reshape(-1, members, len(labels)).transpose(1, 0, 2)
    each = [rank_classification.choose(t.reshape(-1), labels, num_examples=len(t))
            for t in tables]
    return (ensembles.vote_labels(tables, labels) if members > 1 else each[0]), each
  each = [list(result[m::members]) for m in range(members)]
  return (ensembles.vote_texts(each) if members > 1 else each[0]), each


def evaluate_params(params: Any, mesh: Any, *, model: Any, mixture_or_task_name: str,
                    task_feature_lengths: dict[str, int], batch_size: int,
                    split: str = "validation", use_rank_classification: bool = False,
                    decode_method: str = "greedy", vocabulary_path: str | None = None,
                    prompt_names: Sequence[str] | None = None,
                    ensemble_size: int = 1,
                    task_examples: Sequence[tuple[Any, list[dict]]] | None = None
                    ) -> dict[str, float]:
  """{'task/metric': value} for each task of the mixture with `split`.

  prompt_names: the params hold a prompt table (PROMPTS); each example runs under its own.
  ensemble_size > 1: the params hold the members' table (PROMPT_ENSEMBLE); 'task/metric' is
  the ensemble's vote and 'task/member_{i}/metric' each member's.
  task_examples: `scorable_examples` of these arguments, if already read.
  """
  if task_examples is None:
    task_examples = scorable_examples(mixture_or_task_name, split, task_feature_lengths,
                                      use_rank_classification=use_rank_classification,
                                      vocabulary_path=vocabulary_path, model=model)
  if prompt_names is None:  # a multi-task (MPT) model runs each example under its task's prompt
    prompt_names = task_prompt_names(model, [task for task, _ in task_examples])
  groups = [(task, examples, with_prompts(task, examples, prompt_names, ensemble_size))
            for task, examples in task_examples]
  results = predictions(model, params, [(task, rows) for task, _, rows in groups],
                        use_rank_classification=use_rank_classification,
                        batch_size=batch_size, feature_lengths=task_feature_lengths, mesh=mesh,
                        decode_method=decode_method, members=ensemble_size)
  metrics = {}
  for (task, examples, _), (chosen, each) in zip(groups, results):
    base = tasks.base_name(task.name)
    for metric, value in evaluation.compute_metrics(task, examples, chosen).items():
      metrics[f"{base}/{metric}"] = float(value)
    for m, member in enumerate(each if ensemble_size > 1 else []):
      for metric, value in evaluation.compute_metrics(task, examples, member).items():
        metrics[f"{base}/member_{m}/{metric}"] = float(value)
  return metrics


def tasks_with_split(name: str, split: str) -> list[Any]:
  found = tasks.get_mixture_or_task(name)
  leaves = found.tasks if hasattr(found, "tasks") else [found]
  chosen = [t for t in leaves if split in t.splits]
  if not chosen:
    raise ValueError(f"No task of {name!r} has a {split!r} split (splits: "
                     f"{sorted({s for t in leaves for s in t.splits})}); set the split.")
  return chosen


def scorable_examples(mixture_or_task_name: str, split: str,
                      task_feature_lengths: dict[str, int], *,
                      use_rank_classification: bool = False,
                      vocabulary_path: str | None = None,
                      model: Any = None) -> list[tuple[Any, list[dict]]]:
  """[(task, its examples of `split`)] for each task of the mixture with that split, read
  (in `model`'s layout, see job_io) and checked before any compute: metrics need every
  example's target, and rank classification needs every task's class labels."""
  chosen = tasks_with_split(tasks.with_vocabulary(mixture_or_task_name, vocabulary_path), split)
  if use_rank_classification:
    check_class_labels(chosen)
  arch = job_io.for_model(model)
  task_examples = []
  for task in chosen:
    arch.check_task(model, task.name)
    examples = arch.get_examples(model, task.name, split, task_feature_lengths)
    _check_targets(task, split, examples)
    task_examples.append((task, examples))
  return task_examples


def check_class_labels(chosen: Sequence[Any]) -> None:
  """USE_RANK_CLASSIFICATION=True scores class labels: refuse tasks that have none, rather
  than decode them instead."""
  unlabelled = [tasks.base_name(t.name) for t in chosen
                if not rank_classification.get_class_labels(t)]
  if unlabelled:
    raise ValueError(f"USE_RANK_CLASSIFICATION=True scores each class label, but "
                     f"{', '.join(map(repr, unlabelled))} has no class labels; set "
                     "CLASS_LABELS (JSONL tasks), or USE_RANK_CLASSIFICATION=False to decode.")


def _has_target(example: dict) -> bool:
  """A JSONL line without "targets" reads as ''; an unlabelled GLUE example as '<unk>'."""
  if "targets_pretokenized" not in example:
    return bool(np.any(np.asarray(example.get("targets", [])) > 1))  # beyond padding and EOS
  return str(example["targets_pretokenized"]).strip() not in ("", preprocessors.UNKNOWN_TARGET)


def _check_targets(task: Any, split: str, examples: Sequence[dict]) -> None:
  """Refuses to score examples without targets (metrics would compare predictions with '')."""
  missing = [number for number, ex in enumerate(examples, start=1) if not _has_target(ex)]
  if not missing:
    return
  where = f"the {split!r} split of {tasks.base_name(task.name)}"
  if len(missing) == len(examples):
    raise ValueError(f"None of the {len(examples)} examples of {where} has a target, so "
                     "there is nothing to score; evaluate a split with targets (e.g. "
                     "EVAL_SPLIT='validation'), or get predictions with the infer job.")
  raise ValueError(f"{len(missing)} of the {len(examples)} examples of {where} have no target "
                   f"(the first is example {missing[0]}), and metrics would count them as "
                   "wrong; give every example a target, or get predictions with the infer job.")


def make_evaluator(**kwargs) -> Callable[[Any, Any], dict[str, float]]:
  """(params, mesh) -> metrics, for the train job's periodic eval (gin binds the kwargs).

  Rank classification without class labels is refused here, before training, where the
  eval split exists (a run without one evaluates nothing).
  """
  if kwargs.get("use_rank_classification"):
    found = tasks.get_mixture_or_task(kwargs["mixture_or_task_name"])
    split = kwargs.get("split", "validation")
    check_class_labels([t for t in getattr(found, "tasks", [found]) if split in t.splits])
  return functools.partial(evaluate_params, **kwargs)


def trained_params(model: Any, *, initial_checkpoint_path: str | None, model_dir: str | None,
                   prompt_file: str | None, trainable_regex: str, mesh: Any, rules: Any,
                   random_seed: int = 0) -> tuple[Any, str, int]:
  """(params of `model.serving_model()`, where the trained leaves came from, their step; 0
  for a PROMPT_FILE).

  Frozen weights plus the trained leaves: PROMPT_FILE if given (checked before the weights
  load), else MODEL_DIR's latest. The prompt is always what a prompt file holds: for a method
  whose files another model serves (a residual prompt's are plain), the checkpoint's leaves
  are exported first, so a run's MODEL_DIR and its exported file score alike.
  """
  serving = model.serving_model() if hasattr(model, "serving_model") else model
  rng = jax.random.PRNGKey(random_seed)
  if prompt_file is not None:
    if not hasattr(serving, "with_prompt_file"):
      raise ValueError(f"PROMPT_FILE={prompt_file} is given but the model has no prompt; use "
                       "a models/*_prompt.gin file.")
    value, source = prompts_io.read_prompt_file(prompt_file), f"file {prompt_file!r}"
    serving.with_prompt_file({}, value, source)  # its kind and shape, before any weights load
    params = job_utils.place_params(serving, initial_checkpoint_path, mesh, rules, rng)
    return serving.with_prompt_file(params, value, source), f"PROMPT_FILE={prompt_file}", 0
  if model_dir is None:
    raise ValueError("Neither PROMPT_FILE nor MODEL_DIR is set; give the trained prompt "
                     "(--gin.PROMPT_FILE=...) or the training run (--gin.MODEL_DIR=...).")
  params = job_utils.place_params(model, initial_checkpoint_path, mesh, rules, rng)
  trainable, frozen = optim.partition(params, trainable_regex)
  trainable, step = job_ckpt.restore_trainable(model_dir, trainable)
  source = f"{model_dir} step {step}"
  if serving is not model:
    value = model.export_prompt(jax.tree.map(job_utils.to_host, trainable))
    return serving.with_prompt_file(frozen, value, f"exported from {source}"), source, step
  return optim.merge(trainable, frozen), source, step


def serving_params(model: Any, *, initial_checkpoint_path: str | None,
                   prompts: Mapping[str, str] | None, prompt_ensemble: Sequence[str] | None,
                   mesh: Any, rules: Any) -> tuple[Any, list[str] | None, int, str]:
  """The frozen model with a prompt table: (params, prompt_names, ensemble size, source).

  prompts: PROMPTS, {name: prompt file}; examples pick theirs by task or "prompt" field.
  prompt_ensemble: PROMPT_ENSEMBLE, [prompt file, ...]; every example runs under each.
  """
  if prompts is not None and prompt_ensemble is not None:
    raise ValueError("Both PROMPTS and PROMPT_ENSEMBLE are set; give one (PROMPTS picks one "
                     "prompt per example, PROMPT_ENSEMBLE runs every example under each).")
  if not hasattr(model, "with_prompt_table"):
    raise ValueError("PROMPTS and PROMPT_ENSEMBLE need a prompted model; use a "
                     "models/*_prompt.gin file.")
  model = model.serving_model()  # the model its prompt files are for (residual: plain)
  if prompts is not None:
    if not isinstance(prompts, Mapping) or not prompts:
      raise ValueError(f"PROMPTS={prompts!r} must be a non-empty mapping {{name: prompt "
                       "file}}, e.g. --gin.PROMPTS=\"{'wordnet_topic': 'a.npy'}\".")
    names, files, members = [str(k) for k in prompts], list(prompts.values()), 1
  else:
    files = ensembles.check_members(prompt_ensemble)
    names, members = None, len(files)
  sources = ([f"PROMPTS[{name!r}]" for name in names] if prompts is not None
             else [f"PROMPT_ENSEMBLE[{i}]" for i in range(members)])
  loaded = [prompts_io.read_prompt_file(f, name=source) for f, source in zip(files, sources)]
  file_names = [f"file {f!r}" for f in files]
  model.with_prompt_table({}, loaded, file_names)  # each file's kind and shape, before weights
  params = job_utils.place_params(model, initial_checkpoint_path, mesh, rules,
                                  jax.random.PRNGKey(0))
  params = model.with_prompt_table(params, loaded, file_names)
  source = f"PROMPTS={dict(prompts)}" if prompts is not None else f"PROMPT_ENSEMBLE={files}"
  return params, names, members, source


def evaluate(*, model: Any, initial_checkpoint_path: str | None, mixture_or_task_name: str,
             task_feature_lengths: dict[str, int], batch_size: int, model_dir: str | None = None,
             prompt_file: str | None = None, split: str = "validation",
             use_rank_classification: bool = False, decode_method: str = "greedy",
             vocabulary_path: str | None = None, num_partitions: int = 1,
             trainable_regex: str = optim.PROMPT_REGEX,
             rules: partitioning.Rules = partitioning.DEFAULT_RULES,
             prompts: Mapping[str, str] | None = None,
             prompt_ensemble: Sequence[str] | None = None) -> dict[str, float]:
  """Evaluates a trained prompt (or PROMPTS, or PROMPT_ENSEMBLE); logs the metrics and
  writes them under MODEL_DIR/eval."""
  if model_dir is not None:  # read, so never created; its metrics are written there
    job_utils.check_output_dir("MODEL_DIR", model_dir, create=False)
  mesh = partitioning.make_mesh(num_partitions)
  partitioning.check_batch_size(batch_size, mesh)
  task_examples = scorable_examples(mixture_or_task_name, split, task_feature_lengths,
                                    use_rank_classification=use_rank_classification,
                                    vocabulary_path=vocabulary_path, model=model)
  names, members = None, 1
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    if prompts is not None or prompt_ensemble is not None:
      if prompt_file is not None:
        raise ValueError("PROMPT_FILE is set together with PROMPTS or PROMPT_ENSEMBLE; give "
                         "the prompts in one of them.")
      params, names, members, source = serving_params(
          model, initial_checkpoint_path=initial_checkpoint_path, prompts=prompts,
          prompt_ensemble=prompt_ensemble, mesh=mesh, rules=rules)
      step = 0
    else:
      params, source, step = trained_params(
          model, initial_checkpoint_path=initial_checkpoint_path, model_dir=model_dir,
          prompt_file=prompt_file, trainable_regex=trainable_regex, mesh=mesh, rules=rules)
    metrics = evaluate_params(  # the params are for the model that reads prompt files
        params, mesh, model=model.serving_model(), mixture_or_task_name=mixture_or_task_name,
        task_feature_lengths=task_feature_lengths, batch_size=batch_size, split=split,
        use_rank_classification=use_rank_classification, decode_method=decode_method,
        vocabulary_path=vocabulary_path, prompt_names=names, ensemble_size=members,
        task_examples=task_examples)
  logging.info("Metrics of %s on %s/%s: %s", source, mixture_or_task_name, split, metrics)
  if model_dir is not None:
    job_utils.Summaries(model_dir, f"eval_{split}").scalars(step, metrics)
  return metrics


def main() -> None:
  gin_utils.call_configured(evaluate, "runs/prompt_eval.gin")


if __name__ == "__main__":
  from prompt_tuning import eval as eval_module  # the copy gin configures, not __main__
  gin_utils.run(eval_module.main)
