"""Makes the mini decoder: `python -m prompt_tuning.pretrained.make_mini_decoder`.

A Llama-architecture decoder (`causal_lm.config` 'llama_mini', 10.5M parameters) pretrained
from random weights by next-token prediction on the mini T5's corpus, with the mini T5's
vocabulary (the same spiece.model, not a new one). Stages, each skipped when its output
exists, so an interrupted run resumes where it stopped:
  1. data      make_mini's: WordNet 3.0 -> the task files and the pretraining corpus (every
               synset of the tasks' validation and test splits left out).
  2. tokenizer the mini T5's spiece.model as a decoder tokenizer directory: tokenizer.model
               and tokenizer_config.json (pad 0, EOS 1, UNK 2, no BOS). Without a shipped
               spiece.model, make_mini's vocabulary stage trains it from the corpus first.
  3. pretrain  the train job with models/llama_mini.gin and runs/pretrain.gin (objective
               causal_lm: texts end in EOS, are concatenated and cut into chunks, the loss
               is on every token), from random weights; it resumes from its own checkpoints.
  4. report    the loss curve (a PNG, with matplotlib) and WORK_DIR/report.json.
  5. export    the last checkpoint as a Hugging Face directory (default
               prompt_tuning/pretrained/llama_mini/): bfloat16 model.safetensors, config.json
               (model_type llama), tokenizer.model, tokenizer_config.json, the WordNet
               LICENSE and a model card README.md with the run's numbers. Always rewritten.
make_mini's flags apply (--work_dir, --output_dir, --plot, --wordnet_dir, ...), with this
model's defaults; the span-corruption and LM-adaptation flags are unused.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Callable, Sequence

from absl import app, flags, logging

from prompt_tuning import pretrained
from prompt_tuning.data import wordnet
from prompt_tuning.pretrained import make_mini

FLAGS = flags.FLAGS
flags.DEFINE_string("vocabulary", pretrained.MINI_VOCABULARY_PATH,
                    "The mini T5's spiece.model; when missing, make_mini's vocab stage makes it.")
# ~75 minutes on 2 CPU cores, estimated: a step of 32 chunks of 65 slots is ~17 GMACs (forward,
# by count), as much as a mini T5 step (64 rows of 58 + 14 tokens), which took 2.1 s alone;
# measured here on the shared machine: 1.9 to 4.5 s a step. 2,000 steps: 4.1M tokens, 1.4
# passes over the corpus.
flags.DEFINE_integer("steps", 2000, "Pretraining steps.")
flags.DEFINE_integer("batch_size", 32, "Chunks per step.")
flags.DEFINE_integer("chunk_length", 64, "Tokens per chunk (PRETRAIN_CHUNK_LENGTH).")
flags.DEFINE_integer("checkpoint_period", 100, "Steps between checkpoints (resume points).")
flags.DEFINE_multi_string("config_override", [],
                          "FIELD=VALUE of the 'llama_mini' config, e.g. num_layers=2 (tests).")

MODEL_GIN = "models/llama_mini.gin"
DEFAULT_WORK_DIR = "/tmp/llama_mini"
DEFAULT_PLOT = os.path.join(os.path.dirname(os.path.dirname(pretrained.PACKAGE_DIR)), "docs",
                            "llama_mini_loss.png")
# transformers' keys. T5Tokenizer, not LlamaTokenizer: transformers 5 reads a tokenizer.model
# for Llama as BPE, which splits this unigram model's text differently (measured); T5Tokenizer
# with no extra ids encodes as SentencePiece does, but appends EOS unless add_special_tokens
# is False. No BOS, as the mini T5's vocabulary has none (data/hf_tokenizers.py reads these).
TOKENIZER_CONFIG = {
    "tokenizer_class": "T5Tokenizer", "extra_ids": 0, "add_bos_token": False,
    "bos_token": None, "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
    "model_max_length": 256}
SPECIAL_IDS = {"bos_token_id": None, "eos_token_id": 1, "pad_token_id": 0}  # for config.json


def make_tokenizer(work_dir: str, vocab: str) -> str:
  """WORK_DIR/tokenizer: `vocab` as tokenizer.model and its tokenizer_config.json (no
  spiece.model, which would read as a T5 vocabulary with 100 sentinels)."""
  out = os.path.join(work_dir, "tokenizer")
  if not os.path.exists(os.path.join(out, "tokenizer_config.json")):
    os.makedirs(out, exist_ok=True)
    shutil.copyfile(vocab, os.path.join(out, "tokenizer.model"))
    _write_json(os.path.join(out, "tokenizer_config.json"), TOKENIZER_CONFIG)
  return out


def pretrain_args(model_dir: str, corpus: str, tokenizer: str, *, steps: int, batch_size: int,
                  chunk_length: int, checkpoint_period: int,
                  overrides: Sequence[str] = ()) -> list[str]:
  """The train job's flags for the pretraining stage."""
  args = [f"--gin_file={MODEL_GIN}", "--gin_file=runs/pretrain.gin",
          f"--gin.MODEL_DIR='{model_dir}'", f"--gin.PRETRAIN_TEXT_FILES=['{corpus}']",
          f"--gin.VOCABULARY_PATH='{tokenizer}'", "--gin.INITIAL_CHECKPOINT_PATH=None",
          f"--gin.TRAIN_STEPS={steps}", f"--gin.BATCH_SIZE={batch_size}",
          f"--gin.PRETRAIN_CHUNK_LENGTH={chunk_length}",
          f"--gin.CHECKPOINT_PERIOD={checkpoint_period}"]
  for override in overrides:
    field, sep, value = override.partition("=")
    if not sep or not field.isidentifier():
      raise app.UsageError(f"--config_override={override!r} must be FIELD=VALUE, e.g. "
                           "num_layers=2.")
    args.append(f"--gin.decoder_config.get_config.{field}={value}")
  return args


def run_train_job(args: Sequence[str]) -> None:
  command = [sys.executable, "-m", "prompt_tuning.train", *args]
  logging.info("Running: %s", " ".join(command))
  subprocess.run(command, check=True)


def pretrain(model_dir: str, args: Sequence[str],
             run: Callable[[Sequence[str]], None] = run_train_job) -> str:
  """Runs (or resumes) the train job; returns the checkpoints folder."""
  run(args)
  return os.path.join(model_dir, "checkpoints")


def trained_config(model_dir: str):
  """The DecoderConfig the run trained (its run_config.json: every architecture field)."""
  from prompt_tuning.causal_lm import config as decoder_config  # pylint: disable=import-outside-toplevel
  with open(os.path.join(model_dir, "run_config.json"), encoding="utf-8") as f:
    return decoder_config.DecoderConfig(**json.load(f)["model"])


def report(model_dir: str, work_dir: str, plot: str | None, *, batch_size: int,
           chunk_length: int) -> dict:
  """WORK_DIR/report.json and the loss-curve PNG of the pretraining stage."""
  from prompt_tuning.causal_lm import network  # pylint: disable=import-outside-toplevel
  points = make_mini._losses(model_dir)  # pylint: disable=protected-access
  steps = points[-1][0]
  summary = {"steps": steps, "batch_size": batch_size, "chunk_length": chunk_length,
             "tokens_seen": steps * batch_size * chunk_length,
             "parameters": network.num_params(trained_config(model_dir)),
             "first_logged": [points[0][0], points[0][1]],
             "last_logged": [steps, points[-1][1]],
             "minutes_logged": (points[-1][2] - points[0][2]) / 60}
  _write_json(os.path.join(work_dir, "report.json"), summary)
  if plot:
    _plot(points, plot, batch_size)
  logging.info("Report: %s", summary)
  return summary


def _plot(points: list, plot: str, batch_size: int) -> None:
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    logging.warning("matplotlib is not installed (pip install matplotlib); no loss plot.")
    return
  fig, ax = plt.subplots(figsize=(7, 4))
  ax.plot([p[0] for p in points], [p[1] for p in points], label="next-token prediction")
  ax.set_xlabel(f"step (batch {batch_size})")
  ax.set_ylabel("training loss (nats per token)")
  ax.set_title("llama_mini pretraining on WordNet 3.0")
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(plot, dpi=100)


def export(model_dir: str, tokenizer: str, out_dir: str, summary: dict,
           corpus_lines: int) -> None:
  """The last checkpoint as a Hugging Face Llama directory (bfloat16), written beside
  `out_dir` and renamed into place whole."""
  import ml_dtypes  # pylint: disable=import-outside-toplevel
  from prompt_tuning.checkpoints import base, hf_causal_lm, job  # pylint: disable=import-outside-toplevel
  config = trained_config(model_dir)
  params = base.unflatten(job.read_trainable_leaves(os.path.join(model_dir, "checkpoints")))
  staging = out_dir.rstrip("/") + ".export"
  hf_causal_lm.write_hf_causal_lm(params, config, staging, dtype=ml_dtypes.bfloat16,
                                  overwrite=True)
  config_json = os.path.join(staging, "config.json")
  with open(config_json, encoding="utf-8") as f:  # transformers' Llama defaults are 1 and 2
    hf = json.load(f)
  _write_json(config_json, {**hf, **SPECIAL_IDS})
  _write_json(os.path.join(staging, "generation_config.json"), SPECIAL_IDS)
  for name in ("tokenizer.model", "tokenizer_config.json"):
    shutil.copyfile(os.path.join(tokenizer, name), os.path.join(staging, name))
  with open(os.path.join(staging, "LICENSE"), "w", encoding="utf-8") as f:
    f.write(wordnet.WORDNET_LICENSE)
  with open(os.path.join(staging, "README.md"), "w", encoding="utf-8") as f:
    f.write(model_card(config, summary, corpus_lines))
  if os.path.exists(out_dir):
    shutil.rmtree(out_dir)
  os.replace(staging, out_dir)
  logging.info("Exported %s -> %s", model_dir, out_dir)


def model_card(config, summary: dict, corpus_lines: int) -> str:
  """README.md of the exported directory: what it is, the data, the recipe, the numbers."""
  first, last = summary["first_logged"], summary["last_logged"]
  tied = "tied to" if config.tie_word_embeddings else "untied from"
  return f"""# llama_mini: the prompt-tuning library's mini decoder

A Llama-architecture causal language model made by this project so that prompt tuning of a
decoder-only model runs on a laptop CPU: the counterpart of the mini T5 (`t5_1_1_mini`), with
its corpus, its vocabulary and about its size. It knows WordNet's wording, not the world.

```python
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained("prompt_tuning/pretrained/llama_mini")
```

## What it is

- Llama (RMSNorm, RoPE, SwiGLU), {config.num_layers} layers, d_model {config.d_model},
  {config.num_heads} heads of {config.head_dim} ({config.num_kv_heads} key/value heads), MLP
  {config.mlp_dim}, {config.max_positions} positions, output layer {tied} the embedding:
  {summary["parameters"]:,} parameters, stored in bfloat16 (`model.safetensors`).
- Vocabulary: the mini T5's SentencePiece unigram model (`tokenizer.model`, 8,092 pieces), pad 0,
  EOS 1, UNK 2, no BOS; the embedding has {config.vocab_size:,} rows (the rows above 8,091, the
  mini T5's sentinel ids, are never seen in training). Every class label of the WordNet tasks
  is one piece. In transformers, `AutoTokenizer` loads it as a T5Tokenizer with no extra
  ids, which splits text as SentencePiece does; pass `add_special_tokens=False` (it would
  append EOS): rows are `[prompt] inputs targets EOS`, with EOS only after the targets.

## Data

WordNet 3.0 (Princeton University; licence in `LICENSE`): one line per synset,
`lemma, lemma: definition; "example"`, {corpus_lines:,} lines. Every synset of the validation
and test splits of `wordnet_topic` and `wordnet_pos` is left out of the corpus (the other
WordNet tasks evaluate only on those synsets), so no evaluation example's text was seen.

## Recipe

`python -m prompt_tuning.pretrained.make_mini_decoder`: the library's own train job with
`models/llama_mini.gin` and `runs/pretrain.gin`, from random weights, every weight trained.
Objective `causal_lm`: each line ends in EOS, the lines are concatenated and cut into
{summary["chunk_length"]}-token chunks, and the loss is the next-token cross-entropy on every
token of a chunk. Adafactor with parameter scaling at a constant 0.01 (the mini T5's
optimizer), no dropout, batch {summary["batch_size"]}, {summary["steps"]:,} steps:
{summary["tokens_seen"]:,} tokens seen.

## Numbers

- Training loss (nats per token, as logged): {first[1]:.2f} at step {first[0]}, {last[1]:.2f}
  at step {last[0]}; {summary["minutes_logged"]:.1f} minutes of logged training.
- Prompt tuning on `wordnet_topic` and `wordnet_pos` beside the mini T5 (three seeds each,
  `python -m benchmarks.small_scale_methods --plan decoder`): the library's docs/methods.md,
  "On the mini decoder". No held-out language-model evaluation was made.

## Limits

Tiny by design and undertrained; generation beyond a gloss-like phrase is poor. It exists to
show prompt tuning of a decoder working end to end, not to serve real tasks.
"""


def _write_json(path: str, value: dict) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2)
    f.write("\n")


def _count_lines(path: str) -> int:
  with open(path, encoding="utf-8") as f:
    return sum(1 for line in f if line.strip())


def main(argv) -> None:
  del argv
  start = time.time()
  work_dir = FLAGS.work_dir
  os.makedirs(work_dir, exist_ok=True)
  corpus = make_mini.make_data(work_dir)
  vocab = FLAGS.vocabulary
  if not os.path.exists(vocab):
    logging.info("%s is missing: making the mini T5's vocabulary from the corpus.", vocab)
    vocab = make_mini.make_vocab(work_dir, corpus)
  tokenizer = make_tokenizer(work_dir, vocab)
  model_dir = os.path.join(work_dir, "pretrain")
  pretrain(model_dir, pretrain_args(
      model_dir, corpus, tokenizer, steps=FLAGS.steps, batch_size=FLAGS.batch_size,
      chunk_length=FLAGS.chunk_length, checkpoint_period=FLAGS.checkpoint_period,
      overrides=FLAGS.config_override))
  summary = report(model_dir, work_dir, FLAGS.plot, batch_size=FLAGS.batch_size,
                   chunk_length=FLAGS.chunk_length)
  export(model_dir, tokenizer, FLAGS.output_dir, summary, _count_lines(corpus))
  logging.info("Done in %.0f s.", time.time() - start)


if __name__ == "__main__":
  FLAGS.set_default("work_dir", DEFAULT_WORK_DIR)
  FLAGS.set_default("output_dir", pretrained.MINI_DECODER_DIR)
  FLAGS.set_default("plot", DEFAULT_PLOT)
  app.run(main)
