"""Prompt tuning at small scale: the recipe and the methods, measured on the frozen mini T5.

    python -m benchmarks.small_scale_methods --plan recipe     # run what is missing, then draw
    python -m benchmarks.small_scale_methods --plan methods
    python -m benchmarks.small_scale_methods --draw_only       # the tables, from the stored results

Plans (PLANS): seeds, recipe, length, init, schedule, recipe_knobs (the demo's recipe with
one change at a time), methods, decayed_methods, lm_adaptation, longer, adapted, model_tuning,
paper_length, figure3 (the paper's ablations at the decayed recipe), decoder (the mini decoder
beside the mini T5), decoder_knobs.

Every run is this library's train job on a WordNet task (the frozen shipped mini T5, only the
prompt trains unless the method is model tuning), with test- and validation-split accuracy by
rank classification recorded along the way at the steps in CURVE (one run gives the whole
learning curve). A finished run is one JSON file in RESULTS_DIR (in the repository), named by
its key, so an interrupted command resumes where it stopped and several commands may share the
work (`--shard 0/2` and `--shard 1/2` on two cores). The tables go into docs/methods.md, and
the paper's ablations at the decayed recipe into docs/paper_reproduction.md.
"""

import argparse
import collections
import dataclasses
import json
import os
import pathlib
import shutil
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import machine
from benchmarks import mini_t5_prompt_tuning as mini
from benchmarks import paper_ablations
from prompt_tuning import eval as eval_lib
from prompt_tuning import inspect as inspect_lib
from prompt_tuning import model as model_lib
from prompt_tuning import decoder_model, optim, partitioning, pretrained, prompts, train
from prompt_tuning.causal_lm import config as decoder_config
from prompt_tuning.checkpoints import loading, prompts_io
from prompt_tuning.data import jsonl, registry, vocabularies, wordnet
from prompt_tuning.prompts import deep, dept, mpt, residual
from prompt_tuning.prompts import method as method_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results" / "small_scale_methods"
COSTS = ROOT / "benchmarks" / "results" / "small_scale_methods_costs.json"
DOC = ROOT / "docs" / "methods.md"
PAPER_DOC = ROOT / "docs" / "paper_reproduction.md"  # its paper_corrected block
PLOT = ROOT / "docs" / "methods_curves.png"
MINI_RESULTS = ROOT / "benchmarks" / "results" / "mini_t5_prompt_tuning.json"
TASKS = ("wordnet_topic", "wordnet_pos")  # the two tasks of issue 19's tables (mini.TASKS may grow)
PAPER_LENGTHS = (1, 5, 20, 100, 150)  # the prompt lengths of the paper's Figure 3(a)
METHODS = ("prompt", "residual", "deep", "dept", "model_tuning")
METHOD_NAMES = {"prompt": "plain prompt", "residual": "residual (methods/residual.gin)",
                "deep": "deep (methods/deep.gin)", "dept": "DePT (methods/dept.gin)",
                "model_tuning": "model tuning (every weight)"}
CURVE = (0, 100, 300, 600, 1000, 2000, 3000)
EVAL_PERIOD = 100
# The rate of the DePT runs kept in RESULTS_DIR; methods/dept.gin's default later became 5e-2
# (one 300-step validation run; docs/methods.md). Not in the run key: change both together.
DEPT_LOW_RANK_LEARNING_RATE = 5e-2  # methods/dept.gin's default
DECODER = "llama_mini"  # Run.checkpoint naming the shipped mini decoder


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run; every field changes its numbers, so all of them are in its key."""
  task: str = "wordnet_topic"
  seed: int = 0
  method: str = "prompt"          # prompt | residual | deep | dept | mpt | mpt_distilled |
                                  # model_tuning
  init: str = "class_labels"      # class_labels | sampled_vocab | random_uniform |
                                  # frequent_answers | from_{kept source prompt}
  length: int = 20
  learning_rate: float = 0.3
  dropout: float = 0.0
  steps: int = 1000
  batch_size: int = 16
  checkpoint: str = "lm_adapted"  # lm_adapted | span_corruption | llama_mini | a directory
  low_rank_learning_rate: float | None = None  # DePT's A and B; None: DEPT_LOW_RANK_LEARNING_RATE
  schedule: str = "constant"      # constant | linear | cosine (optim.schedule)
  parameter_scale: bool = False   # Adafactor's steps relative to the parameters' RMS
  train_examples: int | None = None  # the first N of the train split (few-shot); None: all

  def __post_init__(self):
    if self.method == "dept" and self.low_rank_learning_rate is None:
      object.__setattr__(self, "low_rank_learning_rate", DEPT_LOW_RANK_LEARNING_RATE)

  def key(self) -> str:
    low_rank = f".lowrank{self.low_rank_learning_rate:g}" if self.method == "dept" else ""
    schedule = "" if self.schedule == "constant" else f".{self.schedule}"
    schedule += ".pscale" if self.parameter_scale else ""
    shots = "" if self.train_examples is None else f".n{self.train_examples}"
    return (f"{self.task}{shots}.{self.method}.{self.init}.p{self.length}.lr{self.learning_rate:g}"
            f"{schedule}{low_rank}.do{self.dropout:g}.s{self.steps}.b{self.batch_size}"
            f".{self.checkpoint_name}.seed{self.seed}")

  @property
  def checkpoint_name(self) -> str:
    return os.path.basename(os.path.normpath(self.checkpoint))

  @property
  def checkpoint_path(self) -> str:
    if self.decoder:
      return pretrained.mini_decoder_path()
    return {"lm_adapted": pretrained.mini_checkpoint_path(),
            "span_corruption": pretrained.MINI_SPAN_CORRUPTION_DIR}.get(self.checkpoint,
                                                                       self.checkpoint)

  @property
  def decoder(self) -> bool:
    """The frozen model is the mini decoder (its own tokenizer directory re-tokenizes the
    task; models/hf_decoder_prompt.gin's VOCABULARY_PATH)."""
    return self.checkpoint == DECODER

  @property
  def vocabulary_path(self) -> str | None:
    return self.checkpoint_path if self.decoder else None


class CurveEvaluator:
  """The train job's periodic evaluator: test accuracy at the CURVE steps, validation too at
  the last step (where choices between settings are made).

  The job calls it at step 0 (eval_before_training) and every EVAL_PERIOD steps; it counts its
  calls to know the step, and returns {} at the steps it skips.
  """

  def __init__(self, model, run: Run):
    self.calls = 0
    self.last_step = run.steps
    self.curve = {}
    self.seconds = 0.0  # spent evaluating, to take out of the run's training time
    self.kwargs = dict(model=model, mixture_or_task_name=run.task,
                       task_feature_lengths=mini.TASKS[run.task], batch_size=64,
                       use_rank_classification=registry.class_labels(run.task) is not None,
                       vocabulary_path=run.vocabulary_path)

  def __call__(self, params, mesh):
    step = self.calls * EVAL_PERIOD
    self.calls += 1
    if step not in CURVE and step != self.last_step:
      return {}
    start = time.time()
    splits = ("test", "validation") if step == self.last_step else ("test",)
    self.curve[step] = {split: eval_lib.evaluate_params(params, mesh, split=split, **self.kwargs)
                        for split in splits}
    self.seconds += time.time() - start
    return self.curve[step]["test"]


SOURCE_PROMPTS_DIR = ROOT / "benchmarks" / "results" / "transfer_methods" / "prompts"
FROM_SOURCE = "from_"  # init "from_NAME": the trained prompt SOURCE_PROMPTS_DIR/NAME.npy


def initializer(name: str, task: str, length: int):
  """A prompt of `length` rows; a class-label prompt shorter than the labels starts from the
  first `length` of them (as benchmarks/paper_ablations.py does)."""
  if name.startswith(FROM_SOURCE):
    return prompts.from_file(str(SOURCE_PROMPTS_DIR / f"{name[len(FROM_SOURCE):]}.npy"))
  if name == "class_labels":
    return prompts.class_labels(task_labels(task)[:length], pretrained.MINI_VOCABULARY_PATH)
  if name == "frequent_answers":  # class labels' analogue for a generated task
    return prompts.class_labels(frequent_answers(task, 20), pretrained.MINI_VOCABULARY_PATH)
  return {"sampled_vocab": prompts.sampled_vocab, "random_uniform": prompts.random_uniform}[name]()


def frequent_answers(task: str, count: int) -> list[str]:
  """The `count` commonest targets of the task's train split, commonest first."""
  with open(wordnet.task_files(task)["train"]) as f:
    targets = collections.Counter(json.loads(line)["targets"] for line in f)
  return [target for target, _ in targets.most_common(count)]


# The tasks of each mixture a run may train on: the shipped WordNet mixtures, and those a
# benchmark registers (transfer_methods' leave-one-out sources).
MIXTURE_TASKS = dict(wordnet.MIXTURES)


def task_labels(task: str) -> tuple[str, ...]:
  """A task's class labels, or those of every task of a mixture, in its order."""
  names = MIXTURE_TASKS.get(task, (task,))
  labels = [label for name in names for label in registry.class_labels(name) or ()]
  if not labels:
    raise ValueError(f"{task} has no class labels; start its prompt from 'sampled_vocab'.")
  return tuple(labels)


def prompt_method(run: Run):
  """The prompt kind, as gin_configs/methods/{run.method}.gin makes it."""
  if run.method == "residual":
    return residual.method(bottleneck=800)
  if run.method == "deep":
    return deep.method()
  if run.method == "dept":
    return dept.method(max_input_length=mini.TASKS[run.task])
  if run.method == "mpt":
    return mpt.method(run.task)
  if run.method == "mpt_distilled":  # teachers: each task's kept plain prompt
    return mpt.method(run.task, teachers={t: str(SOURCE_PROMPTS_DIR / f"{t}.npy")
                                          for t in MIXTURE_TASKS[run.task]})
  return method_lib.plain()


def build_model(run: Run):
  if run.decoder:
    return build_decoder(run)
  config = mini._config()
  if run.method == "model_tuning":
    return model_lib.T5Model(config, dropout_rate=run.dropout)
  init = initializer(run.init, run.task, run.length)
  return model_lib.PromptedT5Model(config, run.length, init, dropout_rate=run.dropout,
                                   method=prompt_method(run))


def build_decoder(run: Run):
  """models/hf_decoder_prompt.gin's model on the mini decoder (the plain prompt only)."""
  if run.method not in ("prompt", "model_tuning"):
    raise ValueError(f"{run.method!r} is for T5 models; the mini decoder runs 'prompt' and "
                     "'model_tuning'.")
  path = run.checkpoint_path
  ids = {f"{kind}_id": decoder_model.tokenizer_id(path, kind) for kind in ("bos", "eos", "pad")}
  config = decoder_config.config_from_hf(path)
  if run.method == "model_tuning":
    return decoder_model.DecoderModel(config, dropout_rate=run.dropout, **ids)
  init = initializer(run.init, run.task, run.length)
  return decoder_model.PromptedDecoderModel(config, run.length, init, dropout_rate=run.dropout,
                                            **ids)


def build_optimizer(run: Run):
  """runs/prompt_finetune.gin's Adafactor at the run's rate; DePT's low-rank pair at its own."""
  adafactor = lambda lr: optim.adafactor(learning_rate=lr, decay_rate=0.8,
                                         multiply_by_parameter_scale=run.parameter_scale,
                                         weight_decay_rate=1e-5, clipping_threshold=1.0,
                                         learning_rate_schedule=run.schedule,
                                         train_steps=run.steps)
  if run.method == "dept":
    return optim.per_part(default=adafactor(run.learning_rate),
                          parts={"prompt/low_rank_.*": adafactor(run.low_rank_learning_rate)})
  return adafactor(run.learning_rate)


def train_task(run: Run, work_dir: str) -> str:
  """The task `run` trains on: its task, or with train_examples, a registered copy whose
  train split is the first train_examples lines of the task's train file."""
  if run.train_examples is None:
    return run.task
  files = wordnet.task_files(run.task)
  with open(files["train"]) as f:
    lines = [line for _, line in zip(range(run.train_examples), f)]
  if len(lines) < run.train_examples:
    raise ValueError(f"{run.task} has {len(lines)} train examples, fewer than "
                     f"train_examples={run.train_examples}.")
  name = f"{run.task}_n{run.train_examples}"
  files["train"] = os.path.join(work_dir, "subsets", f"{name}_train.jsonl")
  os.makedirs(os.path.dirname(files["train"]), exist_ok=True)
  with open(files["train"], "w") as f:
    f.writelines(lines)
  jsonl.register_jsonl_task(name, files, vocabulary=vocabularies.get_vocabulary(
      pretrained.MINI_VOCABULARY_PATH), class_labels=registry.class_labels(run.task))
  return name


def execute(run: Run, work_dir: str, keep_prompt: str | None = None) -> dict:
  """Trains `run` in a fresh directory under work_dir; its learning curve and costs. With
  `keep_prompt`, the final prompt file is copied there."""
  model_dir = os.path.join(work_dir, run.key())
  shutil.rmtree(model_dir, ignore_errors=True)
  model = build_model(run)
  evaluator = CurveEvaluator(model, run)
  regex = ".*" if run.method == "model_tuning" else optim.PROMPT_REGEX
  start = time.time()
  train.train(model=model, model_dir=model_dir, initial_checkpoint_path=run.checkpoint_path,
              mixture_or_task_name=train_task(run, work_dir),
              task_feature_lengths=mini.TASKS[run.task],
              train_steps=run.steps, batch_size=run.batch_size,
              optimizer=build_optimizer(run),
              checkpoint_period=run.steps, eval_period=EVAL_PERIOD, evaluator=evaluator,
              eval_before_training=True, trainable_regex=regex, random_seed=run.seed,
              vocabulary_path=run.vocabulary_path)
  seconds = time.time() - start
  if keep_prompt:
    os.makedirs(os.path.dirname(keep_prompt), exist_ok=True)
    shutil.copyfile(train.prompt_path(model_dir, run.steps), keep_prompt + ".tmp")
    os.replace(keep_prompt + ".tmp", keep_prompt)
  shutil.rmtree(model_dir, ignore_errors=True)
  return {"run": dataclasses.asdict(run), "seconds": seconds, "eval_seconds": evaluator.seconds,
          "curve": {str(k): {s: v[f"{run.task}/accuracy"] for s, v in splits.items()}
                    for k, splits in evaluator.curve.items()},
          "machine": machine.describe()}


def costs(run: Run, steps: int = 20) -> dict:
  """Trainable parameters, the compiled train step's temporaries (XLA's memory analysis) and
  its median time over `steps` steps after compilation, on a batch of the run's shapes."""
  model = build_model(run)
  optimizer = build_optimizer(run)
  regex = ".*" if run.method == "model_tuning" else optim.PROMPT_REGEX
  lengths = mini.TASKS[run.task]
  batch = {k: np.ones((run.batch_size, lengths["targets" if k.startswith("decoder") else
                                                "inputs"]), np.int32)
           for k in ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                     "decoder_loss_weights")}
  with jax.set_mesh(partitioning.make_mesh(1)):
    params = model.init_params(jax.random.PRNGKey(0), loading.load_params(
        run.checkpoint_path, model.config)) if run.method != "model_tuning" else (
            loading.load_params(run.checkpoint_path, model.config))
    trainable, frozen = optim.partition(params, regex)
    state = {"step": jnp.zeros((), jnp.int32), "trainable": trainable,
             "opt_state": optimizer.init(trainable)}
    seed = jax.random.PRNGKey(1)
    compiled = train.compile_step(model, optimizer, state, frozen, batch, seed)
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      state, metrics = compiled(state, frozen, batch, seed)
      jax.block_until_ready(metrics["loss"])
      times.append(time.perf_counter() - start)
  return {"trainable_parameters": sum(x.size for x in jax.tree.leaves(trainable)),
          "temp_mib": compiled.memory_analysis().temp_size_in_bytes / 2**20,
          "step_ms": 1000 * statistics.median(times), "machine": machine.describe()}


# ------------------------------------------------------------------------------------------
# Plans: the runs each table needs.


def recipe_plan(seeds) -> list[Run]:
  """Learning rate without dropout, and the paper's rate with dropout 0.1; one seed, 1,000
  steps (the curve gives 100, 300 and 600). The 2,000-step runs of seeds_plan give the same
  curve up to step 1,000 for the chosen setting."""
  del seeds
  settings = {"wordnet_topic": [(0.0, 0.3), (0.0, 0.1), (0.0, 0.03), (0.1, 0.3)],
              "wordnet_pos": [(0.1, 0.3), (0.0, 0.1)]}  # (0, 0.3): seeds_plan's seed 0
  return [Run(task=task, dropout=dropout, learning_rate=lr)
          for task, pairs in settings.items() for dropout, lr in pairs]


def length_plan(seeds) -> list[Run]:
  """The paper's prompt length (100 rows) at the chosen recipe, on the topic task."""
  del seeds
  return [Run(length=100, steps=1000)]


def init_plan(seeds) -> list[Run]:
  """The paper's Figure 3(b) at the decayed recipe: sampled-vocabulary and random-uniform
  prompts against the class-label init of schedule_plan, every seed, both tasks."""
  return [Run(task=task, seed=seed, init=init, schedule="linear")
          for seed in seeds for task in TASKS for init in ("sampled_vocab", "random_uniform")]


def schedule_plan(seeds) -> list[Run]:
  """The rate decayed linearly to 0 over 1,000 steps, against the constant rate of
  seeds_plan (whose curve gives step 1,000), every seed, both tasks."""
  return [Run(task=task, seed=seed, schedule="linear") for seed in seeds for task in TASKS]


def seeds_plan(seeds) -> list[Run]:
  """The chosen recipe (no dropout, Adafactor 0.3) on both tasks, every seed, 2,000 steps."""
  return [Run(task=task, seed=seed, steps=2000) for seed in seeds for task in TASKS]


def methods_plan(seeds) -> list[Run]:
  """Each method at the chosen recipe for 600 steps, and model tuning (every weight, Adafactor
  1e-3, T5X's fine-tuning rate) at a third of the budget, which it needs less of. Deep prompts,
  the strongest, also run 2,000 steps like the plain prompt of seeds_plan."""
  method = lambda m, steps=600: [Run(task=task, seed=seed, method=m, steps=steps)
                                 for seed in seeds for task in TASKS]
  model_tuning = [Run(task=task, seed=seed, method="model_tuning", learning_rate=1e-3, steps=200)
                  for seed in seeds for task in TASKS]
  return method("deep", 2000) + method("dept") + method("residual") + model_tuning


def decayed_methods_plan(seeds) -> list[Run]:
  """Each method with the rate decayed linearly to 0 over 1,000 steps (schedule_plan's recipe
  for the plain prompt), seed by seed."""
  return [Run(task=task, seed=seed, method=m, schedule="linear")
          for seed in seeds for m in ("deep", "dept", "residual") for task in TASKS]


# The demo's recipe (DECAYED_PROMPT) with one change each: recipe_knobs_plan, knobs_table.
RECIPE_CHANGES = {"dropout 0.1 in the frozen model (the paper's)": dict(dropout=0.1),
                  "learning rate 0.1": dict(learning_rate=0.1),
                  "learning rate 0.03": dict(learning_rate=0.03),
                  "300 steps": dict(steps=300),
                  "3,000 steps": dict(steps=3000),
                  "100 rows (the paper's length)": dict(length=100)}


def recipe_knobs_plan(seeds) -> list[Run]:
  """The demo's recipe with each of RECIPE_CHANGES alone, every seed, both tasks (the
  recipe's own runs are schedule_plan's; 100 rows are paper_length_plan's)."""
  return [Run(task=task, seed=seed, schedule="linear", **change)
          for change in RECIPE_CHANGES.values() for seed in seeds for task in TASKS]


LM_ADAPTED_MORE = "/tmp/lm_more"  # where docs/mini_t5.md's longer LM adaptation leaves its steps


def lm_adaptation_plan(seeds) -> list[Run]:
  """The paper's Figure 3(c, d) at this scale, on the topic task: the plain prompt (chosen
  recipe, 1,000 steps) on the span-corruption checkpoint (no LM adaptation) and on checkpoints
  LM-adapted for longer than the shipped 500 steps: the `lm_adapted_<N>` folders (N: total
  LM-adaptation steps) found in LM_ADAPTED_MORE. seeds_plan's runs give the shipped 500."""
  folders = sorted(p for p in pathlib.Path(LM_ADAPTED_MORE).glob("lm_adapted_*")
                   if p.is_dir()) if os.path.isdir(LM_ADAPTED_MORE) else []
  checkpoints = ["span_corruption"] + [str(p) for p in folders]
  return [Run(seed=seed, checkpoint=c) for seed in seeds for c in checkpoints]


def longer_plan(seeds) -> list[Run]:
  """Toward the topic goals (plain >= 75, best method >= 79): the decayed recipe with a larger
  rate, twice the steps, the checkpoint LM-adapted four times longer (LM_ADAPTED_MORE), the
  paper's 100 rows and its batch of 32."""
  adapted = os.path.join(LM_ADAPTED_MORE, "lm_adapted_2000")
  runs = []
  for seed in seeds:
    runs += [Run(seed=seed, schedule="linear", checkpoint=adapted),
             Run(seed=seed, schedule="linear", learning_rate=1.0),
             Run(seed=seed, schedule="linear", steps=2000),
             Run(seed=seed, schedule="linear", method="deep", checkpoint=adapted),
             Run(seed=seed, schedule="linear", method="deep", learning_rate=1.0),
             Run(seed=seed, schedule="linear", length=100),
             Run(seed=seed, schedule="linear", length=100, learning_rate=1.0),
             Run(seed=seed, schedule="linear", batch_size=32, learning_rate=1.0)]
  return runs


def figure3_plan(seeds) -> list[Run]:
  """The paper's Figure 3 (a) and (c) at the decayed recipe, on the topic task: the plain
  prompt's other lengths and the span-corruption-only checkpoint, every seed (schedule_plan,
  paper_length_plan and init_plan run the rest of paper_table)."""
  lengths = [Run(seed=seed, length=length, schedule="linear")
             for length in PAPER_LENGTHS if length not in (20, 100) for seed in seeds]
  return lengths + [Run(seed=seed, checkpoint="span_corruption", schedule="linear")
                    for seed in seeds]


def paper_length_plan(seeds) -> list[Run]:
  """The paper's 100-row prompt at the decayed recipe, plain and deep, every seed, both
  tasks (length_plan's run is its constant-rate counterpart)."""
  return [Run(task=task, seed=seed, method=method, length=100, schedule="linear")
          for task in TASKS for method in ("prompt", "deep") for seed in seeds]


def adapted_plan(seeds) -> list[Run]:
  """The plain and deep prompts at the decayed recipe on the checkpoint LM-adapted four times
  longer than the shipped one (LM_ADAPTED_MORE's lm_adapted_2000), every seed, both tasks."""
  adapted = os.path.join(LM_ADAPTED_MORE, "lm_adapted_2000")
  return [Run(task=task, seed=seed, method=method, schedule="linear", checkpoint=adapted)
          for task in TASKS for method in ("deep", "prompt") for seed in seeds]


def model_tuning_plan(seeds) -> list[Run]:
  """Model tuning (every weight, Adafactor 1e-3, 200 steps) on both tasks, every seed."""
  return [Run(task=task, seed=seed, method="model_tuning", learning_rate=1e-3, steps=200)
          for seed in seeds for task in TASKS]


def decoder_plan(seeds) -> list[Run]:
  """The mini decoder beside the mini T5: the plain prompt at the decayed recipe (the
  demos' recipe) and model tuning (every weight, Adafactor 1e-3, 200 steps), every seed,
  both tasks."""
  return [Run(task=task, seed=seed, checkpoint=DECODER, schedule="linear") for seed in seeds
          for task in TASKS] + [
              Run(task=task, seed=seed, checkpoint=DECODER, method="model_tuning",
                  learning_rate=1e-3, steps=200) for seed in seeds for task in TASKS]


def decoder_knobs_plan(seeds) -> list[Run]:
  """The mini decoder's plain prompt with the step size fitted to its embedding table, whose
  RMS (0.022) is 1/50 of the mini T5's (1.11): Adafactor at 0.3 takes steps of about 0.3 per
  entry either way. A rate of 0.01, or steps relative to the prompt's own RMS (Adafactor's
  parameter scaling); topic, first seed only."""
  return [Run(seed=seeds[0], checkpoint=DECODER, schedule="linear", **change)
          for change in (dict(learning_rate=0.01), dict(parameter_scale=True))]


PLANS = {"decoder": decoder_plan, "decoder_knobs": decoder_knobs_plan, "recipe": recipe_plan,
         "longer": longer_plan, "adapted": adapted_plan,
         "paper_length": paper_length_plan, "figure3": figure3_plan,
         "model_tuning": model_tuning_plan, "length": length_plan, "seeds": seeds_plan,
         "methods": methods_plan, "lm_adaptation": lm_adaptation_plan,
         "schedule": schedule_plan, "init": init_plan, "decayed_methods": decayed_methods_plan,
         "recipe_knobs": recipe_knobs_plan}


def load_results(directory: pathlib.Path = RESULTS_DIR) -> dict[str, dict]:
  """The runs stored in `directory` by key, each run's fields completed with the defaults of
  fields added after it ran."""
  out = {}
  for path in sorted(directory.glob("*.json")):
    with open(path) as f:
      result = json.load(f)
    out[path.stem] = {**result, "run": dataclasses.asdict(Run(**result["run"]))}
  return out


def save_result(key: str, result: dict, directory: pathlib.Path = RESULTS_DIR) -> None:
  """Writes {directory}/{key}.json whole (a .tmp file, then a rename)."""
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / f"{key}.json"
  with open(f"{path}.tmp", "w") as f:
    json.dump(result, f, indent=1)
  os.replace(f"{path}.tmp", path)


def run_plan(runs: list[Run], shard: tuple[int, int], work_dir: str) -> None:
  index, count = shard
  done = load_results()
  for i, run in enumerate(runs):
    if i % count != index or run.key() in done:
      continue
    print(f"[{time.strftime('%H:%M:%S')}] {run.key()}", flush=True)
    result = execute(run, work_dir)
    save_result(run.key(), result)
    last = result["curve"][str(max(int(k) for k in result["curve"]))]
    print(f"  -> test {last['test']:.1f} validation {last['validation']:.1f} "
          f"({result['seconds']:.0f} s)", flush=True)


# ------------------------------------------------------------------------------------------
# Tables.


def _stats(values: list[float]) -> str:
  if len(values) == 1:
    return f"{values[0]:.1f}"
  return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _group(results: dict[str, dict], **fixed) -> dict[tuple, list[dict]]:
  """Results whose run matches `fixed`, grouped by every other field but the seed."""
  groups = {}
  for result in results.values():
    run = result["run"]
    if all(run[k] == v for k, v in fixed.items()):
      key = tuple((k, v) for k, v in sorted(run.items()) if k not in ("seed", *fixed))
      groups.setdefault(key, []).append(result)
  return groups


def accuracy(results: list[dict], step: int, split: str = "test") -> list[float]:
  return [r["curve"][str(step)][split] for r in results
          if split in r["curve"].get(str(step), {})]


def recipe_table(results: dict[str, dict], task: str) -> str:
  """One row per (dropout, learning rate, schedule): test accuracy along the learning curve."""
  groups = _group(results, task=task, method="prompt", init="class_labels", length=20,
                  checkpoint="lm_adapted")
  steps = sorted({int(s) for g in groups.values() for r in g for s in r["curve"]})
  lines = ["| dropout | learning rate | schedule | steps run | seeds | "
           + " | ".join(f"step {s:,}" for s in steps) + " |",
           "|---|---|---|---|---|" + "---|" * len(steps)]
  order = lambda kv: (dict(kv[0])["dropout"], dict(kv[0])["schedule"], dict(kv[0])["learning_rate"])
  for key, group in sorted(groups.items(), key=order):
    run = dict(key)
    cells = [_stats(accuracy(group, s)) if accuracy(group, s) else "" for s in steps]
    lines.append(f"| {run['dropout']:g} | {run['learning_rate']:g} | {run['schedule']} | "
                 f"{run['steps']:,} | {len(group)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _cell(results: dict[str, dict], step: int, **fixed) -> str:
  """mean ± sd (seeds) of the test accuracy at `step` of the runs matching `fixed`."""
  values = [v for group in _group(results, **fixed).values() for v in accuracy(group, step)]
  seeds = {1: " (1 seed)", 2: " (2 seeds)"}.get(len(values), "")
  return _stats(values) + seeds if values else "not run"


def methods_table(results: dict[str, dict]) -> str:
  """Each method beside the baselines: test accuracy (seeds' mean ± sd) per task, at the
  step shown (a longer run's curve gives the earlier steps)."""
  design = json.load(open(MINI_RESULTS)) if MINI_RESULTS.exists() else {}
  recipe = dict(init="class_labels", length=20, dropout=0.0, learning_rate=0.3,
                checkpoint="lm_adapted")
  plain = dict(method="prompt", steps=2000, schedule="constant", **recipe)
  decayed = lambda method, **more: dict(recipe, method=method, steps=1000, schedule="linear",
                                        **more)
  constant = lambda method, steps, **more: dict(recipe, method=method, steps=steps,
                                                schedule="constant", **more)
  dept_rate = DEPT_LOW_RANK_LEARNING_RATE
  rows = [("untrained prompt (its class-label init)", "", 0, plain),
          ("plain prompt", "constant", 1000, plain), ("plain prompt", "constant", 2000, plain),
          ("plain prompt", "decayed", 1000, decayed("prompt")),
          ("residual (methods/residual.gin)", "constant", 600, constant("residual", 600)),
          ("residual (methods/residual.gin)", "decayed", 1000, decayed("residual")),
          ("DePT (methods/dept.gin), low-rank rate 5e-3", "constant", 600,
           constant("dept", 600, low_rank_learning_rate=5e-3)),
          (f"DePT (methods/dept.gin), low-rank rate {dept_rate:g}", "decayed", 1000,
           decayed("dept", low_rank_learning_rate=dept_rate)),
          ("deep (methods/deep.gin)", "constant", 600, constant("deep", 600)),
          ("deep (methods/deep.gin)", "constant", 2000, constant("deep", 2000)),
          ("deep (methods/deep.gin)", "decayed", 1000, decayed("deep")),
          ("plain prompt, 100 rows", "decayed", 1000, decayed("prompt", length=100)),
          ("deep (methods/deep.gin), 100 rows", "decayed", 1000, decayed("deep", length=100)),
          ("model tuning (every weight, Adafactor 1e-3)", "constant", 200,
           dict(method="model_tuning", steps=200, checkpoint="lm_adapted"))]
  lines = ["| method | rate | steps | " + " | ".join(TASKS) + " |",
           "|---|---|---|" + "---|" * len(TASKS),
           "| majority class | | | " + " | ".join(f"{mini.majority_accuracy(t):.1f}"
                                              for t in TASKS) + " |",
           "| prompt design (frozen model, a written instruction) | | | " + " | ".join(
               f"{design[f'{t}/prompt_design']['accuracy']:.1f}" if f"{t}/prompt_design" in design
               else "not run" for t in TASKS) + " |"]
  for name, rate, step, fixed in rows:
    cells = [_cell(results, step, task=task, **fixed) for task in TASKS]
    lines.append(f"| {name} | {rate} | {step:,} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def lm_adaptation_table(results: dict[str, dict]) -> str:
  """Figure 3(c, d): the plain prompt after 1,000 steps on each checkpoint of the mini T5."""
  plain = dict(task="wordnet_topic", method="prompt", init="class_labels", length=20,
               dropout=0.0, learning_rate=0.3, schedule="constant")
  names = {"span_corruption": ("span corruption only", 0),
           "lm_adapted": ("LM-adapted 500 steps (shipped)", 500)}
  for result in results.values():
    checkpoint = os.path.basename(result["run"]["checkpoint"])
    if checkpoint.startswith("lm_adapted_"):
      steps = int(checkpoint.rsplit("_", 1)[1])
      names[checkpoint] = (f"LM-adapted {steps:,} steps", steps)
  lines = ["| frozen model | seeds | untrained prompt (step 0) | 1,000 steps |", "|---|---|---|---|"]
  for checkpoint, (name, _) in sorted(names.items(), key=lambda kv: kv[1][1]):
    runs = {r["run"]["seed"]: r for r in sorted(results.values(), key=lambda r: r["run"]["steps"])
            if os.path.basename(r["run"]["checkpoint"]) == checkpoint
            and all(r["run"][k] == v for k, v in plain.items())}.values()  # one run a seed
    runs = list(runs)
    if runs:
      lines.append(f"| {name} | {len(runs)} | {_stats(accuracy(runs, 0))} | "
                   f"{_stats(accuracy(runs, 1000))} |")
  return "\n".join(lines)


def goal_table(results: dict[str, dict]) -> str:
  """longer_plan and paper_length_plan on wordnet_topic: each change to the decayed recipe
  (20 rows, Adafactor 0.3, 1,000 steps, batch 16, the shipped checkpoint), alone."""
  base = dict(task="wordnet_topic", init="class_labels", length=20, learning_rate=0.3,
              dropout=0.0, steps=1000, batch_size=16, checkpoint="lm_adapted", schedule="linear")
  adapted = os.path.join(LM_ADAPTED_MORE, "lm_adapted_2000")
  changes = [("none (the demo's recipe)", {}), ("learning rate 1.0", dict(learning_rate=1.0)),
             ("2,000 steps", dict(steps=2000)), ("batch 32, learning rate 1.0",
                                                 dict(batch_size=32, learning_rate=1.0)),
             ("the 4x LM-adapted checkpoint", dict(checkpoint=adapted)),
             ("100 rows (the paper's length)", dict(length=100)),
             ("100 rows, learning rate 1.0", dict(length=100, learning_rate=1.0))]
  lines = ["| method | change to the decayed recipe | seeds | test | validation |",
           "|---|---|---|---|---|"]
  for method in ("prompt", "deep"):
    for name, change in changes:
      fixed = {**base, "method": method, **change}
      fixed["checkpoint"] = os.path.basename(fixed["checkpoint"])
      runs = [r for r in results.values()
              if all(os.path.basename(str(r["run"][k])) == str(v) if k == "checkpoint"
                     else r["run"][k] == v for k, v in fixed.items())]
      if runs:
        step = fixed["steps"]
        lines.append(f"| {METHOD_NAMES[method]} | {name} | {len(runs)} | "
                     f"{_stats(accuracy(runs, step))} | "
                     f"{_stats(accuracy(runs, step, 'validation'))} |")
  return "\n".join(lines)


# The recipes the tables compare against: the demo's plain prompt (runs/cpu_demo.gin) and
# model tuning (every weight).
DECAYED_PROMPT = dict(method="prompt", init="class_labels", length=20, dropout=0.0,
                      learning_rate=0.3, steps=1000, schedule="linear", batch_size=16,
                      parameter_scale=False)
MODEL_TUNING = dict(method="model_tuning", dropout=0.0, learning_rate=1e-3, steps=200,
                    batch_size=16)
INIT_NAMES = {"random_uniform": "random uniform (prompts/random_uniform.gin)",
              "sampled_vocab": "sampled vocabulary (prompts/sampled_vocab.gin)",
              "class_labels": "class labels (prompts/class_labels.gin)"}


def paper_table(results: dict[str, dict]) -> str:
  """docs/paper_reproduction.md's: the paper's ablations at the decayed recipe (20 rows,
  class-label init, Adafactor 0.3 decayed to 0 over 1,000 steps, no dropout) on
  wordnet_topic, each row one change; model tuning as in methods_table."""
  base = dict(DECAYED_PROMPT, task="wordnet_topic", checkpoint="lm_adapted")
  rows = [("prompt length (Figure 3(a))", f"{n} row" + "s" * (n > 1), dict(base, length=n))
          for n in PAPER_LENGTHS]
  rows += [("initialisation (Figure 3(b))", name.split(" (")[0], dict(base, init=init))
           for init, name in INIT_NAMES.items()]
  rows += [("pre-training (Figure 3(c))", "span corruption only",
            dict(base, checkpoint="span_corruption")),
           ("pre-training (Figure 3(c))", "span corruption + LM adaptation (shipped)", base),
           ("method (Figure 1)", "prompt tuning, 100 rows", dict(base, length=100)),
           ("method (Figure 1)", "model tuning (every weight, Adafactor 1e-3, 200 steps)",
            dict(MODEL_TUNING, task="wordnet_topic", checkpoint="lm_adapted"))]
  lines = ["| ablation | setting | step 0 | trained |", "|---|---|---|---|"]
  for ablation, setting, fixed in rows:
    cells = [_cell(results, step, **fixed) for step in (0, fixed["steps"])]
    lines.append(f"| {ablation} | {setting} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


# The demo recipe's trained prompt on wordnet_topic, seed 0 (transfer_methods' single plan).
DEMO_PROMPT = SOURCE_PROMPTS_DIR / "wordnet_topic.npy"


def paper_inspection() -> str:
  """The paper's section 7 at the decayed recipe: the nearest tokens of DEMO_PROMPT's rows,
  then how far the rows are from any token: their norms, their nearest tokens' cosine against
  Gaussian rows of the same shape, and each label row's cosine with the label it started as."""
  prompt = np.asarray(prompts_io.load_prompt(str(DEMO_PROMPT)), np.float64)
  embedding = np.asarray(inspect_lib.read_embedding(pretrained.MINI_DIR, mini._config()))
  gaussian = np.random.default_rng(0).normal(size=prompt.shape)
  top5 = [inspect_lib.nearest_tokens(x, embedding, k=5)[1].mean() for x in (prompt, gaussian)]
  labels = inspect_lib.label_ids(registry.class_labels("wordnet_topic"),
                                 pretrained.MINI_VOCABULARY_PATH)
  starts = np.stack([embedding[ids].mean(0) for ids in labels.values()])
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  label_cosines = (unit(prompt[:len(starts)]) * unit(starts)).sum(-1)
  return (paper_ablations.prompt_report(DEMO_PROMPT, embedding, rows=20)
          + f" The rows' mean norm is {np.linalg.norm(prompt, axis=-1).mean():.1f}, a token"
          f" embedding's {np.linalg.norm(embedding, axis=-1).mean():.1f}. Their 5 nearest tokens"
          f" average a cosine of {top5[0]:.3f}; Gaussian random rows of the same shape get"
          f" {top5[1]:.3f}. Rows 0 to {len(starts) - 1}, which started as the labels, now have"
          f" a cosine of {label_cosines.min():.2f} to {label_cosines.max():.2f} with them.")


def knobs_table(results: dict[str, dict]) -> str:
  """The demo's recipe and each of RECIPE_CHANGES alone: test accuracy after training."""
  base = dict(DECAYED_PROMPT, checkpoint="lm_adapted")
  rows = [("none: the untrained prompt (step 0)", base, 0),
          ("none: the demo's recipe (20 rows, no dropout, Adafactor 0.3 decayed to 0 over "
           "1,000 steps, batch 16)", base, base["steps"])]
  rows += [(name, dict(base, **change), dict(base, **change)["steps"])
           for name, change in RECIPE_CHANGES.items()]
  lines = ["| change to the demo's recipe | " + " | ".join(TASKS) + " |",
           "|---|" + "---|" * len(TASKS)]
  for name, fixed, step in rows:
    lines.append(f"| {name} | " + " | ".join(_cell(results, step, **dict(fixed, task=task))
                                             for task in TASKS) + " |")
  return "\n".join(lines)


def init_table(results: dict[str, dict]) -> str:
  """Figure 3(b) at the decayed recipe (20 rows, 1,000 steps): each initialisation's
  untrained (step 0) and trained test accuracy."""
  recipe = dict(DECAYED_PROMPT, checkpoint="lm_adapted")
  lines = ["| initialisation | " + " | ".join(f"{t}: step 0 | {t}: 1,000 steps" for t in TASKS)
           + " |", "|---|" + "---|---|" * len(TASKS)]
  for init, name in INIT_NAMES.items():
    cells = [_cell(results, step, **dict(recipe, task=task, init=init))
             for task in TASKS for step in (0, 1000)]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def decoder_table(results: dict[str, dict]) -> str:
  """The mini decoder beside the mini T5 at the same recipes (decoder_plan)."""
  prompt, tuning = DECAYED_PROMPT, MODEL_TUNING
  rows = [("untrained prompt (class-label init)", 0, prompt),
          ("plain prompt, 20 rows, decayed rate", 1000, prompt),
          ("the same at learning rate 0.01", 1000, dict(prompt, learning_rate=0.01)),
          ("the same with Adafactor's parameter scaling", 1000,
           dict(prompt, parameter_scale=True)),
          ("model tuning (every weight, Adafactor 1e-3)", 200, tuning)]
  models = (("mini T5", "lm_adapted"), ("mini decoder", DECODER))
  lines = ["| run | step | " + " | ".join(f"{t}: {m}" for t in TASKS for m, _ in models)
           + " |", "|---|---|" + "---|" * (len(TASKS) * len(models)),
           "| majority class | | " + " | ".join(f"{mini.majority_accuracy(t):.1f}"
                                              for t in TASKS for _ in models) + " |"]
  for name, step, fixed in rows:
    cells = [_cell(results, step, task=task, checkpoint=checkpoint, **fixed)
             for task in TASKS for _, checkpoint in models]
    lines.append(f"| {name} | {step:,} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def costs_table(costs: dict[str, dict]) -> str:
  if not costs:
    return ("Not measured yet: run `python -m benchmarks.small_scale_methods --costs "
            "--draw_only`.")
  lines = ["| method | trainable parameters | served parameters (prompt file) | train step "
           "(ms, median of 20) | XLA temporaries of the step (MiB) |", "|---|---|---|---|---|"]
  served = {"prompt": "5,120 [20, 256]", "residual": "5,120 [20, 256]",
            "deep": "20,480 [4, 20, 256]", "dept": "all of it (prompt + A + B)",
            "model_tuning": "10,491,648 (a whole model)"}
  for method in METHODS:
    if method in costs:
      c = costs[method]
      lines.append(f"| {METHOD_NAMES[method]} | {c['trainable_parameters']:,} | "
                   f"{served[method]} | {c['step_ms']:.0f} | {c['temp_mib']:.1f} |")
  return "\n".join(lines)


def measure_costs() -> dict[str, dict]:
  """costs() of each method on wordnet_topic at the chosen recipe, kept in COSTS."""
  out = {}
  for method in METHODS:
    run = Run(method=method, learning_rate=1e-3 if method == "model_tuning" else 0.3)
    out[method] = costs(run)
    print(method, out[method], flush=True)
  with open(COSTS, "w") as f:
    json.dump(out, f, indent=1)
  return out


def curves(results: dict[str, dict], task: str, **fixed) -> tuple[list[int], list[float],
                                                                   list[float]]:
  """The test learning curve of the runs matching `fixed`: steps, seeds' means and sds
  (the sd is 0 for a single seed), at the steps every one of those runs recorded."""
  runs = [r for g in _group(results, task=task, **fixed).values() for r in g]
  steps = sorted(set.intersection(*({int(s) for s in r["curve"]} for r in runs))) if runs else []
  values = [accuracy(runs, s) for s in steps]
  return (steps, [statistics.mean(v) for v in values],
          [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values])


COLORS = {"prompt": "tab:blue", "residual": "tab:orange", "deep": "tab:green", "dept": "tab:red"}


def plot_curves(results: dict[str, dict], path: pathlib.Path) -> bool:
  """One panel per task: each method's test accuracy along its decayed 1,000-step runs
  (20 rows; dashed: 100), mean of the seeds ± sd shaded, beside model tuning's and the
  majority class's accuracy.
  False (and nothing written) without matplotlib."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    print("matplotlib is not installed (pip install matplotlib); no plot.")
    return False
  recipe = dict(init="class_labels", length=20, dropout=0.0, learning_rate=0.3, steps=1000,
                schedule="linear", checkpoint="lm_adapted")
  fig, axes = plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 3.8), sharey=True)
  for ax, task in zip(axes, TASKS):
    kinds = [(m, 20) for m in ("prompt", "residual", "deep", "dept")] + [("prompt", 100),
                                                                          ("deep", 100)]
    for method, length in kinds:
      steps, mean, sd = curves(results, task, method=method, **dict(recipe, length=length))
      if steps:
        label = METHOD_NAMES[method].split(" (")[0] + (f", {length} rows" if length != 20 else "")
        color = COLORS[method]
        ax.plot(steps, mean, marker="o", ms=3, label=label, color=color,
                ls="--" if length != 20 else "-")
        ax.fill_between(steps, np.subtract(mean, sd), np.add(mean, sd), color=color, alpha=0.15)
    tuned = [v for g in _group(results, task=task, method="model_tuning",
                               checkpoint="lm_adapted").values()
             for v in accuracy(g, 200)]
    if tuned:
      ax.axhline(statistics.mean(tuned), color="k", ls="--", lw=1, label="model tuning")
    ax.axhline(mini.majority_accuracy(task), color="grey", ls=":", lw=1, label="majority class")
    ax.set(title=task, xlabel="training step (rate decayed linearly to 0 at 1,000)")
  axes[0].set_ylabel("test accuracy (%)")
  axes[0].legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def result_tables(results: dict[str, dict]) -> dict[str, str]:
  """docs/methods.md's tables of the stored runs, by their block names."""
  blocks = {f"recipe_{task}": recipe_table(results, task) for task in TASKS}
  blocks["methods_results"] = methods_table(results)
  blocks["lm_adaptation"] = lm_adaptation_table(results)
  blocks["topic_goal"] = goal_table(results)
  blocks["init_results"] = init_table(results)
  blocks["recipe_knobs"] = knobs_table(results)
  blocks["decoder_results"] = decoder_table(results)
  return blocks


def plan_parser(doc: str, plans, tasks, work_dir: str) -> argparse.ArgumentParser:
  """The arguments of a resumable benchmark of plans: --plan, --seeds, --tasks, --shard,
  --work_dir, --draw_only, --no_docs."""
  parser = argparse.ArgumentParser(description=doc.split("\n")[0])
  parser.add_argument("--plan", nargs="+", default=[], choices=list(plans))
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  parser.add_argument("--tasks", nargs="+", default=list(tasks), help="run only these tasks")
  parser.add_argument("--shard", default="0/1", help="i/n: run every n-th missing run from i")
  parser.add_argument("--work_dir", default=work_dir)
  parser.add_argument("--draw_only", action="store_true", help="only print the tables")
  parser.add_argument("--no_docs", action="store_true", help="print, do not write docs")
  return parser


def parse_args(argv=None) -> argparse.Namespace:
  parser = plan_parser(__doc__, sorted(PLANS), TASKS, "/tmp/small_scale_methods")
  parser.add_argument("--methods", nargs="+", default=list(METHODS), help="and these methods")
  parser.add_argument("--costs", action="store_true",
                      help="measure each method's parameters, step time and memory first")
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  shard = tuple(int(x) for x in args.shard.split("/"))
  if not args.draw_only:
    for name in args.plan:
      runs = [r for r in PLANS[name](args.seeds)
              if r.task in args.tasks and r.method in args.methods]
      run_plan(runs, shard, args.work_dir)
  costs_data = measure_costs() if args.costs else (
      json.load(open(COSTS)) if COSTS.exists() else {})
  results = load_results()
  blocks = {**result_tables(results), "methods_costs": costs_table(costs_data)}
  seconds = sum(r["seconds"] for r in results.values())
  blocks["methods_setting"] = (
      f"{machine.describe()}; {len(results)} runs, {seconds / 60:.0f} min of runs in all "
      "(two to five runs shared the two cores at a time, so one run alone is faster).")
  docs = {name: DOC for name in blocks}
  blocks["paper_corrected"] = paper_table(results)
  docs["paper_corrected"] = PAPER_DOC
  if DEMO_PROMPT.exists():
    blocks["paper_corrected_inspection"] = paper_inspection()
    docs["paper_corrected_inspection"] = PAPER_DOC
  for name, block in blocks.items():
    print(f"\n{name}\n{block}")
    if not args.no_docs and docs[name].exists():
      machine.write_docs_block(name, block, docs[name])
  if not args.no_docs:
    plot_curves(results, PLOT)


if __name__ == "__main__":
  sys.exit(main())
