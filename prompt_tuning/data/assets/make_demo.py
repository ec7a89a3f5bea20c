"""Writes the demo task's data and vocabulary into this folder (deterministic; rerun to rebuild).

  python prompt_tuning/data/assets/make_demo.py

demo_{train,validation,test}.jsonl: 200 / 50 / 50 short synthetic product and film reviews,
{"inputs": sentence, "targets": "positive" | "negative"}; the label follows the polarity of the
adjectives, so a model can learn it. demo_sentiment.model: a 512-piece SentencePiece (BPE) model
trained on those sentences plus the label words, with T5's special ids (pad 0, eos 1, unk 2,
no bos).
"""

import io
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = {"train": 200, "validation": 50, "test": 50}
LABELS = ("positive", "negative")
VOCAB_SIZE = 512

NOUNS = ["movie", "film", "book", "restaurant", "meal", "hotel", "service", "phone", "album",
         "show", "game", "concert", "class", "trip", "coffee", "camera", "laptop", "novel",
         "pizza", "museum", "play", "song", "app", "chair", "bike", "room", "tour", "guide",
         "burger", "soup", "series", "course", "jacket", "headphones", "garden", "bakery"]
ADJECTIVES = {
    "positive": ["great", "wonderful", "excellent", "amazing", "delightful", "fantastic",
                 "lovely", "superb", "charming", "brilliant", "enjoyable", "pleasant",
                 "perfect", "beautiful", "fun", "fresh", "friendly", "clever", "cozy", "tasty"],
    "negative": ["terrible", "awful", "boring", "dull", "horrible", "disappointing", "bad",
                 "poor", "annoying", "mediocre", "bland", "painful", "ugly", "broken", "slow",
                 "rude", "noisy", "stale", "confusing", "cheap"],
}
ENDINGS = {
    "positive": ["i would go again", "highly recommended", "worth every penny",
                 "i will tell my friends", "a real treat", "it made my day"],
    "negative": ["never again", "a waste of money", "not recommended", "i want a refund",
                 "what a letdown", "it ruined my day"],
}
INTENSIFIERS = ["", "really ", "very ", "truly ", "quite ", "so ", "extremely "]
TEMPLATES = [
    "the {noun} was {intensifier}{adj} .",
    "i found the {noun} {intensifier}{adj} .",
    "what a {adj} {noun} !",
    "honestly , the {noun} felt {adj} and {adj2} .",
    "my friends said the {noun} is {intensifier}{adj} .",
    "the {noun} was {adj} , {ending} .",
    "{ending} : the {noun} is {intensifier}{adj} .",
    "we tried the new {noun} and it was {adj2} .",
]


def sentence(rng: random.Random, label: str) -> str:
  adj, adj2 = rng.sample(ADJECTIVES[label], 2)
  return rng.choice(TEMPLATES).format(
      noun=rng.choice(NOUNS), adj=adj, adj2=adj2, intensifier=rng.choice(INTENSIFIERS),
      ending=rng.choice(ENDINGS[label]))


def make_splits(seed: int = 0) -> dict[str, list[dict[str, str]]]:
  """{split: [{"inputs", "targets"}]}: distinct sentences, labels alternating."""
  rng = random.Random(seed)
  seen, examples = set(), []
  while len(examples) < sum(SIZES.values()):
    label = LABELS[len(examples) % 2]
    text = sentence(rng, label)
    if text not in seen:
      seen.add(text)
      examples.append({"inputs": text, "targets": label})
  splits, start = {}, 0
  for split, size in SIZES.items():
    splits[split] = examples[start:start + size]
    start += size
  return splits


def jsonl_text(examples: list[dict[str, str]]) -> str:
  return "".join(json.dumps(ex) + "\n" for ex in examples)


def train_sentencepiece(texts: list[str]) -> bytes:
  """A BPE SentencePiece model (bytes) with T5's special ids.

  BPE rather than T5's unigram: on a corpus this small unigram stops near 150 pieces, while
  BPE reaches VOCAB_SIZE with whole words (each label word is one piece).
  """
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, vocab_size=VOCAB_SIZE,
      model_type="bpe", character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      normalization_rule_name="nmt_nfkc", num_threads=1, minloglevel=2)
  return model.getvalue()


def main(out_dir: str = HERE) -> None:
  splits = make_splits()
  for split, examples in splits.items():
    with open(os.path.join(out_dir, f"demo_{split}.jsonl"), "w", encoding="utf-8") as f:
      f.write(jsonl_text(examples))
  texts = [ex["inputs"] for exs in splits.values() for ex in exs] + list(LABELS)
  with open(os.path.join(out_dir, "demo_sentiment.model"), "wb") as f:
    f.write(train_sentencepiece(texts))


if __name__ == "__main__":
  main(*sys.argv[1:])
