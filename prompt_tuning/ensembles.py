"""Prompt ensembles: the same inputs under N prompts of one frozen model, then a vote.

The paper's Table 3: five prompts on one frozen T5 beat their average and their best. The
members run as rows of one mixed-prompt batch (`PromptedT5Model.with_prompt_table`); this
module only turns their outputs into the ensemble's:

    vote_labels(tables [members, examples, labels], labels) -> [examples] label
        majority vote of the members' choices; a tie goes to the tied label with the highest
        log-likelihood summed over members, then to the earlier label
    vote_texts(texts [members][examples]) -> [examples] text
        majority vote over decoded strings; a tie goes to the tied string of the earliest
        member
"""

from typing import Sequence

import numpy as np


def check_members(files: Sequence[str] | None) -> list[str]:
  """PROMPT_ENSEMBLE as a list of at least two prompt files (one clear error otherwise)."""
  if isinstance(files, str):
    raise ValueError(f"PROMPT_ENSEMBLE={files!r} is one string; give a list of prompt files, "
                     "e.g. --gin.PROMPT_ENSEMBLE=\"['a.npy', 'b.npy']\".")
  files = list(files or [])
  if len(files) < 2:
    raise ValueError(f"PROMPT_ENSEMBLE={files!r} has {len(files)} prompt; an ensemble needs at "
                     "least two (for one prompt use PROMPT_FILE).")
  return files


def vote_labels(tables: np.ndarray, labels: Sequence[str]) -> list[str]:
  """The ensemble's label per example.

  Args:
    tables: [members, examples, labels] log-likelihood of each label under each member.
    labels: the label words, in the tables' order.
  """
  tables = np.asarray(tables, np.float64)
  members, examples, num_labels = tables.shape
  if num_labels != len(labels):
    raise ValueError(f"Score tables have {num_labels} columns for {len(labels)} labels.")
  choices = np.argmax(tables, axis=-1)                      # [members, examples]
  votes = np.zeros((examples, num_labels), np.int64)
  for member_choices in choices:
    votes[np.arange(examples), member_choices] += 1
  summed = tables.sum(axis=0)                               # [examples, labels]
  # Most votes first, then the summed log-likelihood; argmax keeps the earlier label on ties.
  tied_best = votes == votes.max(axis=-1, keepdims=True)
  return [labels[i] for i in np.argmax(np.where(tied_best, summed, -np.inf), axis=-1)]


def vote_texts(texts: Sequence[Sequence[str]]) -> list[str]:
  """The ensemble's string per example: texts[member][example] -> [examples]."""
  if not texts:
    return []
  out = []
  for candidates in zip(*texts):
    counts: dict[str, int] = {}
    for text in candidates:            # dicts keep first-seen order: the earliest member's
      counts[text] = counts.get(text, 0) + 1
    out.append(max(counts, key=counts.get))  # max keeps the first of equal counts
  return out
