"""A compile-only memory plan of prompt tuning on TPU pod slices: bytes per device.

    python -m benchmarks.pod_memory_plan [--config t5_1_1_xxl] [--devices 16 32 64]
        [--partitions 8 16] [--batch_size 32] [--inputs 512] [--prompt_length 100]
        [--targets 8] [--write_docs]

Compiles (never runs) the prompt-tuning train step (`train.train_step`, jitted with the state
donated as `train.train` does; Adafactor, PROMPT_REGEX, bfloat16 activations) for a simulated
CPU mesh of N devices, for every NUM_PARTITIONS x REMAT on/off x FROZEN_DTYPE float32/bfloat16.
`--config` names a T5 (t5/config.py, a PromptedT5Model: encoder inputs, decoder targets) or a
decoder-only LM (causal_lm/config.py, e.g. llama3_8b, a PromptedDecoderModel whose rows are
`--inputs` + `--targets` slots, BOS first and the prompt after it); the batch's shapes come
from `job_io.for_model(model)`, the object the jobs read batches through.
`--xla_force_host_platform_device_count=N` must be set before jax is imported, so each device
count runs in its own subprocess (a worker), which prints one JSON line per configuration; this
process collects them and prints the tables. The inputs are abstract: ShapeDtypeStructs placed
by the library's rules (frozen leaves in FROZEN_DTYPE and split over 'model', the prompt and
its optimizer state replicated, the batch split over 'data'), so no weight is materialised.

Every byte figure is per device: an SPMD-partitioned executable is one per-device program and
`memory_analysis()` describes that program. Each row also carries the per-device argument
bytes computed from the input shardings (`arguments_from_shardings`), which XLA's figure
matches to within the few bytes of hyperparameters JAX forwards without passing them in.

`--cpu_compile plan` (the default) compiles with two XLA:CPU flags, because XLA:CPU's default
pipeline hides what REMAT saves (docs/performance.md, "Memory at pod scale"): it deletes JAX's
optimization barriers before scheduling, so its concurrency-optimised scheduler moves each
layer's recomputation back into the forward pass and every recomputed activation is held until
the backward pass. `--xla_disable_hlo_passes=cse_barrier_expander` keeps the barriers through
scheduling (XLA:GPU removes them only after scheduling), and
`--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED` orders the program for memory.
`--cpu_compile default` gives XLA:CPU's defaults, for comparison.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec

from benchmarks import machine
from prompt_tuning import model as model_lib
from prompt_tuning import decoder_model, optim, partitioning
from prompt_tuning.causal_lm import config as decoder_config
from prompt_tuning.t5 import config as t5_config

MEMORY_SCHEDULER = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"
# Named explicitly: `import prompt_tuning` picks the memory-optimised scheduler otherwise.
DEFAULT_SCHEDULER = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_DEFAULT"
KEEP_BARRIERS = "--xla_disable_hlo_passes=cse_barrier_expander"
CPU_COMPILES = {
    "plan": f"{MEMORY_SCHEDULER} {KEEP_BARRIERS}",
    "memory_scheduler": MEMORY_SCHEDULER,
    "keep_barriers": f"{DEFAULT_SCHEDULER} {KEEP_BARRIERS}",
    "default": DEFAULT_SCHEDULER,
}
# (TPU, HBM GiB of one JAX device, the slice's name for N devices). v3: a device is one
# TensorCore (a chip has 2 and 32 GiB) and v3-N counts cores; v4: a device is one chip (2
# TensorCores as one megacore device, 32 GiB) and v4-M counts cores, so N chips are v4-2N;
# v5e: a device is one chip (1 TensorCore, 16 GiB) and v5litepod-N counts chips.
TPUS = (("v3", 16, lambda n: f"v3-{n}"),
        ("v4", 32, lambda n: f"v4-{2 * n}"),
        ("v5e", 16, lambda n: f"v5litepod-{n}"))


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="t5_1_1_xxl",
                      choices=sorted(t5_config.CONFIGS) + sorted(decoder_config.CONFIGS),
                      help="a T5 or a decoder-only (causal_lm) named config")
  parser.add_argument("--devices", type=int, nargs="+", default=[16, 32, 64],
                      help="simulated device counts, one worker subprocess each")
  parser.add_argument("--partitions", type=int, nargs="+", default=[8, 16],
                      help="NUM_PARTITIONS values (size of the 'model' mesh axis)")
  parser.add_argument("--batch_size", type=int, default=32, help="global batch")
  parser.add_argument("--inputs", type=int, default=512,
                      help="encoder input tokens; a decoder row's input slots (BOS counted)")
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--targets", type=int, default=8,
                      help="target tokens (EOS counted); a decoder row has inputs + targets")
  parser.add_argument("--activation_dtype", default="bfloat16")
  parser.add_argument("--remat", nargs="+", choices=["off", "on"], default=["off", "on"],
                      help="REMAT settings to compile")
  parser.add_argument("--frozen_dtypes", nargs="+", choices=["float32", "bfloat16"],
                      default=["float32", "bfloat16"], help="FROZEN_DTYPE settings to compile")
  parser.add_argument("--cpu_compile", choices=list(CPU_COMPILES), default="plan",
                      help="XLA:CPU flags of the compiles (see the module doc)")
  parser.add_argument("--write_docs", action="store_true",
                      help=f"also write the tables into {machine.DOCS}")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  return parser.parse_args(argv)


# ---- the worker: one device count, in a process whose XLA_FLAGS set it ---------------------
# It alone imports memory_analysis, job_io and job_utils (they import TensorFlow, through the
# train job's input pipeline), so the parent stays light.


def skip_reason(devices: int, partitions: int, batch_size: int) -> str | None:
  """Why a (devices, NUM_PARTITIONS) combination cannot run, or None."""
  if partitions < 1 or devices % partitions:
    return f"NUM_PARTITIONS={partitions} does not divide {devices} devices"
  data = devices // partitions
  if batch_size % data:
    return f"batch {batch_size} is not divisible by the {data} data-parallel replicas"
  return None


def device_bytes(tree) -> int:
  """Bytes one device holds of the ShapeDtypeStruct leaves of `tree`, by their shardings."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(tree))


def sharded_step_inputs(model, inputs: tuple, mesh, rules, regex: str) -> tuple:
  """`memory_analysis.abstract_step_inputs`' (state, frozen, batch, seed), placed as
  `train.train` places them: parameters by the rules (`job_utils.param_shardings`; frozen
  floating leaves in model.frozen_dtype, as `job_utils.store_frozen` casts them), the step
  and optimizer state replicated (`train._initial_state` of a replicated prompt), the batch
  over 'data' (`partitioning.batch_sharding`), the seed replicated."""
  from prompt_tuning import job_utils

  state, frozen, batch, seed = inputs
  trainable_sh, frozen_sh = optim.partition(job_utils.param_shardings(model, mesh, rules), regex)
  replicated = NamedSharding(mesh, PartitionSpec())
  place = lambda x, s, dtype=None: jax.ShapeDtypeStruct(x.shape, dtype or x.dtype, sharding=s)
  stored = lambda x: model.frozen_dtype if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype
  state = {**jax.tree.map(lambda x: place(x, replicated), state),
           "trainable": jax.tree.map(place, state["trainable"], trainable_sh)}
  frozen = jax.tree.map(lambda x, s: place(x, s, stored(x)), frozen, frozen_sh)
  batch = jax.tree.map(lambda x: place(x, partitioning.batch_sharding(mesh)), batch)
  return state, frozen, batch, place(seed, replicated)


def replicated_leaves(model, mesh, rules) -> list[str]:
  """Parameters a rule puts on a mesh axis that does not divide them: the library replicates
  that dimension instead (with a warning), so they are not split as the rules intend."""
  intended = partitioning.logical_to_sharding(model.param_axes(), mesh, rules)
  actual = partitioning.logical_to_sharding(model.param_axes(), mesh, rules,
                                            model.abstract_params())
  differs = jax.tree.map(lambda a, b: a.spec != b.spec, intended, actual)
  return sorted(path for path, d in optim.flat(differs).items() if d)


def is_decoder(config: str) -> bool:
  """Whether `config` names a decoder-only LM (causal_lm/config.py) rather than a T5."""
  return config in decoder_config.CONFIGS


# Token ids of the decoder's rows: a tokenizer that adds BOS (Llama 3's does), so the prompt
# sits after it. Which ids they are changes no shape, so no byte of the plan.
DECODER_BOS_ID, DECODER_EOS_ID = 1, 2


def make_model(args, remat: bool, frozen_dtype: str):
  """The prompted model of `args.config`: a PromptedT5Model or a PromptedDecoderModel."""
  settings = dict(activation_dtype=args.activation_dtype, remat=remat,
                  frozen_dtype=frozen_dtype)
  if is_decoder(args.config):
    return decoder_model.PromptedDecoderModel(
        decoder_config.get_config(args.config), prompt_length=args.prompt_length,
        bos_id=DECODER_BOS_ID, eos_id=DECODER_EOS_ID, **settings)
  return model_lib.PromptedT5Model(t5_config.get_config(args.config),
                                   prompt_length=args.prompt_length, **settings)


def fits(total: int, devices: int) -> dict[str, bool]:
  """{slice name: total per-device bytes <= that TPU's HBM per device}."""
  return {name(devices): total <= hbm * 2**30 for _, hbm, name in TPUS}


def measure(args, devices: int, partitions: int, remat: bool, frozen_dtype: str) -> dict:
  """Compiles one configuration for this process's devices; returns its JSON row."""
  from benchmarks import memory_analysis
  from prompt_tuning import job_io

  mesh = partitioning.make_mesh(partitions)
  rules = partitioning.DEFAULT_RULES
  model = make_model(args, remat, frozen_dtype)
  optimizer, regex = optim.adafactor(), optim.PROMPT_REGEX
  batch = job_io.for_model(model).batch_shapes(
      args.batch_size, {"inputs": args.inputs, "targets": args.targets})
  abstract = memory_analysis.abstract_step_inputs(model, optimizer, regex, batch)
  state, frozen, batch, seed = sharded_step_inputs(model, abstract, mesh, rules, regex)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):  # as train.train runs the step
    start = time.perf_counter()
    compiled = memory_analysis.compile_step(model, optimizer, (state, frozen, batch, seed))
    compile_s = time.perf_counter() - start
  stats = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  total = (stats.argument_size_in_bytes + stats.temp_size_in_bytes
           + stats.output_size_in_bytes - stats.alias_size_in_bytes)
  data = devices // partitions
  return {
      "config": args.config, "devices": devices, "partitions": partitions, "data": data,
      "batch_per_device": args.batch_size // data, "remat": remat,
      "frozen_dtype": frozen_dtype, "activation_dtype": args.activation_dtype,
      "cpu_compile": args.cpu_compile,
      "frozen_params": sum(math.prod(x.shape) for x in jax.tree.leaves(frozen)),
      "frozen_global": memory_analysis.nbytes(frozen),
      # Per device, from the input shardings:
      "frozen": device_bytes(frozen), "trainable": device_bytes(state["trainable"]),
      "opt_state": device_bytes(state["opt_state"]), "batch": device_bytes(batch),
      "arguments_from_shardings": device_bytes((state, frozen, batch, seed)),
      # Per device, XLA's memory analysis of the partitioned program:
      "arguments": stats.argument_size_in_bytes, "temporaries": stats.temp_size_in_bytes,
      "outputs": stats.output_size_in_bytes, "alias": stats.alias_size_in_bytes,
      "total": total, "gflop": cost.get("flops", float("nan")) / 1e9,
      "compile_s": round(compile_s, 2),
      "replicated": replicated_leaves(model, mesh, rules),
      "fits": fits(total, devices),
  }


def worker(args) -> None:
  """One JSON line per (NUM_PARTITIONS, REMAT, FROZEN_DTYPE) on this process's devices."""
  (devices,) = args.devices
  if jax.device_count() != devices:
    raise RuntimeError(f"The worker expected {devices} devices but has "
                       f"{jax.device_count()}; it needs XLA_FLAGS="
                       f"--xla_force_host_platform_device_count={devices}.")
  for partitions in args.partitions:
    reason = skip_reason(devices, partitions, args.batch_size)
    if reason:
      print(json.dumps({"config": args.config, "devices": devices, "partitions": partitions,
                        "skipped": reason}), flush=True)
      continue
    for remat in args.remat:
      for frozen_dtype in args.frozen_dtypes:
        print(json.dumps(measure(args, devices, partitions, remat == "on", frozen_dtype)),
              flush=True)


# ---- the parent: one worker subprocess per device count ------------------------------------


def worker_command(args, devices: int) -> list[str]:
  flags = ["--config", args.config, "--devices", str(devices),
           "--partitions", *map(str, args.partitions), "--batch_size", str(args.batch_size),
           "--inputs", str(args.inputs), "--prompt_length", str(args.prompt_length),
           "--targets", str(args.targets), "--activation_dtype", args.activation_dtype,
           "--remat", *args.remat, "--frozen_dtypes", *args.frozen_dtypes,
           "--cpu_compile", args.cpu_compile]
  return [sys.executable, "-m", "benchmarks.pod_memory_plan", "--worker", *flags]


def worker_env(devices: int, cpu_compile: str) -> dict:
  """The environment's XLA_FLAGS (e.g. dump flags), then the plan's, then the device count."""
  xla_flags = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), CPU_COMPILES[cpu_compile],
                                   f"--xla_force_host_platform_device_count={devices}") if f)
  return {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu",
          "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}


def run_worker(args, devices: int, echo: bool = True) -> tuple[list[dict], dict]:
  """Runs the worker for `devices`; returns (its rows, {'devices', 'wall_s', 'peak_rss_mib'}).
  Its JSON lines are echoed as they arrive."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  start = time.perf_counter()
  proc = subprocess.Popen(worker_command(args, devices), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=repo,
                          env=worker_env(devices, args.cpu_compile))
  rows = []
  for line in proc.stdout:  # stderr is small (absl warnings); read after
    if line.startswith("{"):
      rows.append(json.loads(line))
      if echo:
        print(line, end="", flush=True)
  stderr = proc.stderr.read()
  _, status, usage = os.wait4(proc.pid, 0)  # wait4: the worker's own peak RSS
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode:
    raise RuntimeError(f"The worker for {devices} devices failed ({proc.returncode}):\n"
                       f"{stderr[-5000:]}")
  return rows, {"devices": devices, "wall_s": time.perf_counter() - start,
                "peak_rss_mib": usage.ru_maxrss / 1024}  # ru_maxrss: KiB on Linux


def mib(n: int) -> str:
  """Bytes as MiB (as memory_analysis.mib, without importing it: it imports TensorFlow)."""
  if n == 0:
    return "0"
  return f"{n / 2**20:,.1f}" if abs(n) >= 2**20 else f"{n / 2**10:,.1f} KiB"


def markdown_table(rows: list[dict]) -> str:
  """The rows in MiB per device; skipped combinations listed below."""
  head = ("| devices | NUM_PARTITIONS | data replicas | examples / device | REMAT | "
          "FROZEN_DTYPE | frozen / device | arguments | temporaries | outputs | alias | "
          "**total** | GFLOP / device | compile s |")
  lines, notes = [head, "|" + "---|" * (head.count("|") - 1)], []
  for r in rows:
    if "skipped" in r:
      notes.append(f"- {r['devices']} devices, NUM_PARTITIONS={r['partitions']}: skipped, "
                   f"{r['skipped']}.")
      continue
    gflop = f"{r['gflop']:,.0f}" if r["gflop"] >= 100 else f"{r['gflop']:.2f}"
    lines.append(
        f"| {r['devices']} | {r['partitions']} | {r['data']} | {r['batch_per_device']} | "
        f"{'on' if r['remat'] else 'off'} | {r['frozen_dtype']} | {mib(r['frozen'])} | "
        f"{mib(r['arguments'])} | {mib(r['temporaries'])} | {mib(r['outputs'])} | "
        f"{mib(r['alias'])} | **{mib(r['total'])}** | {gflop} | {r['compile_s']:.1f} |")
  replicated = sorted({p for r in rows for p in r.get("replicated", ())})
  if replicated:
    more = f" and {len(replicated) - 4} more" if len(replicated) > 4 else ""
    notes.append(f"- {len(replicated)} parameters not split as the rules intend (the 'model' "
                 "axis does not divide a dimension, which is replicated instead): "
                 f"{', '.join(replicated[:4])}{more}.")
  return "\n".join(lines + ([""] + notes if notes else []))


def fits_table(rows: list[dict]) -> str:
  """Which slice holds each configuration: total bytes per device <= HBM per device."""
  head = ("| devices | NUM_PARTITIONS | REMAT | FROZEN_DTYPE | total / device GiB | "
          + " | ".join(f"{tpu} ({hbm} GiB / device)" for tpu, hbm, _ in TPUS) + " |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in rows:
    if "skipped" not in r:
      cells = [f"{name(r['devices'])}: {'fits' if r['fits'][name(r['devices'])] else 'no'}"
               for _, _, name in TPUS]
      lines.append(f"| {r['devices']} | {r['partitions']} | {'on' if r['remat'] else 'off'} | "
                   f"{r['frozen_dtype']} | {r['total'] / 2**30:,.2f} | {' | '.join(cells)} |")
  return "\n".join(lines)


def report(args, rows: list[dict], workers: list[dict]) -> str:
  """Settings line, the per-device table and the fits table."""
  if is_decoder(args.config):
    lengths = (f"rows of inputs {args.inputs} + targets {args.targets} = "
               f"{args.inputs + args.targets} slots (BOS counted in the inputs, EOS in the "
               f"targets) + prompt {args.prompt_length} after BOS")
  else:
    lengths = (f"inputs {args.inputs} + prompt {args.prompt_length}, targets "
               f"{args.targets}")
  settings = (
      f"{args.config}, prompt tuning (PROMPT_REGEX, Adafactor), global batch "
      f"{args.batch_size}, {lengths}, activations {args.activation_dtype}; compiled for "
      f"simulated CPU devices, `--cpu_compile {args.cpu_compile}` (XLA_FLAGS "
      f"`{CPU_COMPILES[args.cpu_compile] or 'none'}`); MiB per device. jax {jax.__version__}; "
      f"{machine.describe()}; workers: "
      + ", ".join(f"{w['devices']} devices {w['wall_s']:.0f} s, peak RSS "
                  f"{w['peak_rss_mib']:,.0f} MiB" for w in workers) + ".")
  return (f"{settings}\n\n{markdown_table(rows)}\n\nFits: total per device <= the TPU's HBM "
          f"per device (a plan from CPU compiles, not a TPU measurement):\n\n{fits_table(rows)}")


def docs_block(config: str) -> str:
  """The docs block a plan of `config` replaces: one for T5s, one for decoder-only LMs."""
  return "pod_memory_plan_decoder" if is_decoder(config) else "pod_memory_plan"


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.worker:
    worker(args)
    return
  rows, workers = [], []
  for devices in args.devices:
    new_rows, info = run_worker(args, devices)
    rows += new_rows
    workers.append(info)
    print(f"worker for {devices} devices: {info['wall_s']:.0f} s, peak RSS "
          f"{info['peak_rss_mib']:,.0f} MiB", flush=True)
  text = report(args, rows, workers)
  print(text)
  if args.write_docs:
    machine.write_docs_block(docs_block(args.config), text)


if __name__ == "__main__":
  main()
