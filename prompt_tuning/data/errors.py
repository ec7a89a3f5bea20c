"""Errors the data side raises for bad user input: one clear message naming the value and fix.

All are `ValueError` subclasses, so a job can catch them as such; missing files raise the
built-in `FileNotFoundError` instead.
"""


class DataError(ValueError):
  """Base class of the data side's user-facing errors."""


class UnknownTaskError(DataError):
  """A task or mixture name that is not registered."""


class UnknownSplitError(DataError):
  """A split name the task does not have."""


class EmptySplitError(DataError):
  """A split that yields no examples."""


class JsonlFormatError(DataError):
  """A JSONL line that is not a JSON object with string `inputs` and `targets`."""
