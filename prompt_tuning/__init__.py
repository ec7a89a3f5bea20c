"""Prompt Tuning (Lester et al. 2021) on a frozen T5X-compatible T5, in JAX/Flax."""

import importlib.metadata as _metadata
import os as _os

# TensorFlow (the input pipeline) is chatty at start-up; quiet it unless the user chose.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# XLA:CPU's YNNPACK dots are slower than its Eigen ones at T5's shapes (docs/performance.md,
# "Where the train step's time goes"): greedy decoding at batch 8 took 12% less time and the
# encoder 5% less with them off. Read when JAX starts its CPU backend, so it is set here;
# a user's own setting of the flag wins, and older jaxlibs (which reject unknown flags) are
# left alone.
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def _prefer_eigen_dots_on_cpu() -> None:
  flags = _os.environ.get("XLA_FLAGS", "")
  if _YNN_FLAG in flags:
    return
  try:
    major, minor = (int(x) for x in _metadata.version("jaxlib").split(".")[:2])
  except (_metadata.PackageNotFoundError, ValueError):
    return
  if (major, minor) >= (0, 10):
    _os.environ["XLA_FLAGS"] = f"{flags} {_YNN_FLAG}=".strip()


_prefer_eigen_dots_on_cpu()

__version__ = "0.1.0"
