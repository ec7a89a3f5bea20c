"""Prompt tuning of the shipped mini T5 on the WordNet tasks, against its baselines.

    python -m benchmarks.mini_t5_prompt_tuning

For each task (wordnet_topic, wordnet_pos) and seed, a class-label-initialised prompt is
trained with the paper's optimizer (Adafactor, constant 0.3) on three frozen models of the
same shape: the shipped LM-adapted mini T5, its span-corruption-only checkpoint (same run,
before LM adaptation) and random weights. Once per task: prompt design (a written instruction
before each input, the frozen LM-adapted model, no trained weights) and the majority class
of the training split. Every number is test-split accuracy by rank classification, as mean
and standard deviation over seeds, written into docs/mini_t5.md. Each finished run is kept in
RESULTS (benchmarks/results/mini_t5_prompt_tuning.json, in the repository), so an interrupted
benchmark resumes where it stopped, in this session or a later one.
"""

import argparse
import collections
import json
import os
import pathlib
import statistics
import sys
import time

import jax
import numpy as np

from benchmarks import machine
from prompt_tuning import eval as eval_lib
from prompt_tuning import model as model_lib
from prompt_tuning import optim, partitioning, pretrained, prompts, train
from prompt_tuning.checkpoints import huggingface, loading
from prompt_tuning.data import jsonl, registry, wordnet
from prompt_tuning.t5 import config as t5_config
from prompt_tuning.t5 import network

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "mini_t5.md"
RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "mini_t5_prompt_tuning.json"
# Feature lengths of every WordNet task (each cuts < 1% of examples, gin_configs/data/*.gin).
TASKS = {"wordnet_topic": {"inputs": 48, "targets": 4}, "wordnet_pos": {"inputs": 64, "targets": 4},
         "wordnet_hypernym": {"inputs": 96, "targets": 4},
         "wordnet_senses": {"inputs": 56, "targets": 4},
         "wordnet_hypernym_word": {"inputs": 56, "targets": 12},
         "wordnet_topic_pos": {"inputs": 64, "targets": 4}}  # the mixture: its longest task
# Prompt design: an instruction naming the labels, before each input.
INSTRUCTIONS = {
    "wordnet_topic": "Is this definition about an animal, artifact, food, location, person or "
                     "plant?",
    "wordnet_pos": "Is the missing word (___) a noun, verb, adjective or adverb?",
}
MODELS = ("lm_adapted", "span_corruption", "random")


def _config():
  return t5_config.get_config("t5_1_1_mini")


def random_model(out_dir: str, seed: int) -> str:
  """A Hugging Face directory of random mini-T5 weights (float32), made once per seed."""
  path = os.path.join(out_dir, f"random_{seed}")
  if not os.path.isdir(path):
    params = network.init_params(_config(), jax.random.PRNGKey(1000 + seed))
    huggingface.write_huggingface(jax.tree.map(np.asarray, params), _config(), path,
                                  dtype=np.float32)
  return path


def prompt_tuning_accuracy(task: str, checkpoint: str, seed: int, args, run_dir: str) -> float:
  """Trains a prompt on `task`'s train split over the frozen `checkpoint`; test accuracy."""
  labels = registry.class_labels(task)
  model = model_lib.PromptedT5Model(
      _config(), args.prompt_length,
      prompts.class_labels(labels, pretrained.MINI_VOCABULARY_PATH), dropout_rate=0.1)
  common = dict(model=model, initial_checkpoint_path=checkpoint, mixture_or_task_name=task,
                task_feature_lengths=TASKS[task], batch_size=args.batch_size)
  train.train(**common, model_dir=run_dir, train_steps=args.steps,
              optimizer=optim.adafactor(learning_rate=0.3), checkpoint_period=args.steps,
              random_seed=seed)
  metrics = eval_lib.evaluate(**common, prompt_file=train.prompt_path(run_dir, args.steps),
                              split="test", use_rank_classification=True)
  return metrics[f"{task}/accuracy"]


def test_task(task: str, out_dir: str, limit: int | None = None,
              instruction: str | None = None) -> str:
  """A JSONL task holding `task`'s test split (its first `limit` rows, each input after
  `instruction` when given) and its train split; returns its registered name."""
  files = wordnet.task_files(task)
  name = f"{task}_test{limit or ''}{'_instructed' if instruction else ''}"
  path = os.path.join(out_dir, f"{name}.jsonl")
  with open(files["test"], encoding="utf-8") as src, open(path, "w", encoding="utf-8") as dst:
    for i, line in enumerate(src):
      if limit is not None and i == limit:
        break
      row = json.loads(line)
      inputs = f"{instruction} {row['inputs']}" if instruction else row["inputs"]
      dst.write(json.dumps({"inputs": inputs, "targets": row["targets"]}) + "\n")
  return jsonl.jsonl_task(train=files["train"], test=path,
                          class_labels=registry.class_labels(task),
                          vocabulary_path=pretrained.MINI_VOCABULARY_PATH, name=name)


def prompt_design_accuracy(task: str, out_dir: str, batch_size: int,
                           limit: int | None = None) -> float:
  """The frozen LM-adapted model, no prompt, INSTRUCTIONS[task] before each test input."""
  name = test_task(task, out_dir, limit, INSTRUCTIONS[task])
  model = model_lib.T5Model(_config())
  lengths = {**TASKS[task], "inputs": TASKS[task]["inputs"] + 32}
  mesh = partitioning.make_mesh(1)
  with jax.set_mesh(mesh):
    params = loading.load_params(pretrained.mini_checkpoint_path(), model.config)
    metrics = eval_lib.evaluate_params(params, mesh, model=model, mixture_or_task_name=name,
                                       task_feature_lengths=lengths, batch_size=batch_size,
                                       split="test", use_rank_classification=True)
  return metrics[f"{name}/accuracy"]


def majority_accuracy(task: str) -> float:
  """Accuracy on test of always answering the training split's most frequent label."""
  def labels(split):
    with open(wordnet.task_files(task)[split], encoding="utf-8") as f:
      return [json.loads(line)["targets"] for line in f]
  majority = collections.Counter(labels("train")).most_common(1)[0][0]
  test = labels("test")
  return 100.0 * sum(label == majority for label in test) / len(test)


class Results:
  """{key: {"accuracy", "seconds"}} in a JSON file, saved after every run."""

  def __init__(self, path: str):
    self.path = path
    self.data = json.load(open(path)) if os.path.exists(path) else {}

  def get(self, key, fn):
    if key not in self.data:
      start = time.time()
      accuracy = fn()
      self.data[key] = {"accuracy": accuracy, "seconds": time.time() - start}
      with open(self.path + ".tmp", "w") as f:
        json.dump(self.data, f, indent=1)
      os.replace(self.path + ".tmp", self.path)
      print(f"{key}: {accuracy:.1f} ({self.data[key]['seconds']:.0f} s)", flush=True)
    return self.data[key]["accuracy"]


def _stats(values) -> str:
  if len(values) == 1:
    return f"{values[0]:.1f}"
  return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def run(args) -> str:
  os.makedirs(args.out_dir, exist_ok=True)
  results = Results(args.results)
  checkpoints = {"lm_adapted": pretrained.mini_checkpoint_path(),
                 "span_corruption": args.span_corruption_model}
  rows = []
  for task in args.tasks:
    cells = {}
    for kind in MODELS:
      accs = []
      for seed in args.seeds:
        key = f"{task}/{kind}/seed{seed}/steps{args.steps}/p{args.prompt_length}"
        ckpt = checkpoints.get(kind) or random_model(args.out_dir, seed)
        run_dir = os.path.join(args.out_dir, key.replace("/", "_"))
        accs.append(results.get(key, lambda: prompt_tuning_accuracy(task, ckpt, seed, args,
                                                                    run_dir)))
      cells[kind] = _stats(accs)
    design = results.get(f"{task}/prompt_design",
                         lambda: prompt_design_accuracy(task, args.out_dir, args.batch_size))
    rows.append(f"| {task} | {cells['lm_adapted']} | {cells['span_corruption']} | "
                f"{cells['random']} | {design:.1f} | {majority_accuracy(task):.1f} |")
  seconds = sum(v["seconds"] for v in results.data.values())
  return "\n".join([
      "| task | prompt tuning, LM-adapted (shipped) | prompt tuning, span corruption only "
      "| prompt tuning, random frozen model | prompt design | majority class |",
      "|---|---|---|---|---|---|", *rows, "",
      f"Test-split accuracy (%), rank classification; prompt tuning: mean ± standard deviation "
      f"over seeds {list(args.seeds)}, {args.steps} steps of batch {args.batch_size}, "
      f"{args.prompt_length}-row class-label prompt, Adafactor 0.3, dropout 0.1. "
      f"{machine.describe()}; {seconds / 60:.0f} min of runs in all."])


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--span_corruption_model", default=pretrained.MINI_SPAN_CORRUPTION_DIR,
                      help="the span-corruption-only checkpoint of the same run")
  parser.add_argument("--out_dir", default="/tmp/mini_t5_prompt_tuning",
                      help="the runs' model dirs and the random models")
  parser.add_argument("--results", default=str(RESULTS), help="finished runs (resumable)")
  parser.add_argument("--tasks", nargs="+", default=list(INSTRUCTIONS),
                      choices=list(INSTRUCTIONS))  # the tasks with a prompt-design instruction
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--prompt_length", type=int, default=20)
  parser.add_argument("--no_docs", action="store_true", help="print, do not write docs")
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  table = run(args)
  print(table)
  if not args.no_docs:
    machine.write_docs_block("prompt_tuning_results", table, DOC)


if __name__ == "__main__":
  sys.exit(main())
