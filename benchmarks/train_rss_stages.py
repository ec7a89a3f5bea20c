"""Resident memory of the prompt-tuning train step, stage by stage, in one fresh process.

    python -m benchmarks.train_rss_stages [--config t5_1_1_small] [--batch_size 8]
        [--inputs 128] [--targets 16] [--prompt_length 100] [--steps 5] [--write_docs]

The library's own path: random weights (`PromptedT5Model.random_params`), the step compiled by
`train.compile_step`, then steps. Each row gives the peak RSS so far (`ru_maxrss`), what the
stage added to it, and the RSS at its end. Run it as its own process: the first rows are the
interpreter and the imports.
"""

import argparse
import os
import sys

from benchmarks import machine
from benchmarks.step_time_vs_peft import (CLIP, DECAY, LR, WEIGHT_DECAY, add_shape_flags,
                                          make_batch, peak_rss_mib)

MIB = 2**20


def rss_mib() -> tuple[float, float]:
  """(peak, current) resident set of this process, MiB (Linux)."""
  with open("/proc/self/statm") as f:
    current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
  return peak_rss_mib(), current


def measure(args) -> tuple[list[tuple[str, float, float]], dict]:
  """([(stage, peak MiB, current MiB)], XLA's memory analysis of the step in MiB)."""
  stages = [("python and numpy", *rss_mib())]
  import jax  # pylint: disable=import-outside-toplevel
  stages.append(("import jax", *rss_mib()))
  from prompt_tuning import model as model_lib  # pylint: disable=import-outside-toplevel
  from prompt_tuning import optim, train  # pylint: disable=import-outside-toplevel
  from prompt_tuning.t5 import config as t5_config  # pylint: disable=import-outside-toplevel
  stages.append(("import `prompt_tuning.train` (TensorFlow through seqio)", *rss_mib()))

  config = t5_config.get_config(args.config, dtype="float32")
  model = model_lib.PromptedT5Model(config, prompt_length=args.prompt_length)
  params = jax.block_until_ready(model.random_params(jax.random.PRNGKey(0)))
  weights = sum(x.nbytes for x in jax.tree.leaves(params)) / MIB
  stages.append((f"random weights ({weights:,.0f} MiB)", *rss_mib()))

  trainable, frozen = optim.partition(params, optim.PROMPT_REGEX)
  del params
  optimizer = optim.adafactor(learning_rate=LR, decay_rate=DECAY,
                              weight_decay_rate=WEIGHT_DECAY, clipping_threshold=CLIP)
  state = train._initial_state(optimizer, trainable)  # pylint: disable=protected-access
  args.arch = {"vocab_size": config.vocab_size}
  batch, seed = jax.device_put(make_batch(args)), jax.random.PRNGKey(1)
  step = train.compile_step(model, optimizer, state, frozen, batch, seed)
  stages.append(("compile the train step (`train.compile_step`)", *rss_mib()))

  for _ in range(args.steps):
    state, metrics = step(state, frozen, batch, seed)
    jax.block_until_ready(metrics)
  stages.append((f"{args.steps} train steps", *rss_mib()))
  analysis = step.memory_analysis()
  xla = {"arguments": analysis.argument_size_in_bytes / MIB,
         "temporaries": analysis.temp_size_in_bytes / MIB}
  return stages, xla


def markdown(stages, xla, args) -> str:
  import jax  # pylint: disable=import-outside-toplevel
  lines = [f"{args.config}, prompt tuning, float32, batch {args.batch_size}, inputs "
           f"{args.inputs} + prompt {args.prompt_length}, targets {args.targets}, Adafactor. "
           f"jax {jax.__version__}; {machine.describe()}. XLA's memory analysis of the step: "
           f"{xla['arguments']:,.0f} MiB of arguments, {xla['temporaries']:,.0f} MiB of "
           "temporaries.", "",
           "| stage | peak RSS MiB | peak added | RSS at its end |", "|---|---|---|---|"]
  previous = 0.0
  for name, peak, current in stages:
    lines.append(f"| {name} | {peak:,.0f} | +{peak - previous:,.0f} | {current:,.0f} |")
    previous = peak
  imports = stages[2][1]  # the peak once `prompt_tuning.train` is imported
  lines.append(f"\nPeak above the imports: {stages[-1][1] - imports:,.0f} MiB.")
  return "\n".join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_shape_flags(parser, targets=16, prompt_length=100)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--write_docs", action="store_true",
                      help=f"write the table into {machine.DOCS}")
  args = parser.parse_args(argv)
  text = markdown(*measure(args), args)
  print(text)
  if args.write_docs:
    machine.write_docs_block("train_rss_stages", text)


if __name__ == "__main__":
  main(sys.argv[1:])
