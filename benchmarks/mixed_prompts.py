"""What serving several prompts in one batch costs, against one prompt for the whole batch.

    python -m benchmarks.mixed_prompts [--write_docs]

The same frozen model, batch and input length, timed three ways, alternating:

  single    one prompt of --prompt_length rows for every example (the plain prompted model)
  mixed     a table of --num_prompts prompts, the longest --prompt_length rows and the others
            shorter; each example picks one (`prompt_ids`), shorter ones padded and masked
  ensemble  --num_prompts prompts of --prompt_length rows, every example under each: the
            batch holds batch_size / num_prompts examples times num_prompts members

Workloads: scoring (one forward pass, `model.score`) and greedy decoding of --decode_tokens
tokens. All three run the same array shapes; the table gather is the only extra work, so the
timings should agree. Prints one JSON line per (workload, way) and a markdown table.
"""

import argparse
import json
import statistics
import time

import jax
import numpy as np

from benchmarks import machine
from prompt_tuning import model as model_lib
from prompt_tuning.t5 import config as t5_config


def make_batch(args, rng) -> dict:
  inputs = rng.integers(2, 1000, size=(args.batch_size, args.inputs)).astype(np.int32)
  inputs[:, -1] = 1
  targets = rng.integers(2, 1000, size=(args.batch_size, args.targets)).astype(np.int32)
  return {"encoder_input_tokens": inputs,
          "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
          "decoder_target_tokens": targets,
          "decoder_loss_weights": np.ones_like(targets)}


def setups(args) -> dict:
  """{way: (model, params, batch)}, all on the same frozen weights and token batch."""
  config = t5_config.get_config(args.config, dtype="float32")
  rng = np.random.default_rng(0)
  # eos_id -1 never matches: every row decodes exactly --decode_tokens tokens.
  model = model_lib.PromptedT5Model(config, prompt_length=args.prompt_length, eos_id=-1)
  params = model.random_params(jax.random.PRNGKey(0))
  batch = make_batch(args, rng)
  width = config.emb_dim
  lengths = [args.prompt_length] + [max(1, args.prompt_length // (2 + i))
                                    for i in range(args.num_prompts - 1)]
  table = model.with_prompt_table(
      params, [rng.normal(size=(n, width)).astype(np.float32) for n in lengths])
  ensemble = model.with_prompt_table(
      params, [rng.normal(size=(args.prompt_length, width)).astype(np.float32)
               for _ in range(args.num_prompts)])
  ids = np.arange(args.batch_size, dtype=np.int32) % args.num_prompts
  return {"single": (model, params, batch),
          "mixed": (model, table, {**batch, "prompt_ids": ids}),
          "ensemble": (model, ensemble, {**batch, "prompt_ids": ids})}


def workloads(args) -> dict:
  return {"score": lambda m: jax.jit(m.score),
          "greedy": lambda m: jax.jit(lambda p, b: m.predict(
              p, b, max_decode_length=args.decode_tokens))}


def run(args) -> list[dict]:
  ways = setups(args)
  results = []
  for workload, make_fn in workloads(args).items():
    fns = {way: make_fn(m) for way, (m, _, _) in ways.items()}
    for way, (_, params, batch) in ways.items():  # compile and warm up
      for _ in range(args.warmup):
        jax.block_until_ready(fns[way](params, batch))
    times = {way: [] for way in ways}
    for _ in range(args.repeats):  # alternate, so drifts of the machine hit every way alike
      for way, (_, params, batch) in ways.items():
        start = time.perf_counter()
        jax.block_until_ready(fns[way](params, batch))
        times[way].append(time.perf_counter() - start)
    for way, ts in times.items():
      results.append({"workload": workload, "way": way, "median_ms": 1e3 * statistics.median(ts),
                      "min_ms": 1e3 * min(ts), "max_ms": 1e3 * max(ts), "repeats": len(ts)})
      print(json.dumps(results[-1]), flush=True)
  return results


def markdown(results: list[dict], args) -> str:
  single = {r["workload"]: r["median_ms"] for r in results if r["way"] == "single"}
  rows = ["| workload | way | median ms (min-max) | vs single |", "|---|---|---|---|"]
  for r in results:
    rows.append(f"| {r['workload']} | {r['way']} | {r['median_ms']:.0f} "
                f"({r['min_ms']:.0f}-{r['max_ms']:.0f}) | "
                f"{r['median_ms'] / single[r['workload']]:.2f}x |")
  lengths = [args.prompt_length] + [max(1, args.prompt_length // (2 + i))
                                    for i in range(args.num_prompts - 1)]
  rows += ["", f"{args.config} shape, random float32 weights; batch {args.batch_size}, inputs "
               f"{args.inputs}, targets {args.targets}, greedy {args.decode_tokens} tokens; "
               f"mixed: prompts of {lengths} rows; ensemble: {args.num_prompts} prompts of "
               f"{args.prompt_length} rows. {args.repeats} alternating repeats after "
               f"{args.warmup} warm-ups. {machine.describe()}; jax {jax.__version__}."]
  return "\n".join(rows)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="t5_1_1_small")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--inputs", type=int, default=128)
  parser.add_argument("--targets", type=int, default=16)
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--num_prompts", type=int, default=4)
  parser.add_argument("--decode_tokens", type=int, default=16)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--write_docs", action="store_true",
                      help="write the table into docs/performance.md")
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  if not machine.wait_until_idle(timeout_s=120):
    print("warning: the cores were busy; timings are contended", flush=True)
  table = markdown(run(args), args)
  print(table)
  if args.write_docs:
    machine.write_docs_block("mixed_prompts", table)


if __name__ == "__main__":
  main()
