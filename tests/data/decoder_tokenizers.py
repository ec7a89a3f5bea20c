"""Tiny decoder-only tokenizer directories for the tests, trained in a second or less.

llama_like: a "▁"-for-space BPE whose post-processor puts <s> before every sequence;
  tokenizer_config names <s> / </s>, no pad token (as Llama's).
gpt2_like: a byte-level BPE with no BOS added and one <|endoftext|> for BOS and EOS, no pad.
qwen_like: a byte-level BPE, no BOS added; EOS only as config.json's eos_token_id (a list),
  pad from special_tokens_map.json.
sentencepiece_dir: a SentencePiece BPE tokenizer.model (unk 0, BOS 1, EOS 2, no pad).
"""

import io
import json
from pathlib import Path

TEXTS = ("the movie was great", "a terrible film, really bad", "hello world",
         "I loved it!", "what a great day", "bad acting and a dull plot",
         "the plot was thin but the actors were good", "positive", "negative")


def _bpe(byte_level: bool, special_tokens, vocab_size: int):
  # pylint: disable=g-import-not-at-top,g-multiple-import
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
  if byte_level:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
  else:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                                 normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(),
                                           decoders.Strip(" ", 1, 0)])
    alphabet = []
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                initial_alphabet=alphabet, show_progress=False)
  tokenizer.train_from_iterator(list(TEXTS) * 5, trainer)
  return tokenizer


def _write_json(path: Path, value) -> None:
  path.write_text(json.dumps(value), encoding="utf-8")


def llama_like(directory: Path) -> Path:
  from tokenizers import processors  # pylint: disable=g-import-not-at-top
  directory.mkdir(parents=True, exist_ok=True)
  tokenizer = _bpe(False, ["<unk>", "<s>", "</s>"], 120)
  tokenizer.post_processor = processors.TemplateProcessing(
      single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
  tokenizer.save(str(directory / "tokenizer.json"))
  _write_json(directory / "tokenizer_config.json",
              {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
               "eos_token": {"content": "</s>", "__type": "AddedToken"}, "unk_token": "<unk>"})
  _write_json(directory / "config.json", {"bos_token_id": 1, "eos_token_id": 2})
  return directory


def gpt2_like(directory: Path) -> Path:
  directory.mkdir(parents=True, exist_ok=True)
  tokenizer = _bpe(True, ["<|endoftext|>"], 300)
  tokenizer.save(str(directory / "tokenizer.json"))
  _write_json(directory / "tokenizer_config.json",
              {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>",
               "eos_token": "<|endoftext|>"})
  _write_json(directory / "config.json", {"bos_token_id": 0, "eos_token_id": 0})
  return directory


def qwen_like(directory: Path) -> Path:
  directory.mkdir(parents=True, exist_ok=True)
  tokenizer = _bpe(True, ["<|endoftext|>", "<|im_end|>"], 300)
  tokenizer.save(str(directory / "tokenizer.json"))
  _write_json(directory / "special_tokens_map.json", {"pad_token": "<|endoftext|>"})
  _write_json(directory / "config.json", {"eos_token_id": [1, 0], "bos_token_id": 0})
  return directory


def sentencepiece_dir(directory: Path, **config) -> Path:
  import sentencepiece  # pylint: disable=g-import-not-at-top
  directory.mkdir(parents=True, exist_ok=True)
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(list(TEXTS) * 20), model_writer=model, vocab_size=70,
      model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
  (directory / "tokenizer.model").write_bytes(model.getvalue())
  _write_json(directory / "tokenizer_config.json",
              {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
               **config})
  return directory
