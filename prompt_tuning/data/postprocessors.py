"""Postprocessors: generated (or target) text -> what the metrics compare.

seqio calls them as `fn(text, example=example, is_target=bool)`. They never raise on model
output: empty, unknown, oddly cased or padded text becomes an invalid value (-1 for labels,
NaN for numbers) that the metrics count as wrong. Text may be `str` or UTF-8 `bytes`.
"""

import math
import re
import string
from typing import Any, Mapping, Sequence

INVALID_LABEL = -1


def as_text(value: Any) -> str:
  """`str` of a str / bytes / numpy bytes value (None -> ""), undecodable bytes replaced."""
  if value is None:
    return ""
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  if hasattr(value, "item") and not isinstance(value, str):  # numpy scalar
    return as_text(value.item())
  return str(value)


def normalize_label_text(value: Any) -> str:
  """Case-folded text with runs of whitespace collapsed and ends stripped."""
  return " ".join(as_text(value).split()).casefold()


def label_index(output: Any, example: Mapping[str, Any] | None = None, is_target: bool = False,
                *, label_names: Sequence[str]) -> int:
  """Index of the label word `output` names (case and whitespace ignored), else -1."""
  del example, is_target  # the same rule for targets and predictions
  text = normalize_label_text(output)
  for i, name in enumerate(label_names):
    if text == name.casefold():
      return i
  return INVALID_LABEL


def stripped_text(output: Any, example: Mapping[str, Any] | None = None,
                  is_target: bool = False) -> str:
  """Free text compared as is, up to surrounding and repeated whitespace."""
  del example, is_target
  return " ".join(as_text(output).split())


def to_float(output: Any, example: Mapping[str, Any] | None = None,
             is_target: bool = False) -> float:
  """STS-B: the number the text spells ("3.8"), or NaN if it is no finite number."""
  del example, is_target
  try:
    value = float(as_text(output).strip())
  except ValueError:
    return math.nan
  return value if math.isfinite(value) else math.nan


def multirc(output: Any, example: Mapping[str, Any] | None = None,
            is_target: bool = False) -> Any:
  """MultiRC: targets -> {"group": (paragraph id, question id), "label"}; predictions -> label.

  Grouping answer options by question is what the per-question exact match needs.
  """
  label = label_index(output, label_names=("False", "True"))
  if not is_target:
    return label
  idx = example["idx"]
  return {"group": (int(idx["paragraph"]), int(idx["question"])), "label": label}


def record(output: Any, example: Mapping[str, Any] | None = None,
           is_target: bool = False) -> Any:
  """ReCoRD: targets -> the example's list of gold answers; predictions -> the text."""
  if is_target:
    return [as_text(a) for a in example["answers"]]
  return as_text(output).strip()


_DETERMINERS = frozenset({"the", "a", "an", "this", "that", "these", "those", "his", "her",
                          "its", "their", "my", "your", "our"})
_PUNCTUATION_RE = re.compile(f"[{re.escape(string.punctuation)}]")


def _content_words(text: str) -> frozenset[str]:
  words = _PUNCTUATION_RE.sub(" ", text.casefold()).split()
  return frozenset(w for w in words if w not in _DETERMINERS)


def refers_to(prediction: str, candidate: str) -> bool:
  """True when `prediction` names `candidate`: one's content words contain the other's.

  Determiners and punctuation are ignored, so "councilmen" and "The city councilmen." match;
  empty text matches nothing.
  """
  pred, cand = _content_words(prediction), _content_words(candidate)
  return bool(pred) and bool(cand) and (pred <= cand or cand <= pred)


def wsc_simple(output: Any, example: Mapping[str, Any] | None = None,
               is_target: bool = False) -> int:
  """Simplified WSC: target -> the example's label (1 if the candidate is the referent);
  prediction -> 1 if the generated noun phrase refers to the candidate, else 0.

  Accuracy over these is the WSC accuracy: the model is right when it names the candidate
  exactly for the positive examples, and something else for the negative ones.
  """
  if is_target:
    return int(example["label"])
  return int(refers_to(as_text(output), as_text(example["targets_pretokenized"])))
