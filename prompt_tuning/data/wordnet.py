"""WordNet 3.0 as a pretraining corpus and as two downstream classification tasks.

WordNet (Princeton University; see WORDNET_LICENSE) is read from its `data.{noun,verb,adj,adv}`
files, e.g. Debian's `wordnet-base` (/usr/share/wordnet). Each synset becomes one line of
corpus text, "lemma, lemma: gloss", where the gloss is the definition and its quoted examples.

The tasks (shipped as JSONL in assets/wordnet/, registered on import):
  wordnet_topic  the coarse topic of a noun sense from its definition: one of TOPIC_LABELS
                 (six lexicographer files), balanced.
  wordnet_pos    the part of speech of a sense from its definition and one example sentence
                 with the lemma masked as "___": one of POS_LABELS, balanced.
The synsets of both tasks' validation and test splits are left out of the corpus, so the
pretrained model never saw the text it is evaluated on.
"""

import dataclasses
import json
import os
import random
import re
from typing import Iterable, Iterator, Sequence

from prompt_tuning import pretrained
from prompt_tuning.data import jsonl, registry, vocabularies

WORDNET_DIR = "/usr/share/wordnet"
ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "wordnet")
POS_FILES = ("noun", "verb", "adj", "adv")
SPLITS = ("train", "validation", "test")

# Lexicographer file numbers (WordNet's lexnames) of the topic task's classes.
TOPIC_LEXFILES = {5: "animal", 6: "artifact", 13: "food", 15: "location", 18: "person",
                  20: "plant"}
TOPIC_LABELS = ("animal", "artifact", "food", "location", "person", "plant")
# WordNet synset types: 's' (satellite adjective) is an adjective too.
POS_NAMES = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
POS_LABELS = ("noun", "verb", "adjective", "adverb")
TASK_SIZES = {"train": 500, "validation": 100, "test": 100}  # examples per class
TASK_NAMES = ("wordnet_topic", "wordnet_pos")
MIXTURE_NAME = "wordnet"  # both tasks at equal rates: one run, or one eval with PROMPTS

WORDNET_LICENSE = """\
WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.
THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO
REPRESENTATIONS OR WARRANTIES, EXPRESS OR IMPLIED. BY WAY OF EXAMPLE, BUT NOT LIMITATION,
PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES OF MERCHANTABILITY OR FITNESS
FOR ANY PARTICULAR PURPOSE OR THAT THE USE OF THE LICENSED SOFTWARE, DATABASE OR
DOCUMENTATION WILL NOT INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, TRADEMARKS OR OTHER
RIGHTS. The name of Princeton University or Princeton may not be used in advertising or
publicity pertaining to distribution of the software and/or database. Title to copyright in
this software, database and any associated documentation shall at all times remain with
Princeton University and LICENSEE agrees to preserve same.
(Full licence: https://wordnet.princeton.edu/license-and-commercial-use)
"""


@dataclasses.dataclass(frozen=True)
class Synset:
  """One line of a WordNet data file."""
  key: str  # synset type + offset, e.g. "n02084071": unique across the four files
  pos: str  # 'n', 'v', 'a', 's' or 'r'
  lexfile: int
  lemmas: tuple[str, ...]  # with spaces, not underscores
  definition: str
  examples: tuple[str, ...]

  def corpus_text(self) -> str:
    """"dog, domestic dog: a member of the genus Canis ...; "the dog barked all night"."""
    gloss = "; ".join([self.definition, *(f'"{e}"' for e in self.examples)])
    return f"{', '.join(self.lemmas)}: {gloss}"


_LEMMA_MARKER = re.compile(r"\([a-z]+\)$")  # adjective position markers: "(a)", "(p)", "(ip)"


def parse_line(line: str) -> Synset | None:
  """A `data.*` line -> Synset; None for the licence header (lines starting with spaces)."""
  if line.startswith(" ") or not line.strip():
    return None
  fields, _, gloss = line.partition(" | ")
  parts = fields.split()
  offset, lexfile, pos, count = parts[0], int(parts[1]), parts[2], int(parts[3], 16)
  lemmas = tuple(_LEMMA_MARKER.sub("", w).replace("_", " ") for w in parts[4:4 + 2 * count:2])
  examples = tuple(e.strip() for e in re.findall(r'"([^"]*)"', gloss) if e.strip())
  definition = gloss.split('"')[0].strip().rstrip(";").strip()
  return Synset(pos + offset, pos, lexfile, lemmas, definition, examples)


def read_synsets(wordnet_dir: str = WORDNET_DIR) -> list[Synset]:
  """Every synset of the four data files, in file order.

  Raises:
    FileNotFoundError: naming the missing file and how to get WordNet.
  """
  synsets = []
  for name in POS_FILES:
    path = os.path.join(wordnet_dir, f"data.{name}")
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"WordNet file {path!r} is missing; install WordNet 3.0 (Debian: `apt-get install "
          "wordnet-base`) or pass the directory holding data.noun, data.verb, data.adj and "
          "data.adv.")
    with open(path, encoding="utf-8") as f:
      synsets += [s for s in map(parse_line, f) if s is not None and s.definition]
  return synsets


# ---------------------------------------------------------------------------------------------
# Downstream tasks

def topic_example(synset: Synset) -> dict[str, str] | None:
  label = TOPIC_LEXFILES.get(synset.lexfile) if synset.pos == "n" else None
  return None if label is None else {"inputs": synset.definition, "targets": label}


def _masked_example(synset: Synset) -> str | None:
  """The first example sentence with each lemma replaced by "___", or None if none shows."""
  for example in synset.examples:
    masked = example
    for lemma in sorted(synset.lemmas, key=len, reverse=True):
      masked = re.sub(rf"\b{re.escape(lemma)}\w*", "___", masked, flags=re.IGNORECASE)
    if "___" in masked:
      return masked
  return None


def pos_example(synset: Synset) -> dict[str, str] | None:
  """"definition: ... example: ..." with the lemma masked, so the word itself is no clue."""
  example = _masked_example(synset)
  if example is None:
    return None
  return {"inputs": f"definition: {synset.definition} example: {example}",
          "targets": POS_NAMES[synset.pos]}


def balanced_splits(synsets: Sequence[Synset], make_example, labels: Sequence[str], seed: int
                    ) -> dict[str, list[tuple[str, dict[str, str]]]]:
  """{split: [(synset key, example)]} with TASK_SIZES[split] examples of each label."""
  by_label: dict[str, list[tuple[str, dict[str, str]]]] = {label: [] for label in labels}
  for synset in synsets:
    example = make_example(synset)
    if example is not None:
      by_label[example["targets"]].append((synset.key, example))
  rng = random.Random(seed)
  splits: dict[str, list] = {split: [] for split in SPLITS}
  for label in labels:
    pool = by_label[label]
    needed = sum(TASK_SIZES.values())
    if len(pool) < needed:
      raise ValueError(f"Only {len(pool)} WordNet examples of {label!r}; {needed} are needed.")
    rng.shuffle(pool)
    start = 0
    for split in SPLITS:
      splits[split] += pool[start:start + TASK_SIZES[split]]
      start += TASK_SIZES[split]
  for split in SPLITS:
    rng.shuffle(splits[split])
  return splits


def build_tasks(synsets: Sequence[Synset], seed: int = 0) -> dict[str, dict[str, list]]:
  """{task name: {split: [(synset key, example)]}} for both tasks."""
  return {"wordnet_topic": balanced_splits(synsets, topic_example, TOPIC_LABELS, seed),
          "wordnet_pos": balanced_splits(synsets, pos_example, POS_LABELS, seed + 1)}


def held_out_keys(tasks: dict[str, dict[str, list]]) -> set[str]:
  """Synsets of every task's validation and test splits: never in the corpus."""
  return {key for splits in tasks.values() for split in ("validation", "test")
          for key, _ in splits[split]}


def corpus_lines(synsets: Iterable[Synset], held_out: set[str]) -> Iterator[str]:
  for synset in synsets:
    if synset.key not in held_out:
      yield synset.corpus_text()


def _write_lines(path: str, lines: Iterable[str]) -> int:
  """Writes `lines` to `path` atomically (a .tmp file, then a rename); returns the count."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  count = 0
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    for line in lines:
      f.write(line + "\n")
      count += 1
  os.replace(path + ".tmp", path)
  return count


def write_tasks(tasks: dict[str, dict[str, list]], out_dir: str) -> None:
  """{out_dir}/{task}_{split}.jsonl, one {"inputs", "targets", "synset"} object per line."""
  for name, splits in tasks.items():
    for split, rows in splits.items():
      _write_lines(os.path.join(out_dir, f"{name}_{split}.jsonl"),
                   (json.dumps({**ex, "synset": key}) for key, ex in rows))
  _write_lines(os.path.join(out_dir, "LICENSE"), WORDNET_LICENSE.splitlines())


def write_corpus(synsets: Sequence[Synset], tasks: dict[str, dict[str, list]], path: str) -> int:
  """The pretraining corpus, one synset per line, held-out synsets left out; returns lines."""
  return _write_lines(path, corpus_lines(synsets, held_out_keys(tasks)))


# ---------------------------------------------------------------------------------------------
# Registration of the shipped tasks

def task_files(name: str, assets_dir: str = ASSETS_DIR) -> dict[str, str]:
  return {split: os.path.join(assets_dir, f"{name}_{split}.jsonl") for split in SPLITS}


def register(vocabulary_path: str = pretrained.MINI_VOCABULARY_PATH) -> None:
  """Registers wordnet_topic and wordnet_pos, tokenized with the shipped mini T5's vocabulary;
  jobs re-tokenize them for another model's VOCABULARY_PATH."""
  vocabulary = vocabularies.get_vocabulary(vocabulary_path)
  for name, labels in zip(TASK_NAMES, (TOPIC_LABELS, POS_LABELS)):
    jsonl.register_jsonl_task(name, task_files(name), vocabulary=vocabulary,
                              class_labels=labels)
  registry.add_mixture(MIXTURE_NAME, [(name, 1.0) for name in TASK_NAMES])


register()
