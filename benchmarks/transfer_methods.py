"""Many tasks, shared knowledge: prompt transfer (SPoT) and multi-task prompt tuning (MPT) on
the WordNet tasks, measured on the frozen mini T5.

    python -m benchmarks.transfer_methods --plan model_tuning single sources fewshot ranking deep
    python -m benchmarks.transfer_methods --plan deep_long model_tuning_long   # the longer runs
    python -m benchmarks.transfer_methods --draw_only     # the tables, from the stored results

The source tasks are wordnet_topic and wordnet_pos (the mixture SOURCE_MIXTURE); the target
tasks (TARGETS) are the other three, whose data no source run sees. Sources (`sources` plan,
each 1,000 steps over the mixture, then its prompt kept in SOURCE_PROMPTS_DIR):
  spot   one plain prompt trained on the mixture: SPoT's multi-task source prompt
  mpt    MPT over the mixture (methods/mpt.gin's model); its shared prompt P* is the source
  mpt_distilled  the same, distilled from single-task teachers (MPT_TEACHERS: the source
         tasks' own prompts of the `single` plan, MPT_DISTILLATION_WEIGHT 0.9)
  spot_others  per target, one plain prompt trained on every other task (the mixture
         wordnet_without_{target}): more sources, still none of the target's data
  deep_spot  one deep prompt (methods/deep.gin) trained on the mixture; its `deep` plan
         starts each target's deep prompt from it or from the target's plain init
  deep100_spot  the same at 100 rows, the paper's length (the `deep_long` plan)
A target run is small_scale_methods' plain 20-row prompt at the decayed recipe (Adafactor 0.3
decayed linearly to 0), started from the task's plain init (its class labels; sampled
vocabulary for the generated wordnet_hypernym_word), or from a source's prompt. Regimes: the
whole train split (1,000 steps) and its first 128 or 32 examples (FEW_SHOT_STEPS steps).
Model tuning (every weight, Adafactor 1e-3, 200 steps) is the ceiling; the `model_tuning_long`
plan runs it for 1,000 steps, the prompts' own count.

Which source to pick (SPoT section 4): each task's own plain prompt (whole train split, seed
0; `single` plan) is its embedding; for each target the four other tasks' prompts are ranked
by cosine similarity to the target's (prompt_tuning/transfer.py) and compared with the gain of
starting the 128-example run from each (`ranking` plan).

Results: one JSON per run in RESULTS_DIR (resumable, like small_scale_methods); the tables go
into docs/methods.md, each task's baselines into docs/data.md.
"""

import dataclasses
import json
import os
import shutil
import statistics
import sys
import time

import numpy as np

from benchmarks import machine
from benchmarks import mini_t5_prompt_tuning as mini
from benchmarks import small_scale_methods as ssm
from prompt_tuning import eval as eval_lib
from prompt_tuning import model as model_lib
from prompt_tuning import pretrained, prompts, train, transfer
from prompt_tuning.data import registry, wordnet
from prompt_tuning.prompts import mpt

Run = ssm.Run
RESULTS_DIR = ssm.ROOT / "benchmarks" / "results" / "transfer_methods"
SOURCE_PROMPTS_DIR = ssm.SOURCE_PROMPTS_DIR  # RESULTS_DIR / "prompts"
DATA_DOC = ssm.ROOT / "docs" / "data.md"  # the tasks' baselines (transfer_tasks)
SOURCE_MIXTURE = "wordnet_topic_pos"
SOURCES = wordnet.MIXTURES[SOURCE_MIXTURE]
TARGETS = ("wordnet_hypernym", "wordnet_senses", "wordnet_hypernym_word")
TASKS = SOURCES + TARGETS
SOURCE_KINDS = ("spot", "mpt", "mpt_distilled")
OTHERS = "spot_others"  # the start from the target's leave-one-out source
DEEP_SPOT = "deep_spot"  # SPoT with deep prompts (methods/deep.gin): source and targets deep
DEEP_LONG_SPOT = "deep100_spot"  # the same at the paper's length, best on the source tasks
LENGTH, DEEP_LONG_LENGTH = 20, 100
MODEL_TUNING_STEPS, LONG_MODEL_TUNING_STEPS = 200, 1000
FULL_STEPS, FEW_SHOT_STEPS = 1000, 300
SHOTS = (32, 128)
STARTS = {"plain": "the task's plain init", "spot": "SPoT: the mixture's prompt",
          "mpt": "MPT: the mixture's shared prompt P*",
          "mpt_distilled": "MPT distilled from single-task teachers: its P*",
          OTHERS: "SPoT: every other task's prompt"}
DEEP_STARTS = {"plain": "deep prompt, the task's plain init",
               DEEP_SPOT: "deep prompt, SPoT: the mixture's deep prompt"}
DEEP_LONG_STARTS = {"plain": "deep prompt, 100 rows, the task's plain init",
                    DEEP_LONG_SPOT: "deep prompt, 100 rows, SPoT: the mixture's deep prompt"}


def others_mixture(target: str) -> str:
  """The leave-one-out source mixture of a target: every task of TASKS but the target."""
  return f"wordnet_without_{target.removeprefix('wordnet_')}"


LEAVE_ONE_OUT = {others_mixture(t): tuple(x for x in TASKS if x != t) for t in TARGETS}
SOURCE_MIXTURES = (SOURCE_MIXTURE, *LEAVE_ONE_OUT)
for _name, _tasks in LEAVE_ONE_OUT.items():  # trained like the shipped mixtures: equal rates
  registry.add_mixture(_name, [(t, 1.0) for t in _tasks])
ssm.MIXTURE_TASKS.update(LEAVE_ONE_OUT)


def feature_lengths(task: str) -> dict[str, int]:
  """A task's feature lengths; a leave-one-out mixture's: the longest of its tasks'."""
  if task in mini.TASKS:
    return mini.TASKS[task]
  return {k: max(mini.TASKS[t][k] for t in LEAVE_ONE_OUT[task]) for k in ("inputs", "targets")}


def plain_init(task: str) -> str:
  return "class_labels" if registry.class_labels(task) else "sampled_vocab"


def init_of(start: str, task: str) -> str:
  """Run.init for a start: 'plain', a source kind, or a task's own prompt (ranking)."""
  if start == OTHERS:
    return f"{ssm.FROM_SOURCE}{others_mixture(task)}"
  return plain_init(task) if start == "plain" else f"{ssm.FROM_SOURCE}{start}"


def target_run(task: str, seed: int, start: str, shots: int | None,
               method: str = "prompt") -> Run:
  return Run(task=task, seed=seed, init=init_of(start, task), schedule="linear",
             steps=FULL_STEPS if shots is None else FEW_SHOT_STEPS, train_examples=shots,
             method=method)


def deep_target_run(task: str, seed: int, start: str, shots: int | None,
                    length: int = LENGTH) -> Run:
  """A target run of the deep prompt (methods/deep.gin), from its plain init or a deep
  source (DEEP_SPOT; DEEP_LONG_SPOT at DEEP_LONG_LENGTH rows)."""
  return dataclasses.replace(target_run(task, seed, start, shots, method="deep"), length=length)


def deep_long_target_run(task: str, seed: int, start: str, shots: int | None) -> Run:
  return deep_target_run(task, seed, start, shots, DEEP_LONG_LENGTH)


def model_tuning_run(task: str, seed: int, steps: int = MODEL_TUNING_STEPS) -> Run:
  return Run(task=task, seed=seed, method="model_tuning", learning_rate=1e-3, steps=steps)


def long_model_tuning_run(task: str, seed: int) -> Run:
  return model_tuning_run(task, seed, LONG_MODEL_TUNING_STEPS)


def source_run(kind: str, target: str | None = None) -> Run:
  """A source kind's run; OTHERS's is the target's leave-one-out mixture."""
  task = others_mixture(target) if kind == OTHERS else SOURCE_MIXTURE
  deep = kind in (DEEP_SPOT, DEEP_LONG_SPOT)
  method = "deep" if deep else kind if kind.startswith("mpt") else "prompt"
  length = DEEP_LONG_LENGTH if kind == DEEP_LONG_SPOT else LENGTH
  return Run(task=task, method=method, length=length, schedule="linear", steps=FULL_STEPS)


def source_runs() -> list[tuple[str, Run, str]]:
  """(label, run, kept prompt's name) of every source."""
  return ([(STARTS[kind], source_run(kind), kind) for kind in SOURCE_KINDS]
          + [(f"SPoT: every task but {t}", source_run(OTHERS, t), others_mixture(t))
             for t in TARGETS]
          + [(DEEP_STARTS[DEEP_SPOT], source_run(DEEP_SPOT), DEEP_SPOT),
             (DEEP_LONG_STARTS[DEEP_LONG_SPOT], source_run(DEEP_LONG_SPOT), DEEP_LONG_SPOT)])


# ------------------------------------------------------------------------------------------
# Plans: (run, name of the prompt to keep in SOURCE_PROMPTS_DIR or None), in running order.

def model_tuning_plan(seeds):
  return [(model_tuning_run(task, seed), None) for seed in seeds for task in TARGETS]


def model_tuning_long_plan(seeds):
  """Model tuning for 1,000 steps, as long as the prompts train: is 200 steps its ceiling?
  (Its learning curve, tested at 100, 300, 600 and 1,000 steps, says where it peaks.)"""
  return [(long_model_tuning_run(task, seed), None) for seed in seeds for task in TARGETS]


def single_plan(seeds):
  """Every task's plain prompt on its whole train split; seed 0's prompt is kept (ranking)."""
  return [(target_run(task, seed, "plain", None), task if seed == 0 else None)
          for seed in seeds for task in (TASKS if seed == 0 else TARGETS)]


def sources_plan(seeds):
  del seeds
  return [(run, kept) for _, run, kept in source_runs()]


def fewshot_plan(seeds):
  return [(target_run(task, seed, start, shots), None) for shots in (128, 32)
          for seed in seeds for task in TARGETS for start in STARTS]


def full_plan(seeds):
  return [(target_run(task, seed, start, None), None) for seed in seeds for task in TARGETS
          for start in STARTS if start != "plain"]


def deep_plan(seeds):
  """SPoT with deep prompts: the mixture's deep source, then each target's deep prompt from
  its plain init and from that source, at 128 examples and on the whole train split."""
  source = source_run(DEEP_SPOT)
  return [(source, DEEP_SPOT)] + [(deep_target_run(task, seed, start, shots), None)
                                  for shots in (128, None) for seed in seeds
                                  for task in TARGETS for start in DEEP_STARTS]


def deep_long_plan(seeds):
  """The deep plan's whole-split runs at 100 rows: the source, each target's SPoT start,
  then its plain init."""
  source = source_run(DEEP_LONG_SPOT)
  return [(source, DEEP_LONG_SPOT)] + [(deep_long_target_run(task, seed, start, None), None)
                                       for start in (DEEP_LONG_SPOT, "plain")
                                       for seed in seeds for task in TARGETS]


def ranking_plan(seeds):
  """128-example runs of each target from each other task's own prompt, first seed."""
  return [(target_run(target, seeds[0], source, 128), None) for target in TARGETS
          for source in TASKS if source != target]


def knobs_plan(seeds):
  """The plain prompt's rate on each target's whole train split, first seed: the decayed
  recipe's 0.3 was chosen on wordnet_topic."""
  runs = [dataclasses.replace(target_run(task, seeds[0], "plain", None), learning_rate=rate)
          for task in TARGETS for rate in (0.1, 0.03)]
  runs += [dataclasses.replace(target_run("wordnet_hypernym_word", seeds[0], "plain", None),
                               init="frequent_answers", learning_rate=rate) for rate in (0.3, 0.1)]
  return [(run, None) for run in runs]


FEW_SHOT_RATES = (0.3, 0.1, 0.03)


def fewshot_rate_run(task: str, seed: int, start: str, rate: float) -> Run:
  return dataclasses.replace(target_run(task, seed, start, 128), learning_rate=rate)


def fewshot_knobs_plan(seeds):
  """The few-shot rate, first seed, 128 examples, plain and SPoT starts of the two
  classification targets: 300 steps are 37 passes over 128 examples, and the 0.3 run of
  wordnet_hypernym's class-label start scored less after training than before."""
  return [(fewshot_rate_run(task, seeds[0], start, rate), None) for task in TARGETS[:2]
          for start in ("plain", "spot") for rate in FEW_SHOT_RATES[1:]]


PLANS = {"knobs": knobs_plan, "fewshot_knobs": fewshot_knobs_plan,
         "model_tuning": model_tuning_plan, "single": single_plan, "sources": sources_plan,
         "fewshot": fewshot_plan, "full": full_plan, "ranking": ranking_plan,
         "deep": deep_plan, "deep_long": deep_long_plan,
         "model_tuning_long": model_tuning_long_plan}


# ------------------------------------------------------------------------------------------
# Running.

def train_source(run: Run, kept: str, work_dir: str) -> dict:
  """A source run over the mixture, then each source task's test accuracy with the prompt it
  serves that task (the one prompt for spot; P_k for mpt); keeps the source prompt."""
  model_dir = os.path.join(work_dir, run.key())
  shutil.rmtree(model_dir, ignore_errors=True)
  model = ssm.build_model(run)
  start = time.time()
  train.train(model=model, model_dir=model_dir, initial_checkpoint_path=run.checkpoint_path,
              mixture_or_task_name=run.task, task_feature_lengths=feature_lengths(run.task),
              train_steps=run.steps, batch_size=run.batch_size,
              optimizer=ssm.build_optimizer(run), checkpoint_period=run.steps,
              random_seed=run.seed)
  seconds = time.time() - start
  exported = train.prompt_path(model_dir, run.steps)
  task_prompt = {task: exported for task in SOURCES}
  source = exported
  if run.method.startswith("mpt"):
    folder = exported[:-len(".npy")]
    task_prompt = {task: os.path.join(folder, f"{task}.npy") for task in SOURCES}
    source = os.path.join(folder, f"{mpt.SHARED_FILE}.npy")
  accuracy = {task: test_accuracy(task, path, run) for task, path in task_prompt.items()}
  keep(source, kept)
  shutil.rmtree(model_dir, ignore_errors=True)
  return {"run": dataclasses.asdict(run), "seconds": seconds, "test": accuracy,
          "machine": machine.describe()}


def test_accuracy(task: str, prompt_file: str, run: Run) -> float:
  """A source task's test accuracy with the prompt file the source `run` serves it (MPT's
  P_k are plain prompt files)."""
  method = ssm.prompt_method(run) if run.method == "deep" else None
  model = model_lib.PromptedT5Model(ssm.mini._config(), run.length,
                                    prompts.from_file(prompt_file), method=method)
  metrics = eval_lib.evaluate(model=model,
                              initial_checkpoint_path=pretrained.mini_checkpoint_path(),
                              mixture_or_task_name=task, task_feature_lengths=mini.TASKS[task],
                              batch_size=64, prompt_file=prompt_file, split="test",
                              use_rank_classification=registry.class_labels(task) is not None)
  return metrics[f"{task}/accuracy"]


def keep(path: str, name: str) -> None:
  target = SOURCE_PROMPTS_DIR / f"{name}.npy"
  target.parent.mkdir(parents=True, exist_ok=True)
  np.save(f"{target}.tmp.npy", np.load(path))
  os.replace(f"{target}.tmp.npy", target)


def load_results() -> dict[str, dict]:
  return ssm.load_results(RESULTS_DIR)


def run_plan(plan: list[tuple[Run, str | None]], shard: tuple[int, int], work_dir: str) -> None:
  index, count = shard
  for i, (run, kept) in enumerate(plan):
    kept_missing = kept is not None and not (SOURCE_PROMPTS_DIR / f"{kept}.npy").exists()
    if i % count != index or (run.key() in load_results() and not kept_missing):
      continue
    needs = run.init[len(ssm.FROM_SOURCE):] if run.init.startswith(ssm.FROM_SOURCE) else None
    if needs and not (SOURCE_PROMPTS_DIR / f"{needs}.npy").exists():
      print(f"[{time.strftime('%H:%M:%S')}] {run.key()}: later, after the run of {needs}")
      continue
    print(f"[{time.strftime('%H:%M:%S')}] {run.key()}", flush=True)
    if run.task in SOURCE_MIXTURES:
      result = train_source(run, kept, work_dir)
      print(f"  -> test {result['test']} ({result['seconds']:.0f} s)", flush=True)
    else:
      keep_prompt = None if kept is None else str(SOURCE_PROMPTS_DIR / f"{kept}.npy")
      result = ssm.execute(run, work_dir, keep_prompt=keep_prompt)
      print(f"  -> test {final(result):.1f} ({result['seconds']:.0f} s)", flush=True)
    ssm.save_result(run.key(), result, RESULTS_DIR)


# ------------------------------------------------------------------------------------------
# Tables.

def final(result: dict, split: str = "test") -> float:
  return result["curve"][str(result["run"]["steps"])][split]


def _scores(results: dict[str, dict], runs: list[Run]) -> list[float]:
  return [final(results[r.key()]) for r in runs if r.key() in results]


def _cell(values: list[float], expected: int) -> str:
  if not values:
    return ""
  text = ssm._stats(values)
  return text if len(values) == expected else f"{text} ({len(values)} of {expected} seeds)"


def main_table(results: dict[str, dict], seeds) -> str:
  """Target × regime: each start's test accuracy (mean ± sd over seeds), model tuning."""
  columns = {label: _runs_of(target_run, start) for start, label in STARTS.items()}
  return _starts_table(results, seeds, columns, (*SHOTS, None))


def deep_table(results: dict[str, dict], seeds) -> str:
  """SPoT with deep prompts beside the plain prompt's own plain and SPoT starts."""
  columns = {"plain prompt, the task's plain init": _runs_of(target_run, "plain"),
             "plain prompt, SPoT: the mixture's prompt": _runs_of(target_run, "spot")}
  columns.update({label: _runs_of(deep_target_run, start)
                  for start, label in DEEP_STARTS.items()})
  return _starts_table(results, seeds, columns, (128, None))


def deep_long_table(results: dict[str, dict], seeds) -> str:
  """The whole splits: deep prompts of 20 and 100 rows, beside model tuning for 200 and
  1,000 steps."""
  columns = {label.replace("deep prompt", "deep prompt, 20 rows", 1):
             _runs_of(deep_target_run, start) for start, label in DEEP_STARTS.items()}
  columns.update({label: _runs_of(deep_long_target_run, start)
                  for start, label in DEEP_LONG_STARTS.items()})
  tuning = {"model tuning, 200 steps": model_tuning_run,
            "model tuning, 1,000 steps": long_model_tuning_run}
  return _starts_table(results, seeds, columns, (None,), tuning)


def _runs_of(make_run, start: str):
  """(task, seed, shots) -> the Run of `start` that make_run (target_run, deep_target_run)
  makes."""
  return lambda task, seed, shots: make_run(task, seed, start, shots)


def _starts_table(results: dict[str, dict], seeds, columns: dict, regimes,
                  tuning: dict | None = None) -> str:
  """Target × regime rows, one column per start (label -> (task, seed, shots) -> Run), then
  model tuning's (label -> (task, seed) -> Run) beside the whole split; then each column's
  mean over targets, per regime."""
  tuning = tuning or {"model tuning": model_tuning_run}
  lines = ["| target | train examples | " + " | ".join([*columns, *tuning]) + " |",
           "|---|---|" + "---|" * (len(columns) + len(tuning))]
  for task in TARGETS:
    for shots in regimes:
      cells = [_cell(_scores(results, [run_of(task, s, shots) for s in seeds]), len(seeds))
               for run_of in columns.values()]
      cells += [_cell(_scores(results, [run_of(task, s) for s in seeds]), len(seeds))
                if shots is None else "" for run_of in tuning.values()]
      lines.append(f"| {task} | {'all' if shots is None else shots} | " + " | ".join(cells)
                   + " |")
  for shots in regimes:
    cells = [_mean_of_targets(results, seeds, lambda t, s: run_of(t, s, shots))
             for run_of in columns.values()]
    cells += [_mean_of_targets(results, seeds, run_of) if shots is None else ""
              for run_of in tuning.values()]
    lines.append(f"| mean of targets | {'all' if shots is None else shots} | "
                 + " | ".join(cells) + " |")
  return "\n".join(lines)


def _mean_of_targets(results, seeds, run_of) -> str:
  """The mean over targets of each target's mean over seeds, where every target has every
  seed; run_of: (task, seed) -> Run."""
  means = [_scores(results, [run_of(t, s) for s in seeds]) for t in TARGETS]
  if not all(len(m) == len(seeds) for m in means):
    return ""
  return f"**{statistics.mean(statistics.mean(m) for m in means):.1f}**"


def sources_table(results: dict[str, dict]) -> str:
  lines = ["| source | " + " | ".join(f"{t} test" for t in SOURCES) + " | minutes |",
           "|---|" + "---|" * (len(SOURCES) + 1)]
  for label, run, _ in source_runs():
    result = results.get(run.key())
    if result:
      lines.append(f"| {label} | " + " | ".join(f"{result['test'][t]:.1f}" for t in SOURCES)
                   + f" | {result['seconds'] / 60:.1f} |")
  return "\n".join(lines)


def ranking_table(results: dict[str, dict], seed: int) -> str:
  """Per target: the other tasks by prompt similarity, each with its 128-example gain over
  the plain init; Spearman's rho between the two, and whether the most similar source is
  among the two best."""
  lines = ["| target | sources, most similar first: similarity (gain) | rho | top pick in "
           "best two |", "|---|---|---|---|"]
  hits, rhos = 0, []
  for target in TARGETS:
    files = {t: SOURCE_PROMPTS_DIR / f"{t}.npy" for t in TASKS}
    base = results.get(target_run(target, seed, "plain", 128).key())
    runs = {t: results.get(target_run(target, seed, t, 128).key()) for t in TASKS if t != target}
    if not all(f.exists() for f in files.values()) or base is None or None in runs.values():
      continue
    ranked = transfer.rank_sources(np.load(files[target]),
                                   {t: np.load(files[t]) for t in runs})
    gains = {t: final(r) - final(base) for t, r in runs.items()}
    rho = transfer.spearman([s for _, s in ranked], [gains[t] for t, _ in ranked])
    best_two = sorted(gains, key=gains.get, reverse=True)[:2]
    hit = ranked[0][0] in best_two
    hits, rhos = hits + hit, rhos + [rho]
    cells = ", ".join(f"{t} {s:.2f} ({gains[t]:+.1f})" for t, s in ranked)
    lines.append(f"| {target} | {cells} | {rho:.2f} | {'yes' if hit else 'no'} |")
  if rhos:
    lines.append(f"| all | | mean {statistics.mean(rhos):.2f} | {hits} of {len(rhos)} |")
  return "\n".join(lines)


def fewshot_rates_table(results: dict[str, dict], seed: int) -> str:
  """The fewshot_knobs runs: test accuracy before training -> after, per rate."""
  lines = ["| target (128 examples) | start | " + " | ".join(f"rate {r}" for r in FEW_SHOT_RATES)
           + " |", "|---|---|" + "---|" * len(FEW_SHOT_RATES)]
  for task in TARGETS[:2]:
    for start in ("plain", "spot"):
      cells = []
      for rate in FEW_SHOT_RATES:
        result = results.get(fewshot_rate_run(task, seed, start, rate).key())
        cells.append(f"{result['curve']['0']['test']:.1f} → {final(result):.1f}"
                     if result else "")
      lines.append(f"| {task} | {STARTS[start]} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def task_table(results: dict[str, dict], seeds) -> str:
  """docs/data.md's: each task's majority class, plain prompt and model tuning (with
  small_scale_methods' runs of the source tasks in `results`)."""
  lines = ["| task | majority class | plain prompt, all examples | model tuning |",
           "|---|---|---|---|"]
  for task in TASKS:
    plain = _scores(results, [target_run(task, s, "plain", None) for s in seeds])
    tuning = _scores(results, [model_tuning_run(task, s) for s in seeds])
    lines.append(f"| `{task}` | {majority(task):.1f} | {_cell(plain, len(seeds))} | "
                 f"{_cell(tuning, len(seeds))} |")
  return "\n".join(lines)


def majority(task: str) -> float:
  """Test accuracy of always answering the train split's most frequent target."""
  read = lambda split: [json.loads(line)["targets"]
                        for line in open(wordnet.task_files(task)[split])]
  train_targets, test_targets = read("train"), read("test")
  top = max(set(train_targets), key=train_targets.count)
  return 100 * test_targets.count(top) / len(test_targets)


def tables(results: dict[str, dict], seeds) -> dict[str, str]:
  return {"transfer_results": main_table(results, seeds),
          "transfer_deep": deep_table(results, seeds),
          "transfer_deep_long": deep_long_table(results, seeds),
          "transfer_sources": sources_table(results),
          "transfer_ranking": ranking_table(results, seeds[0]),
          "transfer_fewshot_rates": fewshot_rates_table(results, seeds[0])}


def parse_args(argv=None):
  parser = ssm.plan_parser(__doc__, PLANS, TASKS, "/tmp/transfer_methods")
  parser.add_argument("--shots", nargs="+", type=int, default=list(SHOTS),
                      help="few-shot regimes of the fewshot plan")
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  shard = tuple(int(x) for x in args.shard.split("/"))
  if not args.draw_only:
    for name in args.plan:
      plan = [(run, kept) for run, kept in PLANS[name](args.seeds)
              if (run.task in args.tasks or run.task in SOURCE_MIXTURES)
              and run.train_examples in (*args.shots, None)]
      run_plan(plan, shard, args.work_dir)
  results = load_results()
  blocks = tables(results, args.seeds)
  task_block = task_table({**ssm.load_results(), **results}, args.seeds)
  seconds = sum(r["seconds"] for r in results.values())
  blocks["transfer_setting"] = (f"{machine.describe()}; {len(results)} runs, "
                                f"{seconds / 60:.0f} min of runs in all.")
  for name, block in blocks.items():
    print(f"\n{name}\n{block}")
    if not args.no_docs and ssm.DOC.exists():
      machine.write_docs_block(name, block, ssm.DOC)
  print(f"\ntransfer_tasks\n{task_block}")
  if not args.no_docs and DATA_DOC.exists():
    machine.write_docs_block("transfer_tasks", task_block, DATA_DOC)


if __name__ == "__main__":
  sys.exit(main())
