"""The training job: `python -m prompt_tuning.train --gin_file=... --gin.NAME=VALUE ...`.

One step, as data: a host batch becomes a global batch over the mesh axis 'data'; the loss of
the merged (trainable, frozen) tree is differentiated with respect to the trainable leaves
only; the optimizer updates them. Every CHECKPOINT_PERIOD steps (and at the end) the
trainable leaves, optimizer state and step are saved, and the prompt is exported as
`{MODEL_DIR}/prompts/step_{STEP}.npy`. Restarting the same command resumes exactly.

SIGTERM (a preemption) or Ctrl-C (SIGINT) stops the run after the step in progress: it saves
a checkpoint, exports the prompt and raises job_utils.Preempted (Interrupted for Ctrl-C),
whose message says how to resume; every process of a multi-host run stops at the same step.
A second Ctrl-C ends the process at once, without saving.
"""

import functools
import math
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax
from absl import logging
from flax import linen as nn
from jax.experimental import multihost_utils

from prompt_tuning import gin_utils, host_memory, job_io, job_utils, optim, partitioning
from prompt_tuning.checkpoints import job as job_ckpt
from prompt_tuning.checkpoints import prompts_io
from prompt_tuning.data import tasks


class NonFiniteLossError(ValueError):
  """The loss became NaN or infinite; the last good checkpoint is still the latest."""


def train_step(model: Any, optimizer: optax.GradientTransformation, state: dict, frozen: Any,
               batch: dict, dropout_seed: jax.Array) -> tuple[dict, dict]:
  """state {'step', 'trainable', 'opt_state'} -> (new state, metrics). Frozen leaves are
  closed over, so no gradient of theirs is ever computed or held."""
  rng = jax.random.fold_in(dropout_seed, state["step"])

  def loss_fn(trainable):
    return model.loss(optim.merge(trainable, frozen), batch, dropout_rng=rng)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["trainable"])
  updates, opt_state = optimizer.update(grads, state["opt_state"], state["trainable"])
  trainable = optax.apply_updates(state["trainable"], updates)
  new_state = {"step": state["step"] + 1, "trainable": trainable, "opt_state": opt_state}
  finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(trainable)]))
  metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads),
             "finite_update": finite.astype(jnp.float32)}
  learning_rate = optim.learning_rate(opt_state)
  if learning_rate is not None:
    metrics["learning_rate"] = learning_rate
  return new_state, metrics


def compile_step(model: Any, optimizer: optax.GradientTransformation, state: dict,
                 frozen: Any, batch: dict, dropout_seed: jax.Array) -> Any:
  """`train_step` compiled for these arguments' shapes and shardings, the state donated.
  The compiler's freed working memory goes back to the OS before the first step allocates
  its temporaries (`host_memory`), which lowers the job's peak resident memory."""
  step_fn = jax.jit(functools.partial(train_step, model, optimizer), donate_argnums=0)
  compiled = step_fn.lower(state, frozen, batch, dropout_seed).compile()
  host_memory.release_free_heap()
  return compiled


def prompt_path(model_dir: str, step: int) -> str:
  return os.path.join(model_dir, "prompts", f"step_{step}.npy")


def run_config(model: Any, trainable_regex: str) -> dict:
  """What a MODEL_DIR is bound to; a restart with other values is refused."""
  return {"model": job_io.for_model(model).run_config(model.config),
          "model_class": type(model).__name__,
          "prompt_length": getattr(model, "prompt_length", None),
          "trainable_regex": trainable_regex,
          **_method_config(model)}


def _method_config(model: Any) -> dict:
  """The prompt method's name, for any kind but the plain prompt (whose MODEL_DIRs predate
  the key and stay valid)."""
  method = getattr(model, "method", None)
  return {} if method is None or method.name == "prompt" else {"prompt_method": method.name}


def train(*, model: Any, model_dir: str, initial_checkpoint_path: str | None,
          mixture_or_task_name: str, task_feature_lengths: dict[str, int], train_steps: int,
          batch_size: int, optimizer: optax.GradientTransformation, checkpoint_period: int,
          eval_period: int | None = None, num_partitions: int = 1,
          trainable_regex: str = optim.PROMPT_REGEX, random_seed: int = 0,
          shuffle: bool = True, log_period: int = 10, keep_checkpoints: int | None = None,
          evaluator: Any = None, vocabulary_path: str | None = None,
          rules: partitioning.Rules = partitioning.DEFAULT_RULES,
          from_scratch: bool = False, eval_before_training: bool = False) -> dict:
  """Trains `model`'s trainable leaves; returns the last step's metrics as host floats.

  `from_scratch` lets INITIAL_CHECKPOINT_PATH=None mean random weights for any size
  (pretraining, runs/pretrain.gin); otherwise only the tiny test config may be random.
  `eval_before_training` evaluates the initial prompt (step 0) of a run that starts fresh,
  so the log shows what training bought.

  `vocabulary_path` (VOCABULARY_PATH) re-tokenizes the task with the model's vocabulary
  (mT5, a Hugging Face checkpoint's spiece.model); None keeps the task's own.

  MODEL_DIR is checked and locked (one live run) before any compute; SIGTERM or Ctrl-C ends
  the run after the step in progress, saved, with job_utils.Preempted (or Interrupted).
  """
  _check_positive(TRAIN_STEPS=train_steps, BATCH_SIZE=batch_size,
                  CHECKPOINT_PERIOD=checkpoint_period)
  if model_dir is None:
    raise ValueError("MODEL_DIR is not set; pass --gin.MODEL_DIR=/path/for/this/run.")
  job_utils.check_output_dir("MODEL_DIR", model_dir)
  mesh = partitioning.make_mesh(num_partitions)
  partitioning.check_batch_size(batch_size, mesh)
  job_utils.check_frozen_dtype(model, trainable_regex)
  bound_to = run_config(model, trainable_regex)
  job_ckpt.check_run_config(model_dir, bound_to)
  mixture_or_task_name = tasks.with_vocabulary(mixture_or_task_name, vocabulary_path)
  task_ids = _check_task_routing(model, mixture_or_task_name)
  job_io.for_model(model).check_task(model, mixture_or_task_name)
  job_utils.check_initial_checkpoint(model, initial_checkpoint_path, from_scratch)
  job_utils.make_output_dir(model_dir)  # every input checked: the run may write now
  with job_utils.model_dir_lock(model_dir), _StopRequest() as stop, jax.set_mesh(mesh), \
       nn.logical_axis_rules(rules):
    rng = jax.random.PRNGKey(random_seed)
    params = job_utils.place_params(model, initial_checkpoint_path, mesh, rules, rng,
                                    from_scratch)
    trainable, frozen = optim.partition(params, trainable_regex)
    del params
    state = _initial_state(optimizer, trainable)
    mgr = job_ckpt.manager(model_dir, keep_checkpoints)
    state = _restore(mgr, state, batch_size)
    first = int(job_utils.to_host(state["step"]))
    if _finished(model_dir, first, train_steps, "prompt" in trainable):
      logging.info("Nothing to do: MODEL_DIR=%s holds the checkpoint of step %d and "
                   "TRAIN_STEPS=%d; raise TRAIN_STEPS to train further. Nothing was changed.",
                   model_dir, first, train_steps)
      return {"step": first}
    gin_utils.write_operative_config(model_dir)
    logging.info("Training %s on %s from step %d to %d; trainable: %s.", type(model).__name__,
                 mixture_or_task_name, first, train_steps, _describe(trainable))
    batches = _batches(model, mixture_or_task_name, task_feature_lengths, batch_size,
                       shuffle, random_seed, skip=first, task_ids=task_ids)
    step_fn = None  # compiled for the first batch's shapes and shardings
    loop = _Loop(model_dir, mgr, batch_size, train_steps, log_period, bound_to,
                 model.export_prompt, getattr(model, "task_files", None))
    if first and not job_utils.exists(prompt_path(model_dir, first)):
      loop.export_prompt(first, state)  # a crash came between the checkpoint and its export
    dropout_seed = jax.random.fold_in(rng, 1)
    if evaluator is not None and eval_before_training and first == 0:
      loop.evaluate(0, functools.partial(evaluator, mesh=mesh),
                    optim.merge(state["trainable"], frozen))
    placed = (partitioning.global_batch(batch, mesh) for batch in batches)
    for step, batch in zip(range(first + 1, train_steps + 1), placed):
      if step_fn is None:
        step_fn = compile_step(model, optimizer, state, frozen, batch, dropout_seed)
      state, metrics = step_fn(state, frozen, batch, dropout_seed)
      stopping = stop.reached(step) and step < train_steps
      loop.after_step(step, state, metrics,
                      checkpoint=step % checkpoint_period == 0 or stopping)
      if stopping:
        raise stop.error(loop.stopped(step, stop.cause))
      if evaluator is not None and eval_period and step % eval_period == 0:
        loop.evaluate(step, functools.partial(evaluator, mesh=mesh),
                      optim.merge(state["trainable"], frozen))
    return loop.finish(state)


def _check_positive(**values) -> None:
  for name, value in values.items():
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{name}={value!r} must be a positive integer.")


def _finished(model_dir: str, step: int, train_steps: int, has_prompt: bool) -> bool:
  """Whether a run resumed at `step` has nothing left to do: TRAIN_STEPS is reached and the
  step's prompt exported (a crash between the two is repaired by training on)."""
  return step >= train_steps and not (has_prompt and not job_utils.exists(
      prompt_path(model_dir, step)))


def _describe(trainable: Any) -> str:
  """'prompt/prompt [100, 768]', ..., and the total count of trainable numbers."""
  flat = optim.flat(trainable)
  total = sum(math.prod(leaf.shape) for leaf in flat.values())
  shown = ", ".join(f"{path} {list(leaf.shape)}" for path, leaf in sorted(flat.items())[:5])
  more = f" and {len(flat) - 5} more" if len(flat) > 5 else ""
  return f"{shown}{more} ({total:,} parameters)"


class Interrupted(job_utils.Preempted):
  """Ctrl-C stopped the train job after it saved a checkpoint; the message says how to resume.

  The command line exits with EXIT_CODE (128 + SIGINT, as a shell reports Ctrl-C).
  """
  EXIT_CODE = 130


class _StopRequest:
  """SIGTERM or Ctrl-C asks the run to stop; `reached(step)` says, alike on every process, to
  stop now, and `error` is the exception to stop with.

  One process: a Python handler notes the signal and the run stops after the step in
  progress. Several: JAX's preemption service (started by jax.distributed.initialize, with
  its own SIGTERM handler) agrees on a step all processes reach; its check is local (about
  1 microsecond), so no collective runs per step. Ctrl-C on one of them is handed to that
  service as a SIGTERM, so it stops them all at one step too.

  Ctrl-C once a stop is asked ends the process at once: the user waits for nothing, and loses
  the steps since the last checkpoint. (Python runs handlers between bytecodes, so a long
  compile or device wait finishes first, as with Python's own KeyboardInterrupt.)
  """

  def __init__(self):
    self.cause = None  # 'SIGTERM' or 'Ctrl-C' once this process is asked to stop
    self._previous = {}
    self._multi_process = jax.process_count() > 1
    self._warned = False

  def __enter__(self) -> "_StopRequest":
    if threading.current_thread() is not threading.main_thread():
      return self  # Python sets signal handlers from the main thread only
    ours = [signal.SIGINT] if self._multi_process else [signal.SIGINT, signal.SIGTERM]
    for signum in ours:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, previous in self._previous.items():  # None: the previous one was not Python's
      signal.signal(signum, signal.SIG_DFL if previous is None else previous)

  def _handle(self, signum, frame) -> None:
    del frame
    if signum == signal.SIGINT and self.cause is not None:
      os.write(2, b"\nStopped at once by a second Ctrl-C, without saving: the steps since the "
               b"last checkpoint are lost.\n")
      os._exit(Interrupted.EXIT_CODE)  # pylint: disable=protected-access
    self.cause = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    logging.warning("%s: stopping after the step in progress, with a checkpoint%s.",
                    self.cause, "; press Ctrl-C again to stop at once, without saving"
                    if self.cause == "Ctrl-C" else "")
    if self._multi_process:  # the preemption service's handler tells every process
      os.kill(os.getpid(), signal.SIGTERM)

  def reached(self, step: int) -> bool:
    if not self._multi_process:
      return self.cause is not None
    try:
      return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # jax_enable_preemption_service is off
      if not self._warned:
        logging.warning("JAX's preemption service is off (jax_enable_preemption_service), so "
                        "SIGTERM or Ctrl-C ends this multi-process run without a checkpoint.")
        self._warned = True
      return False

  def error(self, message: str) -> job_utils.Preempted:
    return Interrupted(message) if self.cause == "Ctrl-C" else job_utils.Preempted(message)


def _initial_state(optimizer, trainable) -> dict:
  return {"step": jnp.zeros((), jnp.int32), "trainable": trainable,
          "opt_state": jax.jit(optimizer.init)(trainable)}


def _restore(mgr, state, batch_size) -> dict:
  """The latest checkpoint's state if there is one, else `state` as it is.

  Hyperparameters held in the optimizer state (the learning rate) come from this run's
  config, not the checkpoint, so a changed LEARNING_RATE takes effect on resume.
  """
  restored = job_ckpt.restore_latest(mgr, state)
  if restored is None:
    return state
  fresh_opt_state = state["opt_state"]
  state, meta = restored
  state["opt_state"] = optim.with_fresh_hyperparams(state["opt_state"], fresh_opt_state)
  if meta["batch_size"] != batch_size:
    raise job_ckpt.RunMismatchError(
        f"BATCH_SIZE={batch_size} but the checkpoint at step {meta['step']} was trained with "
        f"{meta['batch_size']}; resume with the same BATCH_SIZE.")
  logging.info("Resuming from the checkpoint at step %d.", meta["step"])
  return state


def _batches(model, task, lengths, batch_size, shuffle, seed, skip, task_ids=False):
  """This process's slice of each global batch, after the `skip` batches already trained
  (with each example's task index as `prompt_ids` when `task_ids`)."""
  return job_io.for_model(model).get_batches(
      model, task, "train", lengths, batch_size // jax.process_count(), shuffle=shuffle,
      seed=seed, num_epochs=None, shard_index=jax.process_index(),
      num_shards=jax.process_count(), skip_batches=skip, task_ids=task_ids)


def _check_task_routing(model: Any, mixture_or_task_name: str) -> bool:
  """Whether batches need each example's task id (multi-task prompts, prompts/mpt.py); then
  the mixture's tasks must be the model's, in its order, checked before any compute."""
  method = getattr(model, "method", None)
  if not getattr(method, "routes_by_task", False):
    return False
  names = [tasks.base_name(t.name) for t in tasks.get_subtasks(mixture_or_task_name)]
  method.check_tasks(names, f"MIXTURE_OR_TASK_NAME={tasks.base_name(mixture_or_task_name)!r}")
  return True


class _Loop:
  """Logging, non-finite checks, checkpoints and prompt export around the step function."""

  def __init__(self, model_dir, mgr, batch_size, train_steps, log_period, run_config,
               export, task_files=None):
    self.model_dir, self.mgr, self.run_config = model_dir, mgr, run_config
    self.export = export  # trained leaves -> the prompt file's array (model.export_prompt)
    self.task_files = task_files  # that array -> {name: plain prompt} written beside it (MPT)
    self.batch_size, self.train_steps, self.log_period = batch_size, train_steps, log_period
    self.summaries = job_utils.Summaries(model_dir, "train")
    self.eval_summaries = job_utils.Summaries(model_dir, "eval")
    self.pending = None  # (step, metrics) checked one step late, to keep dispatch async
    self.clock = None  # (time, step) once the first step (compiled just before it) has finished
    self.evals = []  # (step, metrics) of every evaluation, for the closing summary
    self.last_prompt = None

  def after_step(self, step, state, metrics, checkpoint):
    if self.clock is None:  # one wait, so throughput excludes compilation and warm-up
      jax.block_until_ready(metrics["loss"])
      self.clock = (time.time(), step)
    if self.pending:
      self._check(*self.pending)
    self.pending = (step, metrics)
    if step % self.log_period == 0 or step == self.train_steps:
      self._log(step, metrics)
    if checkpoint or step == self.train_steps:
      self._check(step, metrics)
      self._save(step, state)

  def _check(self, step, metrics):
    """Stops before a non-finite loss or update can reach a checkpoint."""
    loss = float(job_utils.to_host(metrics["loss"]))
    finite_update = float(job_utils.to_host(metrics["finite_update"])) == 1.0
    if not (math.isfinite(loss) and finite_update):
      what = (f"The loss is {loss}" if not math.isfinite(loss)
              else "The updated weights are not finite")
      latest = self.mgr.latest_step()
      kept = (f"The latest checkpoint (step {latest}) is the last good one." if latest
              is not None else "No checkpoint was saved before it.")
      raise NonFiniteLossError(f"{what} at step {step}; stopping. {kept} Lower LEARNING_RATE "
                               "or check the data.")

  def _log(self, step, metrics):
    host = {k: float(job_utils.to_host(v)) for k, v in metrics.items()}
    start, first_step = self.clock
    if step > first_step:
      rate = (step - first_step) * self.batch_size / max(time.time() - start, 1e-9)
      host["examples_per_second"] = rate
      logging.info("step %d  loss %.4f  %.1f examples/s  ETA %.0fs", step, host["loss"], rate,
                   (self.train_steps - step) * self.batch_size / rate)
    else:
      logging.info("step %d  loss %.4f", step, host["loss"])
    self.summaries.scalars(step, host)

  def _save(self, step, state):
    meta = {"step": step, "batches_consumed": step, "batch_size": self.batch_size}
    job_ckpt.save(self.mgr, state, meta)
    job_ckpt.record_run_config(self.model_dir, self.run_config)
    self.export_prompt(step, state)
    logging.info("Saved checkpoint at step %d.", step)

  def export_prompt(self, step, state):
    """{MODEL_DIR}/prompts/step_{step}.npy, what the model's prompt method exports from the
    trained `prompt/` leaves, written atomically by process 0."""
    prompt = state["trainable"].get("prompt")
    if prompt is None:
      return
    array = self.export({"prompt": jax.tree.map(job_utils.to_host, prompt)})
    self.last_prompt = prompt_path(self.model_dir, step)
    if jax.process_index() == 0:
      files = self.task_files(array) if self.task_files else {}
      for name, value in files.items():  # first, so the step's file means all are written
        prompts_io.save_prompt(os.path.join(self.last_prompt[:-len(".npy")], f"{name}.npy"),
                               value)
      prompts_io.save_prompt(self.last_prompt, array)

  def evaluate(self, step, evaluator, params):
    metrics = evaluator(params)
    logging.info("eval at step %d: %s", step, metrics)
    self.eval_summaries.scalars(step, metrics)
    self.evals.append((step, metrics))

  def stopped(self, step, cause=None):
    """What a run stopped by `cause` (SIGTERM, Ctrl-C) after `step` (and saved) tells the
    user; a process stopped by another's notice says SIGTERM, the notice JAX passes on."""
    prompt = f" and its prompt is {self.last_prompt}" if self.last_prompt else ""
    return (f"Stopped by {cause or 'SIGTERM'} after step {step} of {self.train_steps}: the "
            f"checkpoint of step {step} is saved in {self.model_dir}{prompt}. To resume, run "
            "the same command again.")

  def finish(self, state):
    metrics = {}
    if self.pending:
      self._check(*self.pending)
      metrics = {k: float(job_utils.to_host(v)) for k, v in self.pending[1].items()}
    if len(self.evals) == 1:  # e.g. only before training: EVAL_PERIOD > TRAIN_STEPS
      logging.info("Metrics at step %d: %s.", self.evals[0][0], _rounded(self.evals[0][1]))
    elif self.evals:
      (first, first_metrics), (last, last_metrics) = self.evals[0], self.evals[-1]
      logging.info("Metrics at step %d: %s; at step %d: %s.", first, _rounded(first_metrics),
                   last, _rounded(last_metrics))
    if self.last_prompt:
      logging.info("The prompt was written to %s.", self.last_prompt)
    return {**metrics, "step": int(job_utils.to_host(state["step"]))}


def _rounded(metrics: dict) -> dict:
  return {k: round(float(v), 2) for k, v in metrics.items()}


def main() -> None:
  gin_utils.call_configured(train, "runs/prompt_finetune.gin")


if __name__ == "__main__":
  # Run through the package's module, not __main__, so gin's bindings (made on
  # `prompt_tuning.train.train`) apply to the function called.
  from prompt_tuning import train as train_module
  gin_utils.run(train_module.main)
