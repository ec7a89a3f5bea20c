"""Prompt Tuning (Lester et al. 2021) on a frozen T5X-compatible T5, in JAX/Flax."""

import os as _os

# TensorFlow (the input pipeline) is chatty at start-up; quiet it unless the user chose.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
