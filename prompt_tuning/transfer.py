r"""Soft prompt transfer (SPoT; Vu et al. 2022, "SPoT: Better Frozen Model Adaptation through
Soft Prompt Transfer"): which trained source prompt to start a target task from.

SPoT reads a task's trained prompt as an embedding of the task and ranks source tasks by how
alike their prompts are to a prompt trained on the target (section 4 of the paper, "predicting
task transferability"). Its two measures, both here, for prompts S [p_s, d] and T [p_t, d]:

    'average'    cos(mean_i S[i], mean_j T[j])            cosine of the average-pooled prompts
                                                          (the paper's "cosine similarity of
                                                          average tokens"; the default)
    'per_token'  mean over all pairs (i, j) of cos(S[i], T[j])
                                                          (the paper's "per-token average
                                                          cosine similarity")

Prompt lengths may differ; widths (d_model) may not. Deep prompts [layers, p, d] compare
layer by layer (the measure averaged over layers), and only with deep prompts of as many
layers. The chosen source then starts the target's run with prompts/from_file.gin
(PROMPT_FILE = the source file); an MPT run's shared prompt, prompts/step_{STEP}/shared.npy,
is one such source (prompts/mpt.py).

    ranked = rank_sources(target, {"name": source, ...}, measure="average")   # best first
    rho = spearman([sim for _, sim in ranked], [gain of each, in that order])

The command prints the ranking, and with measured transfer gains their rank correlation:

    python -m prompt_tuning.transfer --target=T.npy --source=a=A.npy --source=b=B.npy \
      [--measure=average|per_token] [--gain=a=2.5 --gain=b=-1.0]

Everything is numpy, in float64.
"""

import argparse
import sys
from typing import Any, Mapping, Sequence

import numpy as np

MEASURES = ("average", "per_token")


def _unit(rows: np.ndarray) -> np.ndarray:
  """rows [..., d] scaled to length 1 (a zero row stays zero: its cosines are 0)."""
  norms = np.linalg.norm(rows, axis=-1, keepdims=True)
  return rows / np.where(norms == 0, 1.0, norms)


def _similarity_2d(source: np.ndarray, target: np.ndarray, measure: str) -> float:
  source, target = source.astype(np.float64), target.astype(np.float64)
  if measure == "average":
    return float(_unit(source.mean(0)) @ _unit(target.mean(0)))
  return float(np.mean(_unit(source) @ _unit(target).T))


def similarity(source: Any, target: Any, measure: str = "average") -> float:
  """SPoT's similarity of two checked prompts of one kind (see the module doc), in [-1, 1]:
  [p_s, d] and [p_t, d], or deep [layers, p_s, d] and [layers, p_t, d] (mean over layers)."""
  check_measure(measure)
  source, target = np.asarray(source), np.asarray(target)
  if source.ndim == 2:
    return _similarity_2d(source, target, measure)
  return float(np.mean([_similarity_2d(s, t, measure) for s, t in zip(source, target)]))


def check_measure(measure: str) -> str:
  if measure not in MEASURES:
    raise ValueError(f"measure={measure!r} is not one of {list(MEASURES)}: 'average' (cosine "
                     "of the average-pooled prompts) or 'per_token' (mean cosine over all "
                     "pairs of rows).")
  return measure


def describe_kind(value: np.ndarray) -> str:
  return "deep prompt [layers, p, d_model]" if value.ndim == 3 else "prompt [p, d_model]"


def check_prompts(prompts: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """{name: array} checked as comparable prompts: float, finite, all plain [p, d] or all deep
  [layers, p, d] of one layer count, all of one width; the first one (the target when
  `rank_sources` calls this) sets what the others must match. Errors name the prompt, its
  shape and what it should be."""
  checked = {}
  for name, value in prompts.items():
    value = np.asarray(value)
    if value.dtype.names is not None:
      raise ValueError(f"{name} is a record of fields {list(value.dtype.names)} (a DePT or MPT "
                       "file), not a prompt matrix; compare plain prompts (an MPT run's "
                       "prompts/step_{STEP}/{task}.npy or shared.npy).")
    if value.dtype.kind != "f" or value.ndim not in (2, 3) or 0 in value.shape:
      raise ValueError(f"{name} has shape {value.shape} and dtype {value.dtype}; a prompt is a "
                       "float [p, d_model] matrix (or a deep [layers, p, d_model] one).")
    if not np.all(np.isfinite(value)):
      raise ValueError(f"{name} has non-finite values (NaN or inf); export it again from a "
                       "healthy checkpoint.")
    checked[name] = value
  if not checked:
    raise ValueError("No prompts to compare.")
  first_name, first = next(iter(checked.items()))
  for name, value in checked.items():
    if value.ndim != first.ndim or (value.ndim == 3 and value.shape[0] != first.shape[0]):
      raise ValueError(f"{name} is a {describe_kind(value)} of shape {value.shape} but "
                       f"{first_name} is a {describe_kind(first)} of shape {first.shape}; "
                       "compare prompts of one kind (deep ones of as many layers).")
    if value.shape[-1] != first.shape[-1]:
      raise ValueError(f"{name} has shape {value.shape}, width {value.shape[-1]}, but "
                       f"{first_name} has shape {first.shape}, width {first.shape[-1]}; "
                       "compare prompts trained on models of one width (d_model).")
  return checked


def rank_sources(target: Any, sources: Mapping[str, Any], measure: str = "average",
                 target_name: str = "the target") -> list[tuple[str, float]]:
  """[(source name, similarity to target)], most similar first (ties keep the given order).
  Every prompt is checked first (`check_prompts`)."""
  check_measure(measure)
  if not sources:
    raise ValueError("No source prompts to rank; give at least one.")
  if target_name in sources:
    raise ValueError(f"A source is named {target_name!r}, like the target; rename it.")
  checked = check_prompts({target_name: target, **sources})
  target = checked.pop(target_name)
  scored = [(name, similarity(value, target, measure)) for name, value in checked.items()]
  return sorted(scored, key=lambda pair: -pair[1])


def ranks(values: Sequence[float]) -> np.ndarray:
  """1-based ranks of `values` in increasing order, ties given their average rank."""
  values = np.asarray(values, np.float64)
  order = np.argsort(values, kind="stable")
  result = np.empty(len(values))
  sorted_values = values[order]
  start = 0
  while start < len(values):
    end = start
    while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
      end += 1
    result[order[start:end + 1]] = (start + end) / 2 + 1
    start = end + 1
  return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman's rank correlation of paired values: the Pearson correlation of their ranks
  (average ranks for ties). Needs at least 2 pairs, and neither side constant."""
  x, y = list(x), list(y)
  if len(x) != len(y):
    raise ValueError(f"Spearman's correlation needs paired values; got {len(x)} and {len(y)}.")
  if len(x) < 2:
    raise ValueError(f"Spearman's correlation needs at least 2 pairs; got {len(x)}.")
  if not np.all(np.isfinite(np.asarray(x + y, np.float64))):
    raise ValueError("Spearman's correlation needs finite values (no NaN or inf).")
  rx, ry = ranks(x) - (len(x) + 1) / 2, ranks(y) - (len(y) + 1) / 2
  denominator = np.sqrt(np.sum(rx * rx) * np.sum(ry * ry))
  if denominator == 0:
    raise ValueError("Spearman's correlation is undefined when one side has all values "
                     "equal.")
  return float(np.sum(rx * ry) / denominator)


def format_table(target: str, ranked: Sequence[tuple[str, float]], measure: str,
                 gains: Mapping[str, float] | None = None) -> str:
  """The command's table: rank, source, similarity (and gain), then Spearman's rho."""
  lines = [f"Sources ranked by {measure} cosine similarity to {target}:"]
  width = max(len("source"), *(len(name) for name, _ in ranked))
  header = f"{'rank':>4}  {'source':<{width}}  {'similarity':>10}"
  lines.append(header + ("  " + f"{'gain':>8}" if gains else ""))
  for i, (name, sim) in enumerate(ranked, start=1):
    line = f"{i:>4}  {name:<{width}}  {sim:>10.4f}"
    lines.append(line + (f"  {gains[name]:>8.3f}" if gains else ""))
  if gains:
    names = [name for name, _ in ranked]
    rho = spearman([sim for _, sim in ranked], [gains[name] for name in names])
    lines.append(f"Spearman's rank correlation of similarity and gain: {rho:.3f} "
                 f"({len(names)} sources)")
  return "\n".join(lines) + "\n"


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
  """['name=value', ...] -> {name: value}, each name once."""
  pairs = {}
  for entry in values:
    name, sep, value = entry.partition("=")
    if not sep or not name or not value:
      raise ValueError(f"--{flag}={entry!r} must be NAME=VALUE, e.g. --{flag}=wordnet_pos="
                       f"{'/runs/pos/prompts/step_1000.npy' if flag == 'source' else '2.5'}.")
    if name in pairs:
      raise ValueError(f"--{flag} names {name!r} twice; give each source once.")
    pairs[name] = value
  return pairs


def command(target_file: str, source_flags: Sequence[str], measure: str = "average",
            gain_flags: Sequence[str] = ()) -> str:
  """What `python -m prompt_tuning.transfer` prints; every input is checked first."""
  from prompt_tuning.checkpoints import prompts_io
  check_measure(measure)
  sources = _pairs(source_flags, "source")
  if not sources:
    raise ValueError("No --source given; pass each source prompt as --source=NAME=FILE.npy.")
  gains = None
  if gain_flags:
    raw = _pairs(gain_flags, "gain")
    if set(raw) != set(sources):
      raise ValueError(f"--gain names {sorted(raw)} but the sources are {sorted(sources)}; "
                       "give one measured gain per source.")
    try:
      gains = {name: float(value) for name, value in raw.items()}
    except ValueError:
      raise ValueError(f"--gain values {raw} must be numbers (e.g. accuracy points).") from None
  read = lambda path, flag: prompts_io.read_prompt_file(path, flag)
  target = read(target_file, "--target")
  loaded = {f"source {name!r} ({path})": read(path, f"--source={name}")
            for name, path in sources.items()}
  ranked = rank_sources(target, loaded, measure, f"target {target_file}")
  by_label = dict(zip(loaded, sources))  # label -> the user's name
  ranked = [(by_label[label], sim) for label, sim in ranked]
  return format_table(target_file, ranked, measure, gains)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m prompt_tuning.transfer",
      description="Rank source prompts by SPoT's prompt similarity to a target prompt.")
  parser.add_argument("--target", required=True, help="The target task's prompt (.npy).")
  parser.add_argument("--source", action="append", default=[], metavar="NAME=FILE",
                      help="A source prompt (repeat for each).")
  parser.add_argument("--measure", default="average", choices=MEASURES,
                      help="SPoT's measure (default: average).")
  parser.add_argument("--gain", action="append", default=[], metavar="NAME=VALUE",
                      help="The measured transfer gain of a source (one per source): adds "
                           "Spearman's rank correlation with the similarity.")
  args = parser.parse_args(argv)
  try:
    print(command(args.target, args.source, args.measure, args.gain), end="")
  except ValueError as e:
    print(f"Error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
