"""WordNet parsing, the shipped wordnet_topic / wordnet_pos tasks and the held-out corpus."""

import collections
import json
import os

import pytest

from prompt_tuning.data import features, registry, tasks, wordnet

DOG = ("02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 001 @ 02083346 n 0000 | a "
       "member of the genus Canis (probably descended from the common wolf) that has been "
       'domesticated by man since prehistoric times; "the dog barked all night"  \n')
ADJ = ("00001740 00 a 01 able(p) 0 001 ! 00002098 a 0101 | (usually followed by `to') having "
       'the necessary means or skill; "able to swim"; "she was able to program her computer"  \n')
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
  assert wordnet.topic_example(dog) == {"inputs": dog.definition, "targets": "animal"}
  assert dog.corpus_text().startswith("dog, domestic dog, Canis familiaris: a member")
  able = wordnet.parse_line(ADJ)
  assert able.lemmas == ("able",) and len(able.examples) == 2
  assert wordnet.pos_example(able) == {
      "inputs": "definition: (usually followed by `to') having the necessary means or skill "
                "example: ___ to swim", "targets": "adjective"}
  assert wordnet.parse_line("  1 This software and database is being provided\n") is None


@pytest.mark.parametrize("name,labels", [("wordnet_topic", wordnet.TOPIC_LABELS),
                                         ("wordnet_pos", wordnet.POS_LABELS)])
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


@needs_wordnet
def test_shipped_files_are_what_wordnet_gives(tmp_path):
  """The recipe's data stage remakes the shipped task files byte for byte, and its corpus
  leaves out every synset of the validation and test splits."""
  synsets = wordnet.read_synsets()
  built = wordnet.build_tasks(synsets)
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
