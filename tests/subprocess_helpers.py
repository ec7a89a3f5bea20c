"""Running test code in a fresh interpreter: XLA_FLAGS must be set before jax is imported."""

import os
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[1]


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
