"""XLA's memory analysis of the compiled train step: prompt tuning vs. model tuning.

    python -m benchmarks.memory_analysis [--configs t5_1_1_small t5_1_1_base] [--write_docs]

Compiles (never runs) `train.train_step` exactly as the training job does (jit, state
donated) on abstract inputs, so no weights are materialised, and prints for each
(mode, optimizer) the bytes XLA plans for:

  arguments    everything passed in; split below (from the input trees) into frozen weights,
               trainable leaves, optimizer state and batch
  temporaries  XLA's temp buffer (activations kept for backprop, gradients, optimizer update)
  outputs      new state + metrics; `alias` is the part written in place into donated inputs
  total        arguments + temporaries + outputs - alias: what the step needs live

Rows: prompt tuning (inputs + prompt positions through the encoder), model tuning on the same
inputs, and model tuning with inputs lengthened by the prompt length, so its encoder runs over
as many positions as the prompted one (the like-for-like row for the frozen-weight saving).
"""

import argparse
import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp

from benchmarks import machine
from prompt_tuning import model as model_lib
from prompt_tuning import job_io, optim, train
from prompt_tuning.t5 import config as t5_config

OPTIMIZERS = {"adafactor": optim.adafactor, "adam": optim.adam}


def nbytes(tree) -> int:
  """Total bytes of the array (or ShapeDtypeStruct) leaves of `tree`."""
  return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def batch_spec(batch_size: int, inputs: int, targets: int) -> dict:
  """Abstract int32 batch as the feature converter makes it (job_io's T5 batch shapes)."""
  return job_io.EncoderDecoder().batch_shapes(batch_size,
                                              {"inputs": inputs, "targets": targets})


def abstract_step_inputs(model, optimizer, regex: str, batch: dict) -> tuple:
  """(state, frozen, batch, seed) as ShapeDtypeStructs, built the way `train.train` builds
  the real ones (`optim.partition`, `train._initial_state`)."""
  trainable, frozen = optim.partition(model.abstract_params(), regex)
  state = jax.eval_shape(functools.partial(train._initial_state, optimizer), trainable)
  seed = jax.eval_shape(jax.random.PRNGKey, 0)
  return state, frozen, batch, seed


def compile_step(model, optimizer, inputs: tuple):
  """The train step compiled as in `train.train`: jit with the state (argument 0) donated."""
  step = jax.jit(functools.partial(train.train_step, model, optimizer), donate_argnums=0)
  return step.lower(*inputs).compile()


@dataclasses.dataclass
class Row:
  """One (mode, optimizer) measurement, in bytes; compile_s is lowering + compilation."""
  config: str
  mode: str
  optimizer: str
  encoder_positions: int
  frozen: int
  trainable: int
  opt_state: int
  batch: int
  arguments: int
  temporaries: int
  outputs: int
  alias: int
  compile_s: float

  @property
  def total(self) -> int:
    return self.arguments + self.temporaries + self.outputs - self.alias


def measure(config_name: str, mode: str, opt_name: str, batch_size: int, inputs: int,
            targets: int, prompt_length: int) -> Row:
  """Compiles one step and reads its memory analysis; `mode` is 'prompt', 'model' or
  'model_long' (model tuning with inputs + prompt_length input tokens)."""
  config = t5_config.get_config(config_name, dtype="float32")
  optimizer = OPTIMIZERS[opt_name]()
  if mode == "prompt":
    model = model_lib.PromptedT5Model(config, prompt_length=prompt_length)
    regex = optim.PROMPT_REGEX
  else:
    model, regex = model_lib.T5Model(config), optim.ALL_REGEX
    inputs += prompt_length if mode == "model_long" else 0
  state, frozen, batch, seed = abstract_step_inputs(
      model, optimizer, regex, batch_spec(batch_size, inputs, targets))
  start = time.perf_counter()
  stats = compile_step(model, optimizer, (state, frozen, batch, seed)).memory_analysis()
  elapsed = time.perf_counter() - start
  positions = inputs + (prompt_length if mode == "prompt" else 0)
  return Row(config_name, mode, opt_name, positions, nbytes(frozen), nbytes(state["trainable"]),
             nbytes(state["opt_state"]), nbytes(batch), stats.argument_size_in_bytes,
             stats.temp_size_in_bytes, stats.output_size_in_bytes, stats.alias_size_in_bytes,
             elapsed)


def mib(n: int) -> str:
  """Bytes as MiB; under 1 MiB as KiB, so small inputs do not read as zero."""
  if n == 0:
    return "0"
  return f"{n / 2**20:,.1f}" if abs(n) >= 2**20 else f"{n / 2**10:,.1f} KiB"


def expected_saving(config_name: str, opt_name: str) -> int:
  """Bytes prompt tuning should not need, from the trees alone: a gradient per frozen weight
  plus the optimizer's state for it (eval_shape of optimizer.init)."""
  tree = model_lib.T5Model(t5_config.get_config(config_name)).abstract_params()
  return nbytes(tree) + nbytes(jax.eval_shape(OPTIMIZERS[opt_name]().init, tree))


def savings_table(rows: list[Row]) -> str:
  """Per (config, optimizer): expected saving vs. measured totals, model minus prompt."""
  by_key = {(r.config, r.optimizer, r.mode): r for r in rows}
  head = ("| config | optimizer | expected: frozen gradients + their optimizer state | "
          "model tuning, same encoder positions, minus prompt tuning | "
          "model tuning, same inputs, minus prompt tuning |")
  lines = [head, "|---|---|---|---|---|"]
  for config, opt_name in dict.fromkeys((r.config, r.optimizer) for r in rows):
    prompt = by_key[config, opt_name, "prompt"].total
    long, same = (by_key[config, opt_name, m].total for m in ("model_long", "model"))
    lines.append(f"| {config} | {opt_name} | {mib(expected_saving(config, opt_name))} | "
                 f"{mib(long - prompt)} | {mib(same - prompt)} |")
  return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
  """The rows as a markdown table in MiB."""
  head = ("| config | mode | optimizer | encoder positions | frozen weights | trainable | "
          "optimizer state | batch | arguments (XLA) | temporaries | outputs | alias | "
          "**total** | compile s |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in rows:
    lines.append(
        f"| {r.config} | {r.mode} | {r.optimizer} | {r.encoder_positions} | {mib(r.frozen)} | "
        f"{mib(r.trainable)} | {mib(r.opt_state)} | {mib(r.batch)} | {mib(r.arguments)} | "
        f"{mib(r.temporaries)} | {mib(r.outputs)} | {mib(r.alias)} | **{mib(r.total)}** | "
        f"{r.compile_s:.1f} |")
  return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", nargs="+", default=["t5_1_1_small"],
                      choices=sorted(t5_config.CONFIGS))
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--inputs", type=int, default=256, help="encoder input tokens")
  parser.add_argument("--targets", type=int, default=16, help="decoder target tokens")
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS),
                      choices=list(OPTIMIZERS))
  parser.add_argument("--write_docs", action="store_true",
                      help=f"also write the table into {machine.DOCS}")
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  rows = []
  for name in args.configs:
    for opt_name in args.optimizers:
      for mode in ("prompt", "model", "model_long"):
        rows.append(measure(name, mode, opt_name, args.batch_size, args.inputs, args.targets,
                            args.prompt_length))
        print(f"{name} {mode} {opt_name}: total {mib(rows[-1].total)} MiB", flush=True)
  settings = (f"float32, batch {args.batch_size}, inputs {args.inputs}, targets "
              f"{args.targets}, prompt {args.prompt_length}; jax {jax.__version__} "
              f"({jax.default_backend()}); {machine.describe()}.")
  table = f"{markdown_table(rows)}\n\nSavings (MiB):\n\n{savings_table(rows)}"
  print(settings, table, sep="\n\n")
  if args.write_docs:
    machine.write_docs_block("memory_analysis", f"{settings}\n\n{table}")


if __name__ == "__main__":
  main()
