"""The jobs with a prompt method (residual, DePT), in process on the tiny model: train exports
the method's prompt file, and infer scores a run's MODEL_DIR and its exported file alike."""

import json

import numpy as np
import pytest

from prompt_tuning import infer, optim, prompts, train
from prompt_tuning import model as model_lib
from prompt_tuning.checkpoints import prompts_io
from prompt_tuning.data import demo
from prompt_tuning.prompts import dept, residual
from prompt_tuning.t5 import config as t5_config

TINY = t5_config.get_config("t5_1_1_tiny")
LENGTHS = {"inputs": 32, "targets": 4}
METHODS = {  # tiny d_model 4 leaves no rank within 4 x 4 numbers: DePT's rank is given
    "residual": (lambda: residual.method(bottleneck=3), optim.adafactor),
    "dept": (lambda: dept.method(LENGTHS, rank=1),
             lambda: optim.per_part(optim.adafactor(), {"prompt/low_rank_.*":
                                                        optim.adafactor(0.01)})),
}


def make_model(method=None):
  return model_lib.PromptedT5Model(TINY, prompt_length=4, method=method,
                                   prompt_initializer=prompts.random_uniform())


def scores(tmp_path, name, model, **where):
  common = dict(initial_checkpoint_path=None, mixture_or_task_name=demo.TASK_NAME,
                task_feature_lengths=LENGTHS, batch_size=8, split="validation", mode="score",
                vocabulary_path=demo.vocabulary_path())
  [path] = infer.infer(model=model, output_dir=str(tmp_path / name), **common, **where)
  return [json.loads(line)["score"] for line in open(path)]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_model_dir_and_exported_file_score_alike(tmp_path, name):
  make_method, make_optimizer = METHODS[name]
  model = make_model(make_method())
  model_dir = tmp_path / "run"
  train.train(model=model, model_dir=str(model_dir), initial_checkpoint_path=None,
              mixture_or_task_name=demo.TASK_NAME, task_feature_lengths=LENGTHS,
              train_steps=2, batch_size=4, optimizer=make_optimizer(), checkpoint_period=2,
              vocabulary_path=demo.vocabulary_path())
  run_config = json.loads((model_dir / "run_config.json").read_text())
  assert run_config["prompt_method"] == name
  exported = str(model_dir / "prompts" / "step_2.npy")
  value = np.load(exported, allow_pickle=False)
  from_dir = scores(tmp_path, "dir", model, model_dir=str(model_dir))
  from_file = scores(tmp_path, "file", model, prompt_file=exported)
  assert len(from_dir) > 10 and from_dir == from_file
  if name == "residual":  # a plain prompt file: a model without the method reads it alike
    assert value.shape == (4, TINY.emb_dim) and value.dtype == np.float32
    assert scores(tmp_path, "plain", make_model(), prompt_file=exported) == from_file
  else:  # a DePT record, which a plain model refuses before any compute
    assert value.dtype.names == dept.FIELDS
    with pytest.raises(ValueError, match=r"step_2.npy' is a DePT prompt file .*methods/dept.gin"):
      scores(tmp_path, "plain", make_model(), prompt_file=exported)
    np.testing.assert_array_equal(value["prompt"], prompts_io.read_prompt_file(exported)["prompt"])
