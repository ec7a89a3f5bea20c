"""Prompt Tuning (Lester et al. 2021) on a frozen T5X-compatible T5, in JAX/Flax."""

import importlib.metadata as _metadata
import os as _os

# TensorFlow (the input pipeline) is chatty at start-up; quiet it unless the user chose.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# XLA:CPU flags the library sets, measured in docs/performance.md. They are read when JAX
# starts its CPU backend, so they are set here; a user's own setting of either flag wins, and
# older jaxlibs (which reject unknown flags) are left alone.
_CPU_FLAGS = {
    # YNNPACK dots are slower than Eigen's at T5's shapes ("Where the train step's time
    # goes"): greedy decoding at batch 8 took 12% less time and the encoder 5% less without.
    "--xla_cpu_experimental_ynn_fusion_type": "",
    # The memory-optimised scheduler runs each backward-pass recomputation (the MLP's
    # activation) where it is used instead of early ("Peak RSS: what the train benchmark
    # holds"): the t5_1_1_small train step's temporaries fell from 504 to 427 MiB.
    "--xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",
}


def _set_cpu_flags() -> None:
  try:
    major, minor = (int(x) for x in _metadata.version("jaxlib").split(".")[:2])
  except (_metadata.PackageNotFoundError, ValueError):
    return
  if (major, minor) < (0, 10):
    return
  flags = _os.environ.get("XLA_FLAGS", "")
  added = [f"{name}={value}" for name, value in _CPU_FLAGS.items() if name not in flags]
  _os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()


_set_cpu_flags()

__version__ = "0.1.0"
