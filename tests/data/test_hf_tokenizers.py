"""Decoder tokenizers: ids equal transformers', the tf.data path equals the eager one, the
BOS/EOS/pad ids of each kind of directory, and one clear error for each bad directory."""

import copy
import json

import numpy as np
import pytest
import seqio
import tensorflow as tf

from prompt_tuning.data import demo, hf_tokenizers, jsonl, tasks, vocabularies
from tests.data import decoder_tokenizers

STRINGS = ("the movie was great", "Hello World!", "a  dull   plot", "zebra quartz ü 東京",
           "I loved it! positive", "", " leading space", "trailing space ")
HF_KINDS = ("llama_like", "gpt2_like", "qwen_like")
# (BOS added, EOS, pad) by hand from decoder_tokenizers' special tokens and files.
EXPECTED_IDS = {"llama_like": (1, 2, 2), "gpt2_like": (None, 0, 0), "qwen_like": (None, 1, 0)}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  base = tmp_path_factory.mktemp("tokenizers")
  made = {kind: getattr(decoder_tokenizers, kind)(base / kind) for kind in HF_KINDS}
  made["sentencepiece"] = decoder_tokenizers.sentencepiece_dir(base / "sp", add_bos_token=True)
  made["sentencepiece_no_bos"] = decoder_tokenizers.sentencepiece_dir(base / "sp_no_bos")
  return made


@pytest.mark.parametrize("kind", HF_KINDS)
def test_tokenizer_json_ids_equal_transformers(dirs, kind):
  import transformers  # pylint: disable=g-import-not-at-top
  vocab = hf_tokenizers.decoder_vocabulary(str(dirs[kind]))
  auto = transformers.AutoTokenizer.from_pretrained(str(dirs[kind]))
  fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(dirs[kind] / "tokenizer.json"))
  assert isinstance(vocab.vocabulary, hf_tokenizers.HfTokenizerVocabulary)
  assert (vocab.bos_id, vocab.eos_id, vocab.pad_id) == EXPECTED_IDS[kind]
  assert vocab.eos_id == (auto.eos_token_id if auto.eos_token_id is not None
                          else auto.convert_tokens_to_ids("<|im_end|>"))
  for text in STRINGS:
    ids = list(vocab.vocabulary.encode(text))
    assert ids == auto(text, add_special_tokens=False).input_ids == fast.encode(
        text, add_special_tokens=False), text
    # What transformers adds with special tokens is exactly our BOS (or nothing).
    assert auto(text).input_ids == ([vocab.bos_id] if vocab.bos_id is not None else []) + ids
    assert vocab.vocabulary.decode(ids) == auto.decode(ids, skip_special_tokens=True)
    # Decoding stops at EOS and drops the special tokens.
    assert vocab.vocabulary.decode(ids + [vocab.eos_id, *ids[:2]]) == auto.decode(
        ids, skip_special_tokens=True)
  assert vocab.vocabulary.decode(vocab.vocabulary.encode("the movie was great")) == (
      "the movie was great")
  assert vocab.vocabulary.vocab_size == len(auto)


@pytest.mark.parametrize("kind", (*HF_KINDS, "sentencepiece"))
def test_tf_data_path_equals_the_eager_path(dirs, kind):
  vocab = hf_tokenizers.decoder_vocabulary(str(dirs[kind])).vocabulary
  ds = tf.data.Dataset.from_tensor_slices(list(STRINGS)).map(
      vocab.encode_tf, num_parallel_calls=2, deterministic=True)
  got = [row.tolist() for row in ds.as_numpy_iterator()]
  assert got == [list(vocab.encode(text)) for text in STRINGS]
  eager = [list(vocab.encode(text)) for text in STRINGS[:4]]
  width = max(map(len, eager)) + 1
  padded = np.full((4, width), vocab.pad_id, np.int32)
  for row, ids in zip(padded, eager):
    row[:len(ids)] = ids
    row[len(ids)] = vocab.eos_id
  decoded = tf.function(vocab.decode_tf)(tf.constant(padded)).numpy().tolist()
  assert [d.decode("utf-8") for d in decoded] == [vocab.decode(ids) for ids in eager]
  if kind != "sentencepiece":  # a string vector gives ragged ids
    ragged = vocab.encode_tf(tf.constant(list(STRINGS[:3])))
    assert ragged.to_list() == eager[:3]


def test_sentencepiece_model_ids_and_bos(dirs):
  import sentencepiece  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  path = dirs["sentencepiece"]
  vocab = hf_tokenizers.decoder_vocabulary(str(path))
  assert isinstance(vocab.vocabulary, seqio.SentencePieceVocabulary)
  assert vocab.vocabulary.extra_ids == 0 and vocab.tokenizer_file.endswith("tokenizer.model")
  assert (vocab.bos_id, vocab.eos_id, vocab.pad_id) == (1, 2, 2)  # no pad piece: EOS
  assert vocab.vocabulary.eos_id == 2 and vocab.vocabulary.pad_id == 2
  model = sentencepiece.SentencePieceProcessor(model_file=str(path / "tokenizer.model"))
  auto = transformers.AutoTokenizer.from_pretrained(str(path))
  # transformers' conversion keeps runs of spaces and drops unknown characters, which
  # SentencePiece normalizes away and maps to <unk>; on text of known pieces they agree.
  for text in ("the movie was great", "hello world!", "I loved it! positive", ""):
    ids = list(vocab.vocabulary.encode(text))
    assert ids == model.encode(text) == auto(text, add_special_tokens=False).input_ids
    assert auto(text).input_ids == [vocab.bos_id] + ids
  no_bos = hf_tokenizers.decoder_vocabulary(str(dirs["sentencepiece_no_bos"]))
  assert no_bos.bos_id is None and no_bos.eos_id == 2
  assert transformers.AutoTokenizer.from_pretrained(
      str(dirs["sentencepiece_no_bos"]))("hello world").input_ids == no_bos.vocabulary.encode(
          "hello world")


def test_tokenizer_json_is_preferred_and_the_same_files_give_the_same_object(dirs, tmp_path):
  directory = decoder_tokenizers.llama_like(tmp_path / "both")
  (directory / "tokenizer.model").write_bytes(
      (dirs["sentencepiece"] / "tokenizer.model").read_bytes())
  first = hf_tokenizers.decoder_vocabulary(str(directory))
  assert first.tokenizer_file == str(directory / "tokenizer.json")
  assert hf_tokenizers.decoder_vocabulary(str(directory)) is first
  clone = copy.deepcopy(first.vocabulary)  # gin deep-copies configurable arguments
  assert clone == first.vocabulary and clone.encode("hello world") == first.vocabulary.encode(
      "hello world")
  config = json.loads((directory / "tokenizer_config.json").read_text())
  config["pad_token"] = "<unk>"
  (directory / "tokenizer_config.json").write_text(json.dumps(config) + " ")
  edited = hf_tokenizers.decoder_vocabulary(str(directory))
  assert edited.pad_id == 0 and edited.vocabulary != first.vocabulary


def test_vocabulary_path_hook_and_task_copy(dirs, tmp_path):
  directory = str(dirs["llama_like"])
  vocab = vocabularies.get_vocabulary(directory)
  assert vocab is hf_tokenizers.decoder_vocabulary(directory).vocabulary
  assert vocabularies.resolve_vocabulary_path(directory) == f"{directory}/tokenizer.json"
  name = tasks.with_vocabulary(demo.TASK_NAME, directory)
  assert name.startswith(demo.TASK_NAME + ".vocab_")
  assert tasks.get_mixture_or_task(name).output_features["targets"].vocabulary is vocab
  assert tasks.with_vocabulary(demo.TASK_NAME, directory) == name
  # VOCABULARY_PATH of data/jsonl.gin: the JSONL task tokenizes with the directory's tokenizer.
  (tmp_path / "train.jsonl").write_text('{"inputs": "hello world", "targets": "positive"}\n')
  jsonl_name = jsonl.jsonl_task(train=str(tmp_path / "train.jsonl"), vocabulary_path=directory,
                                name="decoder_vocabulary_path_test")
  assert tasks.get_mixture_or_task(jsonl_name).output_features["inputs"].vocabulary is vocab
  # A T5 directory keeps its spiece.model even when it also has a tokenizer.json.
  t5_dir = decoder_tokenizers.llama_like(tmp_path / "t5")
  (t5_dir / "spiece.model").write_bytes(open(demo.VOCABULARY_PATH, "rb").read())
  assert vocabularies.get_vocabulary(str(t5_dir)).extra_ids == 100
  with pytest.raises(FileNotFoundError, match=r"has no spiece.model \(T5\), nor tokenizer.json "
                     r"or tokenizer.model"):
    vocabularies.get_vocabulary(str(tmp_path / "t5" / ".."))


def test_missing_tokenizer_names_directory_and_files(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError) as e:
    hf_tokenizers.decoder_vocabulary(str(tmp_path))
  assert str(e.value) == (
      f"Model directory {str(tmp_path)!r} has no tokenizer: looked for tokenizer.json and "
      "tokenizer.model (a decoder-only model's Hugging Face tokenizer); copy the model's "
      "tokenizer files there.")
  with pytest.raises(FileNotFoundError, match="nope' does not exist"):
    hf_tokenizers.decoder_vocabulary(str(tmp_path / "nope"))


def test_no_eos_and_unknown_tokens_are_refused(tmp_path):
  directory = decoder_tokenizers.qwen_like(tmp_path / "no_eos")
  (directory / "config.json").write_text(json.dumps({"bos_token_id": 0}))
  with pytest.raises(hf_tokenizers.TokenizerError, match="has no EOS token: none of "
                     "tokenizer_config.json / special_tokens_map.json"):
    hf_tokenizers.decoder_vocabulary(str(directory))
  (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</eos>"}))
  with pytest.raises(hf_tokenizers.TokenizerError,
                     match="names eos_token '</eos>', which the tokenizer does not know"):
    hf_tokenizers.decoder_vocabulary(str(directory))
  (directory / "tokenizer_config.json").write_text(json.dumps({}))
  (directory / "config.json").write_text(json.dumps({"eos_token_id": 5000}))
  with pytest.raises(hf_tokenizers.TokenizerError, match="EOS id 5000 is outside"):
    hf_tokenizers.decoder_vocabulary(str(directory))
  (directory / "tokenizer.json").write_text("{not json")
  with pytest.raises(hf_tokenizers.TokenizerError, match="is not a Hugging Face tokenizers file"):
    hf_tokenizers.decoder_vocabulary(str(directory))


def test_special_ids_of_another_vocabulary():
  vocab = vocabularies.get_vocabulary(demo.VOCABULARY_PATH)
  assert hf_tokenizers.special_ids(vocab) == hf_tokenizers.SpecialIds(None, 1, 0)
