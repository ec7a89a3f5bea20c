"""Regenerates every measured table of docs/performance.md, one benchmark after another.

    python -m benchmarks.performance_docs [--only NAME ...] [--skip NAME ...] [--dry_run]

Each entry below is one `--write_docs` command and the docs blocks it rewrites. Run it on a
quiet machine: the timed benchmarks wait for idle cores, and the whole list takes about
2 hours here (the pod plan alone about 100 min of compiles; `--skip pod_memory_plan` leaves
it out), plus 4 compiles of 9-16 min each for the 8B Llama's plan
(`pod_memory_plan_decoder`). The `decode_before_after` block is a record of two commits and
is not rerun.
"""

import argparse
import subprocess
import sys
import time

from benchmarks.step_time_vs_peft import REPO

# name (the docs block it rewrites) -> arguments to `python -m`
COMMANDS = {
    "memory_analysis": ["benchmarks.memory_analysis", "--configs", "t5_1_1_small",
                        "t5_1_1_base", "t5_1_1_large", "--write_docs"],
    "workloads": ["benchmarks.workloads_vs_peft", "--write_docs"],
    "workloads_batch1": ["benchmarks.workloads_vs_peft", "--batch_size", "1", "--workloads",
                         "greedy", "--docs_block", "workloads_batch1", "--write_docs"],
    "step_time": ["benchmarks.step_time_vs_peft", "--inputs", "128", "--targets", "8",
                  "--prompt_length", "100", "--decode_tokens", "32", "--steps", "6",
                  "--warmup", "2", "--write_docs"],
    "decode_batch1": ["benchmarks.step_time_vs_peft", "--batch_size", "1", "--inputs", "128",
                      "--targets", "8", "--prompt_length", "100", "--decode_tokens", "32",
                      "--steps", "6", "--warmup", "2", "--docs_block", "decode_batch1",
                      "--write_docs"],
    "train_rss_stages": ["benchmarks.train_rss_stages", "--write_docs"],
    "mixed_prompts": ["benchmarks.mixed_prompts", "--write_docs"],
    "pod_memory_plan": ["benchmarks.pod_memory_plan", "--write_docs"],
    # The measured subset of the 8B Llama's grid (each compile takes 9-16 min on 2 cores).
    "pod_memory_plan_decoder": ["benchmarks.pod_memory_plan", "--config", "llama3_8b",
                                "--devices", "16", "32", "--partitions", "8",
                                "--frozen_dtypes", "bfloat16", "--write_docs"],
    "workloads_decoder": ["benchmarks.workloads_vs_peft", "--config", "smollm_135m",
                          "--docs_block", "workloads_decoder", "--write_docs"],
}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--only", nargs="+", choices=list(COMMANDS), default=list(COMMANDS))
  parser.add_argument("--skip", nargs="+", choices=list(COMMANDS), default=[])
  parser.add_argument("--dry_run", action="store_true", help="print the commands only")
  args = parser.parse_args(argv)
  for name in [n for n in args.only if n not in args.skip]:
    cmd = [sys.executable, "-m", *COMMANDS[name]]
    print(f"[{name}] {' '.join(cmd[1:])}", flush=True)
    if args.dry_run:
      continue
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    print(f"[{name}] done in {(time.perf_counter() - start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
  main()
