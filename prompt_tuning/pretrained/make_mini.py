"""Remakes the shipped mini T5 from nothing: `python -m prompt_tuning.pretrained.make_mini`.

Stages, each skipped when its output exists, so an interrupted run resumes where it stopped
(the two training stages resume from their own checkpoints):
  1. data            WordNet 3.0 -> the five WordNet task files (shipped in
                     prompt_tuning/data/assets/wordnet/) and the pretraining corpus: one line
                     per synset, leaving out every synset of the tasks' validation and test
                     splits (those of wordnet_topic and wordnet_pos; the other tasks
                     evaluate only on these, docs/data.md).
  2. vocab           a unigram SentencePiece model on the corpus: 8,092 pieces, pad 0, EOS 1,
                     UNK 2, no BOS; the 100 sentinels are added above them (8,192 ids).
  3. span_corruption the train job with runs/pretrain.gin, from random weights.
  4. lm_adapt        the train job with runs/lm_adapt.gin, from stage 3's last checkpoint.
  5. export          both checkpoints as Hugging Face directories (bfloat16 safetensors,
                     config.json, spiece.model, the WordNet licence): the LM-adapted one into
                     the package (prompt_tuning/pretrained/t5_1_1_mini/), the span-corruption
                     one beside it (t5_1_1_mini_span_corruption/: in the repository, not in
                     the installed package).
  6. report          the loss curves of both stages (a PNG, with matplotlib) and
                     WORK_DIR/report.json: steps, tokens seen, losses and minutes per stage.
Needs WordNet's data files (Debian: `apt-get install wordnet-base`).
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags, logging

from prompt_tuning import pretrained
from prompt_tuning.data import wordnet

FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", "/tmp/t5_1_1_mini", "Corpus, vocabulary and training runs.")
flags.DEFINE_string("wordnet_dir", wordnet.WORDNET_DIR, "WordNet 3.0's dict/ directory.")
flags.DEFINE_string("tasks_dir", wordnet.ASSETS_DIR, "Where the task JSONL files go.")
flags.DEFINE_string("output_dir", pretrained.MINI_DIR, "The LM-adapted model's directory.")
flags.DEFINE_string("span_corruption_output_dir", pretrained.MINI_SPAN_CORRUPTION_DIR,
                    "The span-corruption-only model's directory.")
flags.DEFINE_integer("vocab_pieces", 8092, "SentencePiece pieces (+100 sentinels).")
flags.DEFINE_integer("span_corruption_steps", 1600, "Span-corruption steps (batch 64).")
flags.DEFINE_integer("lm_adapt_steps", 500, "LM-adaptation steps (batch 64).")
flags.DEFINE_integer("lm_adapt_chunk_length", 32, "Tokens per prefix-LM chunk.")
flags.DEFINE_string("plot", os.path.join(os.path.dirname(os.path.dirname(pretrained.PACKAGE_DIR)),
                                         "docs", "mini_t5_loss.png"), "Loss-curve PNG.")

BATCH_SIZE = 64  # runs/pretrain.gin's
SPAN_CORRUPTION_CHUNK = 64  # runs/pretrain.gin's PRETRAIN_CHUNK_LENGTH

MODEL_GIN = "models/t5_1_1_mini.gin"


def make_data(work_dir: str) -> str:
  corpus = os.path.join(work_dir, "corpus.txt")
  if not os.path.exists(corpus):
    synsets = wordnet.read_synsets(FLAGS.wordnet_dir)
    tasks = wordnet.build_tasks(synsets)
    wordnet.write_tasks(tasks, FLAGS.tasks_dir)
    lines = wordnet.write_corpus(synsets, tasks, corpus)
    logging.info("Corpus: %d synsets of %d (%d held out) -> %s", lines, len(synsets),
                 len(wordnet.held_out_keys(tasks)), corpus)
  return corpus


def make_vocab(work_dir: str, corpus: str) -> str:
  model = os.path.join(work_dir, "spiece.model")
  if not os.path.exists(model):
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    prefix = os.path.join(work_dir, "spiece.tmp")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=prefix, vocab_size=FLAGS.vocab_pieces, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=0.9995,
        input_sentence_size=0, shuffle_input_sentence=False, num_threads=2,
        minloglevel=2)
    os.replace(prefix + ".model", model)
  return model


def train(name: str, run_gin: str, steps: int, *flags_) -> str:
  """Runs the train job into WORK_DIR/name (resuming) and returns its checkpoints folder."""
  model_dir = os.path.join(FLAGS.work_dir, name)
  command = [sys.executable, "-m", "prompt_tuning.train", f"--gin_file={MODEL_GIN}",
             f"--gin_file={run_gin}", f"--gin.MODEL_DIR={model_dir}",
             f"--gin.TRAIN_STEPS={steps}", *flags_]
  logging.info("Running: %s", " ".join(command))
  subprocess.run(command, check=True)
  return os.path.join(model_dir, "checkpoints")


def export(checkpoints: str, out_dir: str, vocab: str) -> None:
  from prompt_tuning.checkpoints import base, huggingface, job  # pylint: disable=import-outside-toplevel
  from prompt_tuning.t5 import config as t5_config  # pylint: disable=import-outside-toplevel
  licence = os.path.join(FLAGS.work_dir, "WORDNET_LICENSE")
  with open(licence, "w", encoding="utf-8") as f:
    f.write(wordnet.WORDNET_LICENSE)
  params = base.unflatten(job.read_trainable_leaves(checkpoints))
  huggingface.write_huggingface(params, t5_config.get_config("t5_1_1_mini"), out_dir,
                                extra_files={"spiece.model": vocab, "LICENSE": licence})
  logging.info("Exported %s -> %s", checkpoints, out_dir)


def main(argv) -> None:
  del argv
  start = time.time()
  os.makedirs(FLAGS.work_dir, exist_ok=True)
  corpus = make_data(FLAGS.work_dir)
  vocab = make_vocab(FLAGS.work_dir, corpus)
  data = [f"--gin.PRETRAIN_TEXT_FILES=['{corpus}']", f"--gin.VOCABULARY_PATH={vocab}"]
  span_corruption = train("span_corruption", "runs/pretrain.gin",
                          FLAGS.span_corruption_steps, *data,
                          "--gin.INITIAL_CHECKPOINT_PATH=None")
  lm_adapted = train("lm_adapt", "runs/lm_adapt.gin", FLAGS.lm_adapt_steps, *data,
                     f"--gin.INITIAL_CHECKPOINT_PATH={span_corruption}",
                     f"--gin.PRETRAIN_CHUNK_LENGTH={FLAGS.lm_adapt_chunk_length}")
  export(span_corruption, FLAGS.span_corruption_output_dir, vocab)
  export(lm_adapted, FLAGS.output_dir, vocab)
  report(FLAGS.work_dir, FLAGS.plot)
  logging.info("Done in %.0f s.", time.time() - start)


def _losses(model_dir: str) -> list[tuple[int, float, float]]:
  """(step, loss, wall time) of a run's TensorBoard 'loss' scalars."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel
  from tensorflow import make_ndarray  # pylint: disable=import-outside-toplevel
  events = event_accumulator.EventAccumulator(os.path.join(model_dir, "train"),
                                              size_guidance={"tensors": 0})
  events.Reload()
  points = {e.step: (float(make_ndarray(e.tensor_proto)), e.wall_time)
            for e in events.Tensors("loss")}  # a resumed run may log a step twice
  return [(step, *points[step]) for step in sorted(points)]


def report(work_dir: str, plot: str) -> dict:
  """Loss curves (PNG) and WORK_DIR/report.json of both training stages."""
  stages = {"span_corruption": SPAN_CORRUPTION_CHUNK, "lm_adapt": FLAGS.lm_adapt_chunk_length}
  summary, curves, offset = {}, {}, 0
  for stage, chunk in stages.items():
    points = _losses(os.path.join(work_dir, stage))
    steps = points[-1][0]
    curves[stage] = [(offset + s, loss) for s, loss, _ in points]
    summary[stage] = {"steps": steps, "tokens_seen": steps * BATCH_SIZE * chunk,
                      "first_loss": points[0][1], "last_loss": points[-1][1],
                      "minutes_logged": (points[-1][2] - points[0][2]) / 60}
    offset += steps
  with open(os.path.join(work_dir, "report.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    logging.warning("matplotlib is not installed (pip install matplotlib); no loss plot.")
    return summary
  fig, ax = plt.subplots(figsize=(7, 4))
  for stage, label in (("span_corruption", "span corruption"),
                       ("lm_adapt", "LM adaptation (prefix LM)")):
    ax.plot(*zip(*curves[stage]), label=label)
  ax.set_xlabel("step (batch 64)")
  ax.set_ylabel("training loss (nats per target token)")
  ax.set_title("t5_1_1_mini pretraining on WordNet 3.0")
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(plot, dpi=100)
  logging.info("Loss curves: %s; report: %s", plot, summary)
  return summary


if __name__ == "__main__":
  app.run(main)
