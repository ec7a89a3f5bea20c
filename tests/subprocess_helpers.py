"""Running test code in a fresh interpreter: XLA_FLAGS must be set before jax is imported."""

import os
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[1]
# Less XLA optimization: a tiny model's programs compile in 60% of the time. For tests whose
# runs are compared with each other (resume, restart), never with other numbers.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def run_python(code: str, *, devices: int = 8, timeout: int = 600,
               env: dict | None = None) -> str:
  """Runs `code` in a fresh interpreter with `devices` CPU devices; returns its stdout.

  XLA_FLAGS must be set before jax is imported, hence a subprocess.
  """
  full_env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
              "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                        text=True, timeout=timeout, env=full_env, cwd=REPO)
  if proc.returncode:
    raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n"
                         f"{proc.stderr[-5000:]}")
  return proc.stdout


def job_env(devices: int = 1, xla_flags: str = "") -> dict:
  return {**os.environ,
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {xla_flags}".strip(),
          "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}


def job_command(job: str, *flags: str) -> list[str]:
  """`python -m prompt_tuning.{job} FLAGS...`."""
  return [sys.executable, "-m", f"prompt_tuning.{job}", *flags]


def run_job(job: str, *flags: str, devices: int = 1, timeout: int = 600,
            check: bool = True, xla_flags: str = "") -> subprocess.CompletedProcess:
  """Runs a job as a user would, from the command line (`xla_flags` added to XLA_FLAGS)."""
  proc = subprocess.run(job_command(job, *flags), capture_output=True, text=True,
                        timeout=timeout, env=job_env(devices, xla_flags), cwd=REPO)
  if check and proc.returncode:
    raise AssertionError(f"{job} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
  return proc


def run_fast_job(job: str, *flags: str, **kwargs) -> subprocess.CompletedProcess:
  """`run_job` compiled with FAST_COMPILE: for runs compared with each other only."""
  return run_job(job, *flags, xla_flags=FAST_COMPILE, **kwargs)
