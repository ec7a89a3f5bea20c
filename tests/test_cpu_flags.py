"""`import prompt_tuning` turns XLA:CPU's YNNPACK dots off and picks its memory-optimised
scheduler, unless the user set those flags."""

import os
import subprocess
import sys

import pytest

YNN = "--xla_cpu_experimental_ynn_fusion_type"
SCHEDULER = "--xla_cpu_scheduler_type"
MEMORY = f"{SCHEDULER}=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"


def flags_after_import(xla_flags: str | None, code: str = "") -> str:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if xla_flags is not None:
    env["XLA_FLAGS"] = xla_flags
  script = f"import os, prompt_tuning\n{code}\nprint(os.environ.get('XLA_FLAGS'))"
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                        text=True, check=True)
  return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("given, expected", [
    (None, f"{YNN}= {MEMORY}"),
    ("--xla_force_host_platform_device_count=2",
     f"--xla_force_host_platform_device_count=2 {YNN}= {MEMORY}"),
    # the user's choice wins
    (f"{YNN}=individual_dot", f"{YNN}=individual_dot {MEMORY}"),
    (f"{SCHEDULER}=CPU_SCHEDULER_TYPE_DEFAULT",
     f"{SCHEDULER}=CPU_SCHEDULER_TYPE_DEFAULT {YNN}="),
])
def test_flag_is_added_once_and_a_users_choice_kept(given, expected):
  assert flags_after_import(given) == expected


def test_cpu_dots_compile_without_ynnpack():
  check = ("import jax, jax.numpy as jnp\n"
           "a = jnp.ones((64, 64))\n"
           "assert '__ynn_fusion' not in jax.jit(jnp.dot).lower(a, a).compile().as_text()")
  flags_after_import(None, check)
