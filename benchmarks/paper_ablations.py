"""The ablations of Lester et al. (2021), Figure 3 and Figure 1, rerun on the shipped mini T5.

    python -m benchmarks.paper_ablations

Four experiments on wordnet_topic, each setting over several seeds (default 3):
  length:       prompt length 1, 5, 20, 100, 150, class-label initialisation;
  init:         random uniform, sampled vocabulary, class labels, at the base length (100);
  pretraining:  span corruption only against span corruption + LM adaptation (base length);
  method:       prompt tuning (base length) against model tuning (runs/model_finetune.gin's
                optimizer: Adafactor 1e-3, every weight) and prompt design (one run, no seeds).
Every run is the same budget (--steps of --batch_size, dropout 0.1; prompts use the paper's
Adafactor at 0.3) and is scored by rank classification on the test split. A class-label
prompt shorter than the label count starts from the first `length` labels.

Finished runs are kept in --results (in the repository), so an interrupted command resumes
where it stopped. At the end it writes the tables and the trained prompt's inspection into
docs/paper_reproduction.md and one plot per experiment (docs/paper_*.png).
"""

import argparse
import dataclasses
import os
import pathlib
import shutil
import statistics
import sys

import jax
import numpy as np

from benchmarks import machine
from benchmarks import mini_t5_prompt_tuning as mini
from prompt_tuning import eval as eval_lib
from prompt_tuning import inspect as inspect_lib
from prompt_tuning import model as model_lib
from prompt_tuning import optim, pretrained, prompts, train
from prompt_tuning.checkpoints import prompts_io
from prompt_tuning.data import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "paper_reproduction.md"
RESULTS = ROOT / "benchmarks" / "results" / "paper_ablations.json"
TASK = "wordnet_topic"
EXPERIMENTS = ("length", "init", "pretraining", "method")
INITS = ("random_uniform", "sampled_vocab", "class_labels")
MODEL_TUNING_LR = 1e-3  # runs/model_finetune.gin's LEARNING_RATE


@dataclasses.dataclass(frozen=True)
class Setting:
  """One point of an experiment; `label` is its name in the tables and plots."""
  label: str
  method: str = "prompt_tuning"   # or "model_tuning", "prompt_design"
  model: str = "lm_adapted"       # or "span_corruption"
  length: int = 0                 # prompt rows (prompt tuning only)
  init: str = "class_labels"

  def key(self, args, seed: int | None) -> str:
    """The run's name in the results file: every choice that changes its number."""
    parts = [TASK, self.method, f"eval{args.eval_examples or 'all'}"]
    if self.method != "prompt_design":
      parts += [f"steps{args.steps}", f"batch{args.batch_size}", f"seed{seed}"]
    if self.method == "prompt_tuning":
      parts += [self.model, f"p{self.length}", self.init]
    return "/".join(parts)


def experiments(args) -> dict[str, list[Setting]]:
  base = args.base_length
  tuned = lambda **kw: Setting(**{"length": base, **kw})
  return {
      "length": [Setting(str(p), length=p) for p in args.lengths],
      "init": [tuned(label=i.replace("_", " "), init=i) for i in INITS],
      "pretraining": [tuned(label="span corruption", model="span_corruption"),
                      tuned(label="span corruption + LM adaptation")],
      "method": [tuned(label="prompt tuning"),
                 Setting("model tuning", method="model_tuning"),
                 Setting("prompt design", method="prompt_design")],
  }


def initializer(setting: Setting, labels: list[str]) -> prompts.Initializer:
  if setting.init == "random_uniform":
    return prompts.random_uniform()
  if setting.init == "sampled_vocab":
    return prompts.sampled_vocab()
  return prompts.class_labels(labels[:setting.length], pretrained.MINI_VOCABULARY_PATH)


def checkpoint(setting: Setting, args) -> str:
  return args.span_corruption_model if setting.model == "span_corruption" else args.model


def train_and_score(setting: Setting, seed: int, args, run_dir: str, eval_task: str) -> float:
  """Trains the setting's prompt (or every weight) on TASK; its test-split accuracy."""
  config = mini._config()
  if setting.method == "model_tuning":
    model = model_lib.T5Model(config, dropout_rate=0.1)
    optimizer = optim.adafactor(learning_rate=MODEL_TUNING_LR, weight_decay_rate=0.0)
    trainable_regex, trained = ".*", dict(model_dir=run_dir)
  else:
    model = model_lib.PromptedT5Model(config, setting.length,
                                      initializer(setting, registry.class_labels(TASK)),
                                      dropout_rate=0.1)
    optimizer = optim.adafactor(learning_rate=0.3)
    trainable_regex = optim.PROMPT_REGEX
    trained = dict(prompt_file=train.prompt_path(run_dir, args.steps))
  common = dict(model=model, initial_checkpoint_path=checkpoint(setting, args),
                task_feature_lengths=mini.TASKS[TASK], trainable_regex=trainable_regex)
  train.train(**common, mixture_or_task_name=TASK, batch_size=args.batch_size,
              model_dir=run_dir, train_steps=args.steps, optimizer=optimizer,
              checkpoint_period=args.steps, random_seed=seed)
  metrics = eval_lib.evaluate(**common, **trained, mixture_or_task_name=eval_task,
                              batch_size=args.eval_batch_size, split="test",
                              use_rank_classification=True)
  return metrics[f"{eval_task}/accuracy"]


def run_all(args) -> dict[str, dict[str, list[float]]]:
  """{experiment: {label: [accuracy per seed]}}, running what the results file lacks.

  Seeds are the outer loop, so an interrupted command has every setting at the first seeds.
  """
  os.makedirs(args.out_dir, exist_ok=True)
  results = mini.Results(args.results)
  eval_task = mini.test_task(TASK, args.out_dir, args.eval_examples)
  chosen = {name: experiments(args)[name] for name in args.experiments}
  table = {name: {s.label: [] for s in settings} for name, settings in chosen.items()}
  for seed in args.seeds:
    for name, settings in chosen.items():
      for setting in settings:
        if setting.method == "prompt_design":
          if seed == args.seeds[0]:
            table[name][setting.label].append(results.get(
                setting.key(args, None),
                lambda: mini.prompt_design_accuracy(TASK, args.out_dir, args.eval_batch_size,
                                                    args.eval_examples)))
          continue
        key = setting.key(args, seed)
        run_dir = os.path.join(args.out_dir, key.replace("/", "_"))
        table[name][setting.label].append(results.get(
            key, lambda: train_and_score(setting, seed, args, run_dir, eval_task)))
  return table


# ------------------------------------------------------------------------------------------
# Tables, plots and the inspected prompt.

TITLES = {"length": "Prompt length", "init": "Prompt initialization",
          "pretraining": "Pre-training method", "method": "Prompt tuning vs. model tuning"}


def _cell(values: list[float]) -> str:
  if len(values) == 1:
    return f"{values[0]:.1f}"
  return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def markdown_table(name: str, cells: dict[str, list[float]]) -> str:
  rows = [f"| {label} | {_cell(v)} | {', '.join(f'{x:.1f}' for x in v)} |"
          for label, v in cells.items()]
  first = "prompt length" if name == "length" else TITLES[name].lower()
  return "\n".join([f"| {first} | accuracy (mean ± sd) | per seed |", "|---|---|---|", *rows])


def plot(name: str, cells: dict[str, list[float]], chance: float, path: str) -> None:
  """One panel in the style of the paper's Figure 3: mean with a band (or bars) and the seeds."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(4.5, 3.4), dpi=110)
  labels = list(cells)
  means = np.array([np.mean(cells[l]) for l in labels])
  sds = np.array([np.std(cells[l], ddof=1) if len(cells[l]) > 1 else 0.0 for l in labels])
  x = np.arange(len(labels))
  if name == "length":  # evenly spaced lengths, as the paper's Figure 3(a) lines
    ax.plot(x, means, "o-", color="tab:blue")
    ax.fill_between(x, means - sds, means + sds, color="tab:blue", alpha=0.2)
    ax.set_xticks(x, labels)
    ax.set_xlabel("prompt length (tokens)")
  else:
    ax.bar(x, means, yerr=sds, capsize=4, color="tab:blue", alpha=0.6)
    ax.set_xticks(x, [l.replace(" + ", " +\n").replace(" ", "\n", 1) if len(l) > 14 else l
                      for l in labels], fontsize=8)
  for xi, label in zip(x, labels):
    ax.scatter([xi] * len(cells[label]), cells[label], color="black", s=10, zorder=3)
  ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="majority class")
  ax.set_ylabel(f"{TASK} test accuracy (%)")
  ax.set_title(TITLES[name])
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp)
  plt.close(fig)
  os.replace(tmp, path)


def inspected_prompt(args, rows: int = 12) -> str:
  """The nearest tokens of the seed-0 class-label prompt at the base length, kept in the
  results folder so the report can be remade without retraining."""
  saved = pathlib.Path(args.results).with_suffix(".prompt.npy")
  key = Setting("", length=args.base_length).key(args, args.seeds[0])
  trained = train.prompt_path(os.path.join(args.out_dir, key.replace("/", "_")), args.steps)
  if os.path.exists(trained):
    shutil.copyfile(trained, str(saved) + ".tmp")
    os.replace(str(saved) + ".tmp", saved)
  return prompt_report(saved, inspect_lib.read_embedding(args.model, mini._config()))


def prompt_report(saved: pathlib.Path, embedding: np.ndarray, rows: int = 12) -> str:
  """`prompt_tuning.inspect`'s report of a TASK prompt file's first `rows` rows against a mini
  T5's token embedding [vocab, d], and how many of all its rows keep a class label among their
  5 nearest tokens."""
  prompt = prompts_io.load_prompt(str(saved))
  labels = registry.class_labels(TASK)
  report = inspect_lib.inspect_prompts({saved.name: prompt[:rows]}, embedding,
                                       pretrained.MINI_VOCABULARY_PATH, k=5,
                                       class_labels=labels)
  full = inspect_lib.inspect_prompt(prompt, embedding, pretrained.MINI_VOCABULARY_PATH, k=5,
                                    class_labels=labels)
  with_label = sum(bool(r["class_labels"]) for r in full)
  left_out = f"Rows {rows} to {len(full) - 1} are left out above; " if len(full) > rows else ""
  return (f"```\n{inspect_lib.format_report(report)}```\n\n{left_out}{with_label} of all "
          f"{len(full)} rows have a class label among their 5 nearest tokens.")


def write_docs(table, args) -> None:
  chance = mini.majority_accuracy(TASK)
  blocks = {}
  for name, cells in table.items():
    plot(name, cells, chance, os.path.join(args.docs_dir, f"paper_{name}.png"))
    blocks[f"paper_{name}"] = markdown_table(name, cells)
  results = mini.Results(args.results)
  minutes = sum(v["seconds"] for v in results.data.values()) / 60
  blocks["paper_setting"] = (
      f"{TASK} test split ({args.eval_examples or 'all 600'} examples), rank classification; "
      f"chance (majority class) {chance:.1f}%. Seeds {list(args.seeds)}; {args.steps} steps of "
      f"batch {args.batch_size}, dropout 0.1; prompts: Adafactor 0.3, base length "
      f"{args.base_length}; model tuning: Adafactor {MODEL_TUNING_LR:g}. "
      f"{machine.describe()}; {minutes:.0f} min of runs in all ({len(results.data)} runs).")
  blocks["paper_inspection"] = inspected_prompt(args)
  for name, text in blocks.items():
    machine.write_docs_block(name, text, pathlib.Path(args.docs_dir) / DOC.name)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS),
                      choices=EXPERIMENTS)
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--eval_batch_size", type=int, default=32)
  parser.add_argument("--eval_examples", type=int, default=None,
                      help="score the first N test examples (default: all 600)")
  parser.add_argument("--lengths", nargs="+", type=int, default=[1, 5, 20, 100, 150])
  parser.add_argument("--base_length", type=int, default=100,
                      help="the prompt length of the init, pretraining and method experiments")
  parser.add_argument("--model", default=pretrained.MINI_DIR,
                      help="the LM-adapted frozen model (default: the shipped mini T5)")
  parser.add_argument("--span_corruption_model", default=pretrained.MINI_SPAN_CORRUPTION_DIR,
                      help="the span-corruption-only checkpoint of the same run")
  parser.add_argument("--out_dir", default="/tmp/paper_ablations",
                      help="the runs' model dirs (checkpoints, prompts)")
  parser.add_argument("--results", default=str(RESULTS), help="finished runs (resumable)")
  parser.add_argument("--docs_dir", default=str(DOC.parent),
                      help=f"where {DOC.name} (with its table markers) and the plots are")
  parser.add_argument("--jax_cache", default=None,
                      help="persistent compilation cache (default: OUT_DIR/jax_cache); seeds "
                           "after the first reuse the compiled steps")
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  jax.config.update("jax_compilation_cache_dir",
                    args.jax_cache or os.path.join(args.out_dir, "jax_cache"))
  table = run_all(args)
  for name, cells in table.items():
    print(f"{TITLES[name]}\n{markdown_table(name, cells)}\n", flush=True)
  write_docs(table, args)


if __name__ == "__main__":
  sys.exit(main())
