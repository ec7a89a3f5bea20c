"""Prompt Tuning (Lester et al. 2021) on a frozen T5X-compatible T5, in JAX/Flax."""

__version__ = "0.1.0"
