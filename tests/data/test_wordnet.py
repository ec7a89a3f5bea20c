"""WordNet parsing, the shipped WordNet tasks and the held-out corpus."""

import ast
import collections
import json
import os
import pathlib

import numpy as np
import pytest

from benchmarks import mini_t5_prompt_tuning as mini
from prompt_tuning import eval as eval_lib
from prompt_tuning import pretrained
from prompt_tuning.data import features, registry, tasks, vocabularies, wordnet

DOG = ("02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 001 @ 02083346 n 0000 | a "
       "member of the genus Canis (probably descended from the common wolf) that has been "
       'domesticated by man since prehistoric times; "the dog barked all night"  \n')
ADJ = ("00001740 00 a 01 able(p) 0 001 ! 00002098 a 0101 | (usually followed by `to') having "
       'the necessary means or skill; "able to swim"; "she was able to program her computer"  \n')
INSTANCE = ("00208141 04 n 01 Babylonian_Captivity 0 001 @i 00207761 n 0000 | the deportation of "
            "the Jews to Babylonia by Nebuchadnezzar in 586 BC  \n")
HAVE_WORDNET = os.path.isfile(os.path.join(wordnet.WORDNET_DIR, "data.noun"))
needs_wordnet = pytest.mark.skipif(not HAVE_WORDNET, reason="WordNet (wordnet-base) is absent")


def _rows(name, split):
  with open(wordnet.task_files(name)[split], encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_parse_line():
  dog = wordnet.parse_line(DOG)
  assert dog.key == "n02084071" and dog.lexfile == 5
  assert dog.lemmas == ("dog", "domestic dog", "Canis familiaris")
  assert dog.definition.startswith("a member of the genus Canis (probably")
  assert dog.definition.endswith("since prehistoric times")
  assert dog.examples == ("the dog barked all night",)
  assert dog.hypernyms == ("n02083346",)
  assert wordnet.parse_line(INSTANCE).hypernyms == ("n00207761",)
  assert wordnet.topic_example(dog) == {"inputs": dog.definition, "targets": "animal"}
  assert dog.corpus_text().startswith("dog, domestic dog, Canis familiaris: a member")
  able = wordnet.parse_line(ADJ)
  assert able.lemmas == ("able",) and len(able.examples) == 2
  assert wordnet.pos_example(able) == {
      "inputs": "definition: (usually followed by `to') having the necessary means or skill "
                "example: ___ to swim", "targets": "adjective"}
  assert wordnet.parse_line("  1 This software and database is being provided\n") is None


@pytest.mark.parametrize("name,labels", [(name, labels) for name, labels
                                         in wordnet.TASK_LABELS.items() if labels])
def test_shipped_tasks_are_balanced_and_disjoint(name, labels):
  seen = set()
  for split, per_class in wordnet.TASK_SIZES.items():
    rows = _rows(name, split)
    assert collections.Counter(r["targets"] for r in rows) == {l: per_class for l in labels}
    keys = {r["synset"] for r in rows}
    assert len(keys) == len(rows) and not keys & seen
    seen |= keys
  assert registry.class_labels(name) == labels
  assert name in tasks.registered_names()


def test_pos_inputs_hide_the_word():
  for row in _rows("wordnet_pos", "train")[:200]:
    assert "___" in row["inputs"].split(" example: ")[1]


def test_registered_task_reads_the_files():
  examples = features.get_examples("wordnet_topic", "validation", {"inputs": 48, "targets": 4})
  assert len(examples) == 600
  assert examples[0]["inputs_pretokenized"] == _rows("wordnet_topic", "validation")[0]["inputs"]


@pytest.fixture(scope="module")
def real_wordnet():
  """(synsets, built tasks) of the installed WordNet: read and built once (~30 s)."""
  if not HAVE_WORDNET:
    pytest.skip("WordNet (wordnet-base) is absent")
  synsets = wordnet.read_synsets()
  return synsets, wordnet.build_tasks(synsets)


def test_shipped_files_are_what_wordnet_gives(real_wordnet, tmp_path):
  """The recipe's data stage remakes the shipped task files byte for byte, and its corpus
  leaves out every synset of the validation and test splits."""
  synsets, built = real_wordnet
  wordnet.write_tasks(built, str(tmp_path))
  for name in wordnet.TASK_NAMES:
    for split, path in wordnet.task_files(name).items():
      assert (tmp_path / os.path.basename(path)).read_bytes() == open(path, "rb").read()
  held_out = wordnet.held_out_keys(built)
  assert held_out == {r["synset"] for name in wordnet.TASK_NAMES
                      for split in ("validation", "test") for r in _rows(name, split)}
  corpus = list(wordnet.corpus_lines(synsets, held_out))
  assert len(corpus) == len(synsets) - len(held_out)
  by_text = {s.corpus_text() for s in synsets if s.key in held_out}
  assert not by_text & set(corpus)


def test_missing_wordnet_names_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="data.noun.*apt-get install wordnet-base"):
    wordnet.read_synsets(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# The tasks built on the held-out synsets: wordnet_hypernym, wordnet_senses,
# wordnet_hypernym_word

NEW_TASKS = ("wordnet_hypernym", "wordnet_senses", "wordnet_hypernym_word")
# WordNet's verb lexicographer files: an independent check uses them, so no task may.
VERB_LEXNAMES = ("body", "change", "cognition", "communication", "competition", "consumption",
                 "contact", "creation", "emotion", "motion", "perception", "possession",
                 "social", "stative", "weather")
GIN_DIR = pathlib.Path(__file__).resolve().parents[2] / "gin_configs" / "data"


def _synset(key, lemmas, definition, hypernyms=(), lexfile=3):
  return wordnet.Synset(key, key[0], lexfile, tuple(lemmas), definition, (), tuple(hypernyms))


# entity > animal > {canine > {dog, wolf}, ursine > {bear}, feline > {cat}, bird (no hyponyms)};
# canine and ursine share a lexicographer file (5), feline has its own (6).
TREE = [_synset("n0", ["entity"], "that which exists"),
        _synset("n1", ["animal"], "a living organism", ["n0"]),
        _synset("n2", ["canine"], "a flesh-eating mammal", ["n1"], lexfile=5),
        _synset("n3", ["feline"], "a cat-like mammal", ["n1"], lexfile=6),
        _synset("n9", ["ursine"], "a bear-like mammal", ["n1"], lexfile=5),
        _synset("n7", ["bird"], "a warm-blooded egg-laying vertebrate", ["n1"]),
        _synset("n4", ["dog", "domestic dog"], "a domesticated carnivore that barks", ["n2"]),
        _synset("n5", ["wolf"], "a wild carnivore that howls", ["n2"]),
        _synset("n6", ["cat"], "a small domesticated carnivore", ["n3"]),
        _synset("n10", ["bear"], "a large heavy carnivore", ["n9"])]


def test_hypernym_example_asks_about_the_hypernym_or_a_noun_of_another_field():
  by_key = {s.key: s for s in TREE}
  below = wordnet.hyponyms_of(TREE)
  depth = wordnet.depths(TREE)
  assert [depth[s.key] for s in TREE] == [0, 1, 2, 2, 2, 2, 3, 3, 3, 3]
  assert wordnet.ancestors(by_key["n4"], by_key) == {"n2", "n1", "n0"}
  pools = wordnet.hypernym_pools(TREE, below, depth)
  assert pools == {0: ["n0"], 1: ["n1"], 2: ["n2", "n3", "n9"]}  # bird: no hyponyms
  seen = {}
  for seed in range(20):
    example = wordnet.hypernym_example(by_key["n4"], by_key, pools, depth, seed)
    seen[example["inputs"]] = example["targets"]
  # False: "feline", at the hypernym's depth with hyponyms, of another lexicographer file;
  # never an ancestor, never "ursine" (canine's file), never "bird" (no hyponyms).
  ask = lambda b, definition: (f"is dog a kind of {b}? dog: a domesticated carnivore that "
                               f"barks; {b}: {definition}")
  assert seen == {ask("canine", "a flesh-eating mammal"): "true",
                  ask("feline", "a cat-like mammal"): "false"}
  # The definition names the hypernym: a surface cue, so no example whatever the coin.
  cue = _synset("n8", ["jackal"], "a wild canine of Africa", ["n2"])
  assert all(wordnet.hypernym_example(cue, by_key, pools, depth, seed) is None
             for seed in range(10))
  assert wordnet.hypernym_example(by_key["n0"], by_key, pools, depth, 0) is None  # no hypernym
  verb = _synset("v1", ["bark"], "make a barking sound", ["v0"])
  assert wordnet.hypernym_example(verb, by_key, pools, depth, 0) is None


def test_hypernym_word_example_names_an_uncopied_frequent_hypernym():
  by_key = {s.key: s for s in TREE}
  make = lambda synset: wordnet.hypernym_word_example(synset, by_key)
  assert make(by_key["n4"]) == {"inputs": "noun: a domesticated carnivore that barks",
                                "targets": "canine"}
  assert make(by_key["n0"]) is None  # no hypernym
  assert make(_synset("n8", ["jackal"], "a wild canine of Africa", ["n2"])) is None  # copied
  by_key["v0"] = _synset("v0", ["sound"], "make a noise")
  assert make(_synset("v1", ["howl"], "cry loudly", ["v0"])) == {
      "inputs": "verb: cry loudly", "targets": "sound"}
  rows = [(key, make(by_key[key])) for key in ("n4", "n5", "n6", "n10")]
  # canine answers n4 and n5, feline n6 and ursine n10; n5 is held out, so canine has one
  # example outside: with minimum 1 every row stays, with minimum 2 none does.
  assert list(wordnet.frequent_answers(rows, {"n5"}, 1)) == rows
  assert list(wordnet.frequent_answers(rows, {"n5"}, 2)) == []
  assert list(wordnet.frequent_answers(rows, set(), 2)) == rows[:2]


def test_senses_example_counts_senses_across_parts_of_speech_and_case():
  synsets = [_synset("n1", ["bank"], "sloping land beside a body of water"),
             _synset("n2", ["bank", "depository financial institution"], "a financial institution"),
             _synset("v1", ["bank"], "do business with a bank"),
             _synset("n3", ["Bank"], "a surname"),
             _synset("n4", ["rank"], "a row of people"), _synset("v2", ["rank"], "take a position"),
             _synset("n5", ["wolf"], "a wild carnivore")]
  counts = wordnet.sense_counts(synsets)
  targets = [wordnet.senses_example(s, counts)["targets"] for s in synsets]
  assert targets == ["many", "many", "many", "many", "few", "few", "one"]
  assert wordnet.senses_example(synsets[4], counts)["inputs"] == (
      "word: rank definition: a row of people")


def test_held_out_splits_evaluate_only_on_held_out_synsets():
  rows = [(f"k{i}", {"inputs": f"in{i}", "targets": "ab"[i % 2], "word": f"w{i % 30}"})
          for i in range(40)]
  held_out = {f"k{i}" for i in (*range(12), 30)}  # k30 has k0's word
  sizes = {"train": 5, "validation": 2, "test": 2}
  word_of = lambda example: example["word"]
  splits = wordnet.held_out_splits(rows, held_out, sizes, ("a", "b"), 0, word_of=word_of)
  evaluation = splits["validation"] + splits["test"]
  assert {key for key, _ in evaluation} <= held_out
  assert not {key for key, _ in splits["train"]} & held_out
  for split, size in sizes.items():
    assert collections.Counter(ex["targets"] for _, ex in splits[split]) == {"a": size, "b": size}
  words = [word_of(ex) for _, ex in evaluation]
  assert len(set(words)) == len(words)
  assert not {word_of(ex) for _, ex in splits["train"]} & set(words)  # k3x share k0-k9's
  assert splits == wordnet.held_out_splits(rows, held_out, sizes, ("a", "b"), 0,
                                           word_of=word_of)
  with pytest.raises(ValueError, match="Only 6 held-out WordNet examples of 'a' for validation"):
    wordnet.held_out_splits(rows, held_out, {**sizes, "validation": 7}, ("a", "b"), 0,
                            word_of=word_of)


@pytest.mark.parametrize("name", NEW_TASKS)
def test_new_tasks_evaluate_on_the_corpus_held_out_synsets(name):
  """Validation and test come only from synsets the mini T5's corpus left out (those of
  wordnet_topic's and wordnet_pos's validation and test splits); train only from the rest."""
  held_out = {r["synset"] for task in ("wordnet_topic", "wordnet_pos")
              for split in ("validation", "test") for r in _rows(task, split)}
  assert len(held_out) == 1998
  for split in ("validation", "test"):
    assert {r["synset"] for r in _rows(name, split)} <= held_out
  assert not {r["synset"] for r in _rows(name, "train")} & held_out


def test_new_tasks_shipped_sizes_words_and_formats():
  named = {split: _rows("wordnet_hypernym_word", split) for split in wordnet.SPLITS}
  assert {s: len(r) for s, r in named.items()} == wordnet.HYPERNYM_WORD_SIZES
  assert registry.class_labels("wordnet_hypernym_word") is None
  train_answers = collections.Counter(r["targets"] for r in named["train"])
  for row in named["test"]:
    pos, definition = row["inputs"].split(": ", 1)
    assert pos in ("noun", "verb")
    assert f" {row['targets'].lower()}" not in f" {definition.lower()}"
  # Nearly every test answer is taught by the train split; no one answer dominates.
  assert sum(r["targets"] in train_answers for r in named["test"]) >= 0.9 * len(named["test"])
  assert max(collections.Counter(r["targets"] for r in named["test"]).values()) <= 10
  senses_word = lambda r: r["inputs"].split(" definition: ")[0].removeprefix("word: ").lower()
  evaluation = [senses_word(r) for split in ("validation", "test")
                for r in _rows("wordnet_senses", split)]
  assert len(set(evaluation)) == len(evaluation)
  assert not {senses_word(r) for r in _rows("wordnet_senses", "train")} & set(evaluation)
  for row in _rows("wordnet_hypernym", "train"):
    a, b = row["inputs"].removeprefix("is ").split("? ")[0].split(" a kind of ")
    assert row["inputs"].index(f"? {a}: ") < row["inputs"].index(f"; {b}: ")
  # Hand-checked against WordNet 3.0's index files and data.noun.
  assert {"inputs": "word: insist definition: assert to be true", "targets": "few",
          "synset": "v00717063"} in _rows("wordnet_senses", "test")  # 3 verb senses
  assert {"inputs": "word: bureaucrat definition: an official of a bureaucracy",
          "targets": "one", "synset": "n09880427"} in _rows("wordnet_senses", "test")
  assert {"inputs": "is castor sugar a kind of powdered sugar? castor sugar: very finely "
                    "granulated sugar that was formerly sprinkled from a castor; powdered "
                    "sugar: sugar granulated into a fine powder",
          "targets": "true", "synset": "n07595751"} in _rows("wordnet_hypernym", "test")
  assert {"inputs": "noun: mixtures of vinegar or wine and oil with various spices and "
                    "seasonings; used for soaking foods before cooking",
          "targets": "condiment", "synset": "n07824502"} in named["test"]


def test_labels_mixture_and_metrics_of_every_task():
  for name, labels in wordnet.TASK_LABELS.items():
    assert registry.class_labels(name) == labels
    for label in labels or ():
      assert label not in VERB_LEXNAMES and not label.startswith("verb.")
  mixture = tasks.get_mixture_or_task(wordnet.MIXTURE_NAME)
  assert sorted(t.name for t in mixture.tasks) == sorted(wordnet.TASK_NAMES)
  assert all(mixture.get_rate(t) == 1.0 for t in mixture.tasks)
  classification = tasks.get_mixture_or_task("wordnet_classification")
  assert sorted(t.name for t in classification.tasks) == [
      "wordnet_hypernym", "wordnet_pos", "wordnet_senses", "wordnet_topic"]
  assert sorted(t.name for t in tasks.get_mixture_or_task("wordnet_topic_pos").tasks) == [
      "wordnet_pos", "wordnet_topic"]
  # Rank classification is refused on `wordnet` (a generated task) and allowed on the other.
  with pytest.raises(ValueError, match="'wordnet_hypernym_word' has no class labels"):
    eval_lib.check_class_labels(mixture.tasks)
  eval_lib.check_class_labels(classification.tasks)
  # The hypernym's word: exact match of the whitespace-normalised generated text.
  named = tasks.get_mixture_or_task("wordnet_hypernym_word")
  predictions = [named.postprocess_fn(" fish  genus "), "condiments", "Condiment"]
  assert named.metric_fns[0](["fish genus", "condiment", "condiment"], predictions) == {
      "accuracy": pytest.approx(100 / 3)}


def _gin_macros(path):
  macros = {}
  for line in path.read_text().splitlines():
    name, sep, value = line.partition(" = ")
    if sep and name.isupper():
      macros[name] = ast.literal_eval(value.split("  #")[0])
  return macros


@pytest.mark.parametrize("name", wordnet.TASK_NAMES)
def test_gin_file_and_feature_lengths_cut_under_one_percent(name):
  macros = _gin_macros(GIN_DIR / f"{name}.gin")
  assert macros["MIXTURE_OR_TASK_NAME"] == name
  assert tuple(macros.get("CLASS_LABELS", ())) == (wordnet.TASK_LABELS[name] or ())
  assert macros["TASK_FEATURE_LENGTHS"] == mini.TASKS[name]
  vocabulary = vocabularies.get_vocabulary(pretrained.MINI_VOCABULARY_PATH)
  rows = [r for split in wordnet.SPLITS for r in _rows(name, split)]
  for feature, length in mini.TASKS[name].items():
    tokens = np.array([len(vocabulary.encode(r[feature])) + 1 for r in rows])  # + EOS
    assert (tokens > length).mean() < 0.01, feature


def _index_sense_counts():
  """{lemma: senses} summed over WordNet's four index files (independent of the data files)."""
  counts = collections.Counter()
  for pos in wordnet.POS_FILES:
    with open(os.path.join(wordnet.WORDNET_DIR, f"index.{pos}"), encoding="utf-8") as f:
      for line in f:
        if not line.startswith(" "):
          fields = line.split()
          counts[fields[0].replace("_", " ")] += int(fields[2])
  return counts


def test_new_tasks_follow_their_rules_on_real_wordnet(real_wordnet):
  synsets, built = real_wordnet
  by_key = {s.key: s for s in synsets}
  rows = lambda name: [{**ex, "synset": key} for split in ("validation", "test")
                       for key, ex in built[name][split]]
  depth = wordnet.depths(synsets)
  for row in rows("wordnet_hypernym"):
    a = by_key[row["synset"]]
    word = row["inputs"].removeprefix(f"is {a.lemmas[0]} a kind of ").split("? ")[0]
    assert f"? {a.lemmas[0]}: {a.definition}; {word}: " in row["inputs"]
    assert f" {word.lower()}" not in f" {a.definition.lower()}"
    parent = by_key[a.hypernyms[0]]
    if row["targets"] == "true":
      assert word == parent.lemmas[0]
    else:
      ancestor_words = {l.lower() for k in wordnet.ancestors(a, by_key)
                        for l in by_key[k].lemmas}
      b = [s for s in synsets if s.pos == "n" and s.lemmas[0] == word
           and row["inputs"].endswith(f"; {word}: {s.definition}")]
      assert word.lower() not in ancestor_words and len(b) == 1
      assert b[0].lexfile != parent.lexfile and depth[b[0].key] == depth[parent.key]
  index = _index_sense_counts()
  for row in rows("wordnet_senses"):
    word = row["inputs"].split(" definition: ")[0].removeprefix("word: ").lower()
    count = index[word]
    assert row["targets"] == ("one" if count == 1 else "few" if count <= 3 else "many"), word
  for row in rows("wordnet_hypernym_word"):
    assert by_key[by_key[row["synset"]].hypernyms[0]].lemmas[0] == row["targets"]
