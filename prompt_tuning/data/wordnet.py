"""WordNet 3.0 as a pretraining corpus and as five downstream tasks.

WordNet (Princeton University; see WORDNET_LICENSE) is read from its `data.{noun,verb,adj,adv}`
files, e.g. Debian's `wordnet-base` (/usr/share/wordnet). Each synset becomes one line of
corpus text, "lemma, lemma: gloss", where the gloss is the definition and its quoted examples.

The tasks (shipped as JSONL in assets/wordnet/, registered on import):
  wordnet_topic  the coarse topic of a noun sense from its definition: one of TOPIC_LABELS
                 (six lexicographer files), balanced.
  wordnet_pos    the part of speech of a sense from its definition and one example sentence
                 with the lemma masked as "___": one of POS_LABELS, balanced.
  wordnet_hypernym  "is A a kind of B? A: <A's definition>; B: <B's definition>": true or
                 false, balanced. A is a noun; B is A's direct hypernym (true) or
                 another noun with hyponyms at that hypernym's depth but of another
                 lexicographer file, no ancestor of A (false).
  wordnet_senses   "word: X definition: ...": how many senses the word X has in WordNet (all
                 parts of speech, case ignored): one of SENSES_LABELS (one, few = 2-3,
                 many = 4+), balanced.
  wordnet_hypernym_word  "noun: <definition>" (or verb) -> the word of its direct hypernym,
                 generated and scored by exact match (accuracy of the whitespace-normalised
                 text). Only definitions that do not contain that word, and only words that
                 answer at least HYPERNYM_WORD_MIN_TRAIN synsets outside the held-out ones.
The synsets of wordnet_topic's and wordnet_pos's validation and test splits are left out of
the corpus, so the pretrained model never saw the text it is evaluated on. The later three
tasks keep that: their validation and test examples are built only from those held-out
synsets (never a new synset, so the shipped corpus and model stay valid) and their train
examples only from the rest; in wordnet_senses no word is in two validation or test
examples, nor in a train example when it is in one of those.
"""

import collections
import dataclasses
import json
import os
import random
import re
from typing import Callable, Iterable, Iterator, Mapping, Sequence

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
HYPERNYM_LABELS = ("true", "false")  # yes / no; single pieces of the mini vocabulary
SENSES_LABELS = ("one", "few", "many")  # 1, 2-3, 4+ senses
HYPERNYM_WORD_SIZES = {"train": 3000, "validation": 150, "test": 200}  # examples
HYPERNYM_WORD_MIN_TRAIN = 10  # examples outside the held-out synsets with the same answer
# {task: its class labels, None for generated text}
TASK_LABELS = {"wordnet_topic": TOPIC_LABELS, "wordnet_pos": POS_LABELS,
               "wordnet_hypernym": HYPERNYM_LABELS, "wordnet_senses": SENSES_LABELS,
               "wordnet_hypernym_word": None}
TASK_NAMES = tuple(TASK_LABELS)
MIXTURE_NAME = "wordnet"  # every task at equal rates: one run, or one eval with PROMPTS
# Each mixture's tasks, at equal rates. USE_RANK_CLASSIFICATION=True refuses `wordnet` (the
# hypernym word task has no labels): `wordnet_classification` is its classification tasks, and
# `wordnet_topic_pos` the first two tasks (the two-prompt examples of README and serving.md).
MIXTURES = {MIXTURE_NAME: TASK_NAMES,
            "wordnet_classification": tuple(n for n, labels in TASK_LABELS.items() if labels),
            "wordnet_topic_pos": ("wordnet_topic", "wordnet_pos")}

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
  hypernyms: tuple[str, ...] = ()  # keys of the synsets it is a kind (or an instance) of

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
  # After the lemmas: the pointer count, then (symbol, offset, pos, source/target) each.
  first, pointer_count = 5 + 2 * count, int(parts[4 + 2 * count])
  pointers = [parts[i:i + 4] for i in range(first, first + 4 * pointer_count, 4)]
  hypernyms = tuple(p[2] + p[1] for p in pointers if p[0] in ("@", "@i"))
  return Synset(pos + offset, pos, lexfile, lemmas, definition, examples, hypernyms)


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


def ancestors(synset: Synset, by_key: Mapping[str, Synset]) -> set[str]:
  """Keys of every synset above `synset` along any hypernym path (not its own)."""
  found, todo = set(), list(synset.hypernyms)
  while todo:
    parent = todo.pop()
    if parent not in found:
      found.add(parent)
      todo += by_key[parent].hypernyms
  return found


def hyponyms_of(synsets: Iterable[Synset]) -> dict[str, list[str]]:
  """{key: keys of the synsets directly below it}, in file order."""
  below: dict[str, list[str]] = collections.defaultdict(list)
  for synset in synsets:
    for parent in synset.hypernyms:
      below[parent].append(synset.key)
  return dict(below)


def _mentions(text: str, word: str) -> bool:
  return re.search(rf"\b{re.escape(word)}", text, flags=re.IGNORECASE) is not None


def depths(synsets: Iterable[Synset]) -> dict[str, int]:
  """{key: hypernym links on the shortest path up to a synset with none}."""
  by_key = {s.key: s for s in synsets}
  found: dict[str, int] = {}

  def depth(key: str) -> int:
    if key not in found:
      found[key] = 1 + min(map(depth, by_key[key].hypernyms)) if by_key[key].hypernyms else 0
    return found[key]

  for key in by_key:
    depth(key)
  return found


def hypernym_pools(synsets: Sequence[Synset], below: Mapping[str, Sequence[str]],
                   depth: Mapping[str, int]) -> dict[int, list[str]]:
  """{depth: keys of the nouns at that depth that have hyponyms}, in file order: where a
  false B is drawn from, so it is as general a word as the true one."""
  pools: dict[int, list[str]] = collections.defaultdict(list)
  for synset in synsets:
    if synset.pos == "n" and below.get(synset.key):
      pools[depth[synset.key]].append(synset.key)
  return dict(pools)


def hypernym_example(synset: Synset, by_key: Mapping[str, Synset],
                     pools: Mapping[int, Sequence[str]], depth: Mapping[str, int],
                     seed: int) -> dict[str, str] | None:
  """"is A a kind of B? A: <A's definition>; B: <B's definition>" -> true (B is A's first
  hypernym) or false (B is a noun with hyponyms at the hypernym's depth, of another
  lexicographer file, no ancestor of A and named by no ancestor's word), by a coin seeded with
  the synset; None for a non-noun, or when A's definition contains the hypernym's word or B
  (a surface cue)."""
  if synset.pos != "n" or not synset.hypernyms:
    return None
  rng = random.Random(f"{seed}:{synset.key}")
  parent = by_key[synset.hypernyms[0]]
  if _mentions(synset.definition, parent.lemmas[0]):
    return None  # whatever the coin says, so that true and false share one population of A
  answer = rng.choice(HYPERNYM_LABELS)
  if answer == "false":
    above = ancestors(synset, by_key)
    taken = {lemma.lower() for key in above for lemma in by_key[key].lemmas}
    pool = pools[depth[parent.key]]
    drawn = [key for key in rng.sample(pool, min(40, len(pool)))
             if key not in above and key != synset.key
             and by_key[key].lexfile != parent.lexfile
             and by_key[key].lemmas[0].lower() not in taken][:20]
    if not drawn:
      return None

    # Of the three drawn whose words look most like the hypernym's (one word or several,
    # length), one at random: word shape alone should not tell true from false.
    def unlikeness(key):
      word, hypernym = by_key[key].lemmas[0], parent.lemmas[0]
      return (" " in word) != (" " in hypernym), abs(len(word) - len(hypernym))
    parent = by_key[rng.choice(sorted(drawn, key=unlikeness)[:3])]
  word = parent.lemmas[0]
  if _mentions(synset.definition, word):
    return None
  return {"inputs": f"is {synset.lemmas[0]} a kind of {word}? {synset.lemmas[0]}: "
                    f"{synset.definition}; {word}: {parent.definition}",
          "targets": answer}


def hypernym_word_example(synset: Synset, by_key: Mapping[str, Synset]
                          ) -> dict[str, str] | None:
  """"noun: <definition>" (or verb) -> the word of its first hypernym; None without one, or
  when the definition contains that word (the answer is named, not copied)."""
  if not synset.hypernyms:
    return None
  word = by_key[synset.hypernyms[0]].lemmas[0]
  if _mentions(synset.definition, word):
    return None
  return {"inputs": f"{POS_NAMES[synset.pos]}: {synset.definition}", "targets": word}


def frequent_answers(examples: Iterable[tuple[str, dict[str, str]]], held_out: set[str],
                     minimum: int) -> Iterator[tuple[str, dict[str, str]]]:
  """The examples whose target is the target of at least `minimum` examples outside
  `held_out` (which train splits draw from): an answer the train split can teach."""
  examples = list(examples)
  counts = collections.Counter(ex["targets"] for key, ex in examples if key not in held_out)
  return (row for row in examples if counts[row[1]["targets"]] >= minimum)


def sense_counts(synsets: Iterable[Synset]) -> collections.Counter:
  """{lowercased lemma: number of synsets holding it}, over all parts of speech."""
  return collections.Counter(lemma for s in synsets for lemma in {l.lower() for l in s.lemmas})


def senses_example(synset: Synset, counts: Mapping[str, int]) -> dict[str, str]:
  """"word: X definition: ..." -> one, few (2-3) or many (4+) senses of X."""
  word = synset.lemmas[0]
  count = counts[word.lower()]
  label = SENSES_LABELS[0] if count == 1 else SENSES_LABELS[1] if count <= 3 else SENSES_LABELS[2]
  return {"inputs": f"word: {word} definition: {synset.definition}", "targets": label}


def held_out_splits(examples: Iterable[tuple[str, dict[str, str]]], held_out: set[str],
                    sizes: Mapping[str, int], labels: Sequence[str] | None, seed: int,
                    word_of: Callable[[dict[str, str]], str] | None = None
                    ) -> dict[str, list[tuple[str, dict[str, str]]]]:
  """{split: [(synset key, example)]}: validation and test drawn only from synsets in
  `held_out`, train only from the others; sizes[split] examples of each label (or in all,
  when `labels` is None). With `word_of(example)`, no word is in two evaluation examples and
  no train example has a word of an evaluation one."""
  groups = labels or (None,)
  label_of = (lambda ex: ex["targets"]) if labels else (lambda ex: None)
  evaluation = {label: [] for label in groups}
  train = {label: [] for label in groups}
  for key, example in examples:
    (evaluation if key in held_out else train)[label_of(example)].append((key, example))
  rng = random.Random(seed)
  splits: dict[str, list] = {split: [] for split in SPLITS}
  used_words = set()
  for label in groups:
    pool = evaluation[label]
    rng.shuffle(pool)
    for split in ("validation", "test"):
      taken = []
      for key, example in pool:
        if len(taken) == sizes[split]:
          break
        word = word_of(example) if word_of else key
        if word not in used_words:
          used_words.add(word)
          taken.append((key, example))
      if len(taken) < sizes[split]:
        raise ValueError(f"Only {len(taken)} held-out WordNet examples of {label!r} for "
                         f"{split}; {sizes[split]} are needed.")
      pool = [row for row in pool if row not in taken]
      splits[split] += taken
  for label in groups:
    pool = [(key, ex) for key, ex in train[label]
            if not word_of or word_of(ex) not in used_words]
    if len(pool) < sizes["train"]:
      raise ValueError(f"Only {len(pool)} WordNet train examples of {label!r}; "
                       f"{sizes['train']} are needed.")
    rng.shuffle(pool)
    splits["train"] += pool[:sizes["train"]]
  for split in SPLITS:
    rng.shuffle(splits[split])
  return splits


def _examples(synsets: Iterable[Synset], make_example) -> Iterator[tuple[str, dict[str, str]]]:
  for synset in synsets:
    example = make_example(synset)
    if example is not None:
      yield synset.key, example


def build_tasks(synsets: Sequence[Synset], seed: int = 0) -> dict[str, dict[str, list]]:
  """{task name: {split: [(synset key, example)]}} for every task of TASK_NAMES.

  wordnet_topic and wordnet_pos fix the held-out synsets (held_out_keys); the other tasks
  evaluate only on those and train only on the rest, so the corpus stays the same.
  """
  tasks = {"wordnet_topic": balanced_splits(synsets, topic_example, TOPIC_LABELS, seed),
           "wordnet_pos": balanced_splits(synsets, pos_example, POS_LABELS, seed + 1)}
  held_out = held_out_keys(tasks)
  by_key = {s.key: s for s in synsets}
  depth = depths(synsets)
  pools = hypernym_pools(synsets, hyponyms_of(synsets), depth)
  counts = sense_counts(synsets)
  first_word = lambda example: example["inputs"].split(" definition: ")[0]
  tasks["wordnet_hypernym"] = held_out_splits(
      _examples(synsets, lambda s: hypernym_example(s, by_key, pools, depth, seed + 2)),
      held_out, TASK_SIZES, HYPERNYM_LABELS, seed + 2)
  tasks["wordnet_senses"] = held_out_splits(
      _examples(synsets, lambda s: senses_example(s, counts)), held_out, TASK_SIZES,
      SENSES_LABELS, seed + 3, word_of=lambda ex: first_word(ex).lower())
  tasks["wordnet_hypernym_word"] = held_out_splits(
      frequent_answers(_examples(synsets, lambda s: hypernym_word_example(s, by_key)),
                       held_out, HYPERNYM_WORD_MIN_TRAIN),
      held_out, HYPERNYM_WORD_SIZES, None, seed + 4)
  return tasks


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
  """Registers every task of TASK_NAMES and the MIXTURES, tokenized with the shipped mini T5's
  vocabulary; jobs re-tokenize them for another model's VOCABULARY_PATH."""
  vocabulary = vocabularies.get_vocabulary(vocabulary_path)
  for name, labels in TASK_LABELS.items():
    jsonl.register_jsonl_task(name, task_files(name), vocabulary=vocabulary,
                              class_labels=labels)
  for mixture, names in MIXTURES.items():
    registry.add_mixture(mixture, [(name, 1.0) for name in names])


register()
