"""Reading a prompt by its nearest tokens: the numpy API, then the command on the mini T5."""

import json
import shutil
import subprocess

import gin
import numpy as np
import pytest

from prompt_tuning import inspect as inspect_lib
from prompt_tuning import pretrained
from prompt_tuning.checkpoints import huggingface

from subprocess_helpers import REPO, job_command, job_env

MINI = "--gin_file=models/t5_1_1_mini_prompt.gin"


class WordVocabulary:
  """A toy vocabulary: one id per word, text split on spaces (no SentencePiece, no seqio)."""

  def __init__(self, words):
    self.words = list(words)

  def encode(self, text):
    return [self.words.index(w) for w in text.split()]

  def decode(self, ids):
    return " ".join(self.words[i] for i in ids)


WORDS = ["<pad>", "</s>", "<unk>", "cat", "dog", "apple", "pear", "yes", "no", "red", "blue",
         "green"]


def random_table(vocab=40, width=16, seed=0):
  return np.random.default_rng(seed).normal(size=(vocab, width)).astype(np.float32)


def test_rows_copied_from_the_table_find_their_tokens_first():
  table = random_table()
  chosen = [7, 3, 39, 0]
  prompt = table[chosen] * np.array([[1.0], [2.5], [0.1], [7.0]], np.float32)  # cosine: scale-free
  ids, sims = inspect_lib.nearest_tokens(prompt, table, k=4)
  assert ids.shape == sims.shape == (4, 4)
  np.testing.assert_array_equal(ids[:, 0], chosen)
  np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-6)
  assert np.all(np.diff(sims, axis=1) <= 0)  # best first
  unit = table / np.linalg.norm(table, axis=1, keepdims=True)
  expected = np.argsort(-(unit[chosen] @ unit.T), axis=1)[:, :4]
  np.testing.assert_array_equal(ids, expected)


def test_chunks_give_the_same_neighbours(monkeypatch):
  table, prompt = random_table(vocab=100), random_table(vocab=5, seed=1)
  whole = inspect_lib.nearest_tokens(prompt, table, k=7)
  monkeypatch.setattr(inspect_lib, "_CHUNK_ELEMENTS", 16 * 3)  # 3 rows at a time
  chunked = inspect_lib.nearest_tokens(prompt, table, k=7)
  np.testing.assert_array_equal(whole[0], chunked[0])
  np.testing.assert_allclose(whole[1], chunked[1], atol=1e-12)


def test_class_labels_are_found_among_the_neighbours():
  vocab = WordVocabulary(WORDS)
  table = np.eye(len(WORDS), 16, dtype=np.float32)  # orthogonal tokens: exact neighbours
  red, blue = table[WORDS.index("red")], table[WORDS.index("blue")]
  prompt = np.stack([table[WORDS.index("cat")], (red + blue) / 2, red, table[WORDS.index("yes")]])
  labels = inspect_lib.label_ids(["cat", "red blue", "pear"], vocab)
  assert labels == {"cat": [3], "red blue": [9, 10], "pear": [6]}
  ids, _ = inspect_lib.nearest_tokens(prompt, table, k=2)
  assert inspect_lib.find_class_labels(ids, labels) == [
      {"cat": [3]}, {"red blue": [9, 10]}, {"red blue": [9]}, {}]

  rows = inspect_lib.inspect_prompt(prompt, table, vocab, k=2,
                                    class_labels=["cat", "red blue", "pear"])
  assert [n["token"] for n in rows[0]["neighbors"]] == ["cat", "<pad>"]
  assert rows[0]["neighbors"][0]["similarity"] == pytest.approx(1.0, abs=1e-6)
  assert rows[2]["class_labels"] == [{"label": "red blue", "found": ["red"], "num_pieces": 2}]
  table_text = inspect_lib.format_report(
      inspect_lib.inspect_prompts({"p.npy": prompt}, table, vocab, 2, ["cat", "red blue"]))
  assert "red blue (1/2 pieces)" in table_text.splitlines()[4]
  assert table_text.splitlines()[2].split()[:3] == ["0", "cat", "1.000"]


def test_pairwise_similarity():
  a, b = random_table(vocab=8, seed=1), random_table(vocab=8, seed=2)
  same = inspect_lib.prompt_similarity(a, a)
  assert same["matching_rows"] == pytest.approx(1.0, abs=1e-9)
  assert same["mean_vector"] == pytest.approx(1.0, abs=1e-9)
  other = inspect_lib.prompt_similarity(a, b)
  assert other["matching_rows"] < 0.9 and other["mean_vector"] < 0.9
  shorter = inspect_lib.prompt_similarity(a, a[:5])
  assert shorter["matching_rows"] is None and shorter["mean_vector"] < 1.0
  pairs = inspect_lib.compare_prompts({"a": a, "b": b, "a again": a})
  assert [(p["a"], p["b"]) for p in pairs] == [("a", "b"), ("a", "a again"), ("b", "a again")]
  assert pairs[1]["matching_rows"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("k", [0, -1, 41, 2.0, True])
def test_k_out_of_range_is_refused(k):
  with pytest.raises(ValueError, match=f"k={k!r} must be an integer from 1 to the "
                                       "vocabulary size 40"):
    inspect_lib.nearest_tokens(random_table()[:2], random_table(), k=k)


def test_width_mismatch_is_refused():
  with pytest.raises(ValueError, match="has width 8 but the embedding table"):
    inspect_lib.nearest_tokens(random_table(width=8)[:2], random_table(), k=1)


# ------------------------------------------------------------------------------------------
# The command: its checks in this process, then the command itself on the shipped mini T5.


@pytest.fixture(scope="module")
def mini_table():
  """The mini T5's embedding table [8192, 256], read alone from its safetensors file."""
  config = huggingface.config_from_hf(pretrained.MINI_DIR)
  lazy = huggingface.read_huggingface(pretrained.MINI_DIR, config)
  return lazy[inspect_lib.EMBEDDING_KEY].read_all()


@pytest.fixture(scope="module")
def label_prompt(tmp_path_factory, mini_table):
  """A prompt of 3 rows: the embeddings of 'animal' and 'food', then the mean of both."""
  animal, food = mini_table[608], mini_table[333]  # one piece each (docs/mini_t5.md)
  path = tmp_path_factory.mktemp("prompts") / "labels.npy"
  np.save(path, np.stack([animal, food, (animal + food) / 2]))
  return str(path)


def parse_gin(*files):
  """The gin files, parsed as the command does (gin_utils imports TensorFlow: not here)."""
  gin.clear_config()
  gin.add_config_file_search_path(str(REPO / "gin_configs"))
  gin.parse_config_files_and_bindings(files, [], finalize_config=False)


@pytest.fixture
def mini_gin():
  parse_gin("models/t5_1_1_mini_prompt.gin")
  yield
  gin.clear_config()


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, "k=0 must be an integer from 1 to the vocabulary size 8192"),
    ({"k": 8193}, "k=8193 must be an integer from 1 to the vocabulary size 8192"),
    ({"prompt_files": ["/no/such/prompt.npy"]}, "--prompt_file='/no/such/prompt.npy' does not "
                                                "exist"),
    ({"prompt_files": "narrow"}, r"has width 128 \(shape \[3, 128\]\) but the model's "
                                 "embedding table has width 256"),
    ({"prompt_files": []}, "No --prompt_file given"),
    ({"class_labels": [""]}, "must be a list of non-empty strings"),
])
def test_command_inputs_are_checked(mini_gin, tmp_path, label_prompt, kwargs, message):
  if kwargs.get("prompt_files") == "narrow":
    np.save(tmp_path / "narrow.npy", np.ones((3, 128), np.float32))
    kwargs = {"prompt_files": [str(tmp_path / "narrow.npy")]}
  with pytest.raises(ValueError, match=message):
    inspect_lib.inspect_command(**{"prompt_files": [label_prompt], **kwargs})


def test_command_without_a_checkpoint_says_so():
  try:
    parse_gin("models/hf_t5_prompt.gin")
    with pytest.raises(ValueError, match="INITIAL_CHECKPOINT_PATH must be set"):
      inspect_lib.configured_model()
  finally:
    gin.clear_config()


@pytest.fixture(scope="module")
def command_runs(label_prompt, tmp_path_factory):
  """{name: CompletedProcess} of the command run three ways, side by side (each start
  imports TensorFlow for the checkpoint loaders and seqio: some 10 s of CPU)."""
  folder = tmp_path_factory.mktemp("command")
  shutil.copy(label_prompt, folder / "copy.npy")
  np.save(folder / "narrow.npy", np.ones((3, 128), np.float32))
  runs = {
      "text": [f"--prompt_file={label_prompt}", MINI, "--k=3",
               "--class_labels=animal,food,plant"],
      "json": [f"--prompt_file={label_prompt}", f"--prompt_file={folder / 'copy.npy'}", MINI,
               "--json"],
      "narrow": [f"--prompt_file={folder / 'narrow.npy'}", MINI],
  }
  started = {name: subprocess.Popen(job_command("inspect", *flags), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=job_env(), cwd=REPO)
             for name, flags in runs.items()}
  done = {}
  for name, proc in started.items():
    stdout, stderr = proc.communicate(timeout=600)
    done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
  return done


def test_command_prints_the_table(command_runs, label_prompt):
  proc = command_runs["text"]
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  assert lines[0].startswith(f"{label_prompt}: 3 rows x 256; the 3 nearest of 8192 tokens")
  assert lines[1].split() == ["row", "nearest", "tokens", "class", "labels"]
  assert lines[2].split()[:3] == ["0", "▁animal", "1.000"] and lines[2].endswith("animal")
  assert lines[3].split()[:3] == ["1", "▁food", "1.000"] and lines[3].endswith("food")
  assert lines[4].endswith("animal, food")  # the mean of two tokens sits near both


def test_command_prints_json(command_runs, label_prompt):
  proc = command_runs["json"]
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout)
  assert report["embedding_shape"] == [8192, 256] and report["k"] == 5
  assert report["checkpoint"] == pretrained.MINI_DIR
  assert report["class_labels"] == []  # the model's gin file binds no CLASS_LABELS
  rows = report["prompts"][0]["rows"]
  assert [len(r["neighbors"]) for r in rows] == [5, 5, 5]
  assert rows[0]["neighbors"][0] == {"id": 608, "token": "▁animal",
                                     "similarity": pytest.approx(1.0, abs=1e-6)}
  assert report["prompts"][1]["rows"] == rows
  [pair] = report["similarity"]
  assert pair["a"] == label_prompt and pair["b"].endswith("copy.npy")
  assert pair["matching_rows"] == pytest.approx(1.0) == pair["mean_vector"]


def test_command_bad_input_is_one_line_without_traceback(command_runs):
  proc = command_runs["narrow"]
  assert proc.returncode != 0 and not proc.stdout
  assert "Traceback" not in proc.stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "has width 128" in errors[0] and "width 256" in errors[0]
