"""Multi-task prompt tuning (MPT; Wang et al. 2023, "Multitask Prompt Tuning Enables
Parameter-Efficient Transfer Learning"): one prompt P* [p, d] shared by K tasks, and for
task k a rank-one multiplicative update u_k [p], v_k [d]:

    P_k = P* * (u_k v_k^T)          (elementwise; the paper's P* o W_k, W_k = u_k (x) v_k)

Parameters, all under `prompt/`: `prompt/prompt` P* [p, d] (from the prompt initializer),
`prompt/task_rows` u [K, p] and `prompt/task_cols` v [K, d], both ones, so every P_k starts
as P*. Training over a mixture routes each example to its task's prompt: the batch carries
`prompt_ids` [batch], the example's index in `task_names` (the train job asks the data for
it; `features.get_batches(task_ids=True)`), and row b uses P_{prompt_ids[b]}.

The tasks are those of MIXTURE_OR_TASK_NAME (methods/mpt.gin), in the mixture's task order,
which is seqio's: sorted by task name.

Prompt distillation (the paper's source training): given `teachers`, one frozen plain prompt
T_k [p_k, d] per task (a single-task prompt-tuning run's prompts/step_{STEP}.npy; any p_k),
the training loss (`model.PromptedT5Model.loss`) becomes

    task loss + distillation_weight * (KL + MSE)

where, over the target tokens of loss weight > 0 (each term a mean over them), KL is
KL(p_teacher || p_student) over the vocabulary, the teacher being the same frozen T5 with
the row's task's T_k (no dropout, under stop_gradient), and MSE is the mean over d_model of
the squared difference of the decoder's final hidden states (after its last norm, before the
output projection: the last states both networks have at the same positions, whatever the
prompt lengths). Softmax temperature 1. Teachers are never parameters: they are held here,
outside the checkpoint and the trainable state. Score, predict, eval and infer never run
them; without teachers the loss is plain MPT's, op for op.

Files the train job writes at step STEP (`export` and `task_files`):

    {MODEL_DIR}/prompts/step_{STEP}.npy           the MPT file: one record of fields
                                                  shared [p, d], task_rows [K, p],
                                                  task_cols [K, d], tasks [K] (the names);
                                                  what methods/mpt.gin models read
    {MODEL_DIR}/prompts/step_{STEP}/{task}.npy    P_k, a plain float32 [p, d] prompt, one
                                                  per task: eval, infer, PROMPTS, ensembles,
                                                  inspect and PEFT export read it as any
    {MODEL_DIR}/prompts/step_{STEP}/shared.npy    P*, plain float32 [p, d]: the start of a
                                                  new target task (prompts/from_file.gin)
"""

import dataclasses
import hashlib
import math
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from prompt_tuning import prompts
from prompt_tuning.checkpoints import prompts_io
from prompt_tuning.prompts import method as method_lib

Array = jax.Array

FIELDS = ("shared", "task_rows", "task_cols", "tasks")
SHARED_FILE = "shared"  # {MODEL_DIR}/prompts/step_{STEP}/shared.npy, hence no task of this name
DISTILLATION_WEIGHT = 0.9  # the paper's lambda (MPT_DISTILLATION_WEIGHT)
_FILE_NAME = re.compile(r"^[\w.:-]+$")  # seqio's task names, safe as file names


class MultiTaskPrompt(nn.Module):
  """`prompt/prompt` P* [length, embed_dim], `prompt/task_rows` u [num_tasks, length] and
  `prompt/task_cols` v [num_tasks, embed_dim]; `table()` gives every task's prompt
  [num_tasks, length, embed_dim], `task_prompts(ids)` those of ids [batch]."""
  length: int
  embed_dim: int
  num_tasks: int

  def setup(self):
    self.prompt = prompts.prompt_parameter(self, self.length, self.embed_dim)
    ones = nn.initializers.ones
    self.task_rows = self.param(
        "task_rows", nn.with_logical_partitioning(ones, ("prompt_tasks", "prompt")),
        (self.num_tasks, self.length), jnp.float32)
    self.task_cols = self.param(
        "task_cols", nn.with_logical_partitioning(ones, ("prompt_tasks", "prompt_embed")),
        (self.num_tasks, self.embed_dim), jnp.float32)

  def __call__(self) -> Array:
    """-> P* [length, embed_dim] float32 (what initialisation traces; the model refuses a
    batch without task ids, so no example is ever served P* itself)."""
    return self.prompt

  def table(self) -> Array:
    """-> P_k for every task [num_tasks, length, embed_dim] float32."""
    return self.task_prompts(jnp.arange(self.num_tasks))

  def task_prompts(self, task_ids: Array) -> Array:
    """task_ids [batch] int -> P_{task_ids[b]} [batch, length, embed_dim] float32. An id
    outside [0, num_tasks) gives NaN rows (a traced id cannot raise), never another task's."""
    take = lambda table: jnp.take(table, task_ids, axis=0, mode="fill", fill_value=jnp.nan)
    rows, cols = take(self.task_rows), take(self.task_cols)
    return self.prompt[None] * rows[:, :, None] * cols[:, None, :]


@dataclasses.dataclass(frozen=True)
class Teacher:
  """Task `task`'s frozen teacher prompt [p, d] float32 (a plain single-task prompt), named
  `source` in errors. Equal teachers hold equal values (compared by digest)."""
  task: str
  source: str
  prompt: np.ndarray = dataclasses.field(compare=False, repr=False)
  digest: str = dataclasses.field(init=False, repr=False)

  def __post_init__(self):
    value = check_teacher(self.prompt, self.source)
    object.__setattr__(self, "prompt", value)
    digest = hashlib.sha1(repr(value.shape).encode() + value.tobytes()).hexdigest()
    object.__setattr__(self, "digest", digest)


@dataclasses.dataclass(frozen=True)
class MultiTask(method_lib.Method):
  """MPT over `task_names` (see the module doc); row b of a batch uses P_{prompt_ids[b]}.
  With `teachers` (one per task, any order; kept in task order) the training loss adds
  `distillation_weight` times the distillation terms (the module doc)."""
  name = "mpt"
  routes_by_task = True
  task_names: tuple[str, ...] = ()
  teachers: tuple[Teacher, ...] = ()
  distillation_weight: float = DISTILLATION_WEIGHT

  def __post_init__(self):
    names = self.task_names
    if isinstance(names, str) or not names or not all(isinstance(n, str) for n in names):
      raise ValueError(f"MPT's tasks {names!r} must be a non-empty list of task names (or a "
                       "mixture's name, as methods/mpt.gin passes MIXTURE_OR_TASK_NAME).")
    object.__setattr__(self, "task_names", tuple(names))
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
      raise ValueError(f"MPT's tasks {list(names)} repeat {repeated}; give each task once.")
    bad = [n for n in names if not _FILE_NAME.match(n) or n == SHARED_FILE]
    if bad:
      raise ValueError(f"MPT's tasks {list(names)} include {bad}; each task's prompt file is "
                       "named after it, so a name is letters, digits and _.:- and not "
                       f"{SHARED_FILE!r} (the file of P*).")
    self._check_teachers()

  def _check_teachers(self) -> None:
    """One teacher per task, or none; a finite weight >= 0. Teachers go in task order."""
    weight = self.distillation_weight
    if (isinstance(weight, bool) or not isinstance(weight, (int, float))
        or not math.isfinite(weight) or weight < 0):
      raise ValueError(f"MPT_DISTILLATION_WEIGHT={weight!r} must be a number >= 0 (the "
                       f"paper's lambda, {DISTILLATION_WEIGHT}; 0 trains on the task loss "
                       "alone).")
    object.__setattr__(self, "distillation_weight", float(weight))
    teachers = tuple(self.teachers)
    if not teachers:
      object.__setattr__(self, "teachers", ())
      return
    if not all(isinstance(t, Teacher) for t in teachers):
      raise ValueError(f"MPT teachers {teachers!r} must be mpt.Teacher objects; give "
                       "mpt.method(tasks, teachers={task: prompt file}).")
    by_task = {t.task: t for t in teachers}
    check_teacher_tasks([t.task for t in teachers], self.task_names)
    object.__setattr__(self, "teachers", tuple(by_task[n] for n in self.task_names))

  @property
  def distills(self) -> bool:
    """Whether the training loss adds the distillation terms (teachers were given)."""
    return bool(self.teachers)

  def for_config(self, config: Any) -> "MultiTask":
    """Refuses teachers of another width than the network's d_model (before any compute)."""
    for teacher in self.teachers:
      if teacher.prompt.shape[1] != config.emb_dim:
        raise ValueError(f"Teacher {teacher.source} has shape {teacher.prompt.shape} but this "
                         f"model's d_model is {config.emb_dim}; a teacher is a prompt tuned "
                         "on this same frozen model (its prompts/step_{STEP}.npy).")
    return self

  def teacher_table(self) -> tuple[np.ndarray, np.ndarray]:
    """The teachers in task order: (table [K, max p_k, d] float32, zero-padded rows; lengths
    [K] int32), the form of `model.PromptedT5Model.with_prompt_table`'s table."""
    longest = max(t.prompt.shape[0] for t in self.teachers)
    table = np.stack([np.pad(t.prompt, [(0, longest - t.prompt.shape[0]), (0, 0)])
                      for t in self.teachers])
    return table, np.asarray([t.prompt.shape[0] for t in self.teachers], np.int32)

  def module(self, prompt_length: int, embed_dim: int) -> nn.Module:
    return MultiTaskPrompt(prompt_length, embed_dim, len(self.task_names))

  def task_prompts(self, module: nn.Module, params: Any, task_ids: Array) -> Array:
    """The rows' prompts [batch, p, d] from the `prompt/` subtree and task_ids [batch]."""
    return module.apply({"params": params}, task_ids, method="task_prompts")

  def check_task_ids(self, task_ids: np.ndarray) -> None:
    """Refuses host ids outside the table, naming them and the tasks."""
    ids = np.asarray(task_ids).reshape(-1)
    bad = sorted({int(i) for i in ids if not 0 <= i < len(self.task_names)})
    if bad:
      raise ValueError(f"prompt_ids {bad} are not tasks of this MPT model, whose prompt_ids "
                       f"are 0..{len(self.task_names) - 1} for {list(self.task_names)}.")

  def check_tasks(self, names: Sequence[str], what: str) -> None:
    """Refuses `what` (e.g. "MIXTURE_OR_TASK_NAME='wordnet'") when its tasks `names` are not
    this model's, in its order: a row's prompt_ids is its task's index in both."""
    names = list(names)
    if names == list(self.task_names):
      return
    unknown = [n for n in names if n not in self.task_names]
    detail = (f"names {unknown}, which {'is' if len(unknown) == 1 else 'are'} not among"
              if unknown else "has tasks " + str(names) + ", not those of")
    raise ValueError(f"{what} {detail} the MPT model's tasks {list(self.task_names)}; train "
                     "on the mixture the model was built for (methods/mpt.gin sets MPT_TASKS "
                     "to MIXTURE_OR_TASK_NAME), and serve another task with a plain model and "
                     f"its prompt file (prompts/step_{{STEP}}/{{task}}.npy, or "
                     f"{SHARED_FILE}.npy as a start).")

  def check_serving_tasks(self, names: Sequence[str], what: str) -> None:
    """Refuses to serve tasks that have no prompt in the table (any subset, any order)."""
    unknown = [n for n in names if n not in self.task_names]
    if unknown:
      self.check_tasks(names, what)

  def export(self, module: nn.Module, params: Any) -> np.ndarray:
    del module
    return pack(params["prompt"], params["task_rows"], params["task_cols"], self.task_names)

  def task_files(self, value: np.ndarray) -> dict[str, np.ndarray]:
    """The plain prompt files written beside the MPT file `value` (see `task_files`)."""
    return task_files(value)

  def params_from_file(self, value: np.ndarray, prompt_length: int | None, embed_dim: int,
                       source: str) -> Any:
    parts = unpack(value, source)
    if list(parts["tasks"]) != list(self.task_names):
      raise ValueError(f"Prompt {source} is an MPT file of tasks {list(parts['tasks'])} but "
                       f"the model's are {list(self.task_names)}; use the MIXTURE_OR_TASK_NAME "
                       "it was trained on.")
    shape = tuple(parts["shared"].shape)
    want = (shape[0] if prompt_length is None else prompt_length, embed_dim)
    if shape != want:
      raise ValueError(f"Prompt {source} is an MPT file whose shared prompt has shape {shape} "
                       f"but the model needs {want} [PROMPT_LENGTH, d_model]; use the "
                       "PROMPT_LENGTH it was trained with, on a model of its width.")
    return {"prompt": parts["shared"], "task_rows": parts["task_rows"],
            "task_cols": parts["task_cols"]}


def distillation_terms(student_logits: Array, teacher_logits: Array, student_hidden: Array,
                       teacher_hidden: Array, weights: Array) -> tuple[Array, Array]:
  """(KL, MSE), float32 scalars: means over target tokens, weighted by `weights` [batch,
  length] (the loss weights), of KL(softmax(teacher) || softmax(student)) over the vocabulary
  (logits [batch, length, vocab]) and of the squared difference of the hidden states
  [batch, length, d] averaged over d."""
  log_p_student = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
  log_p_teacher = jax.nn.log_softmax(teacher_logits.astype(jnp.float32), axis=-1)
  kl = jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
  diff = student_hidden.astype(jnp.float32) - teacher_hidden.astype(jnp.float32)
  squared = jnp.mean(diff * diff, axis=-1)
  num = jnp.maximum(jnp.sum(weights), 1.0)
  return jnp.sum(kl * weights) / num, jnp.sum(squared * weights) / num


def pack(shared: Any, task_rows: Any, task_cols: Any, task_names: Sequence[str]) -> np.ndarray:
  """The MPT file's record (0-d structured array): P*, u, v as float32 and the task names."""
  arrays = {"shared": np.asarray(shared, np.float32),
            "task_rows": np.asarray(task_rows, np.float32),
            "task_cols": np.asarray(task_cols, np.float32),
            "tasks": np.asarray(list(task_names), np.str_)}
  dtype = np.dtype([(name, arrays[name].dtype, arrays[name].shape) for name in FIELDS])
  record = np.zeros((), dtype)
  for name in FIELDS:
    record[name] = arrays[name]
  return record


def is_mpt_file(value: np.ndarray) -> bool:
  return value.dtype.names is not None and set(FIELDS) <= set(value.dtype.names)


def unpack(value: np.ndarray, source: str) -> dict[str, Any]:
  """The parts of an MPT record, checked: float finite P* [p, d], u [K, p], v [K, d]."""
  if not is_mpt_file(value) or value.shape != ():
    raise ValueError(f"Prompt {source} has shape {value.shape} and dtype {value.dtype} but an "
                     "MPT model (methods/mpt.gin) reads the MPT file the train job exports "
                     "(prompts/step_{STEP}.npy of an MPT run); a task's plain prompt "
                     "(prompts/step_{STEP}/{task}.npy) is read without methods/mpt.gin.")
  parts = {name: np.asarray(value[name]) for name in FIELDS}
  for name in FIELDS[:3]:
    if parts[name].dtype.kind != "f" or not np.all(np.isfinite(parts[name])):
      raise ValueError(f"Prompt {source} has a {name} that is not a finite float array; "
                       "export it again from a healthy checkpoint.")
  (p, d), (k, p_rows), (k_cols, d_cols) = (parts[n].shape for n in FIELDS[:3])
  if (p_rows, d_cols, k_cols) != (p, d, k) or parts["tasks"].shape != (k,):
    raise ValueError(f"Prompt {source} is an MPT file of mismatched parts ({describe(value)}); "
                     "export it again from its checkpoint.")
  parts = {name: parts[name].astype(np.float32) for name in FIELDS[:3]}
  return {**parts, "tasks": [str(t) for t in np.asarray(value["tasks"]).tolist()]}


def describe(value: np.ndarray) -> str:
  """'shared (4, 8), task_rows (2, 4), task_cols (2, 8), tasks (2,)' for an MPT record."""
  return ", ".join(f"{name} {value.dtype[name].shape}" for name in FIELDS)


def task_files(value: np.ndarray) -> dict[str, np.ndarray]:
  """{task: P_k [p, d] float32, 'shared': P*} from an MPT record: the plain prompt files
  written beside it (`{MODEL_DIR}/prompts/step_{STEP}/{name}.npy`)."""
  parts = unpack(value, "to export")
  shared = parts["shared"].astype(np.float64)
  files = {name: (shared * np.outer(u, v)).astype(np.float32) for name, u, v in
           zip(parts["tasks"], parts["task_rows"], parts["task_cols"])}
  return {**files, SHARED_FILE: parts["shared"]}


def check_teacher(value: Any, source: str) -> np.ndarray:
  """A teacher prompt as float32 [p, d], or one error naming `source`: it must be a plain
  single-task prompt (not a deep, DePT or MPT file), finite."""
  value = np.asarray(value)
  kind = None
  if is_mpt_file(value):
    kind = f"an MPT file (tasks {[str(t) for t in np.asarray(value['tasks']).tolist()]})"
  elif value.dtype.names is not None:
    kind = f"a record ({', '.join(value.dtype.names)}; a DePT file?)"
  elif value.ndim != 2:
    kind = (f"of shape {value.shape}" + (" (a deep prompt [layers, p, d])"
                                         if value.ndim == 3 else ""))
  if kind is not None:
    raise ValueError(f"Teacher {source} is {kind}, but a teacher is a plain prompt [length, "
                     "d_model]: the prompts/step_{STEP}.npy of a prompt-tuning run on that "
                     "task alone, without a methods/*.gin file.")
  return prompts_io.check_prompt(value, None, source)


def check_teacher_tasks(teacher_tasks: Sequence[str], task_names: Sequence[str]) -> None:
  """Refuses teachers for tasks outside `task_names`, repeated, or missing one."""
  unknown = [t for t in teacher_tasks if t not in task_names]
  if unknown:
    raise ValueError(f"MPT_TEACHERS names {unknown}, not among MPT_TASKS {list(task_names)}; "
                     "give one teacher prompt per task of the mixture, keyed by task name.")
  repeated = sorted({t for t in teacher_tasks if list(teacher_tasks).count(t) > 1})
  if repeated:
    raise ValueError(f"MPT teachers repeat tasks {repeated}; give one teacher per task.")
  missing = [t for t in task_names if t not in teacher_tasks]
  if missing:
    raise ValueError(f"MPT_TEACHERS has no teacher for {missing}; distillation needs one per "
                     f"task of MPT_TASKS {list(task_names)} (or MPT_TEACHERS={{}} for none).")


def teachers_from(teachers: Mapping[str, Any] | None, task_names: Sequence[str]
                  ) -> tuple[Teacher, ...]:
  """{task: .npy path or array [p, d]} -> Teachers, the tasks checked before any file is
  read (MPT_TEACHERS)."""
  if not teachers:
    return ()
  if not isinstance(teachers, Mapping) or not all(isinstance(k, str) for k in teachers):
    raise ValueError(f"MPT_TEACHERS={teachers!r} must be a dict {{task name: teacher prompt "
                     "file}}, e.g. {'wordnet_topic': '/tmp/topic/prompts/step_1000.npy'}.")
  check_teacher_tasks(list(teachers), task_names)
  out = []
  for task, value in teachers.items():
    name = f"MPT_TEACHERS[{task!r}]"
    if isinstance(value, str):
      out.append(Teacher(task, f"{name} (file {value!r})",
                         prompts_io.read_prompt_file(value, name)))
    else:
      out.append(Teacher(task, name, value))
  return tuple(out)


def method(tasks: str | Sequence[str], teachers: Mapping[str, Any] | None = None,
           distillation_weight: float = DISTILLATION_WEIGHT) -> MultiTask:
  """The MPT method over `tasks`: a registered mixture or task name (its tasks, in the
  mixture's order: sorted by name), or a list of registered task names (methods/mpt.gin
  passes MIXTURE_OR_TASK_NAME). Unknown names are refused here, naming the closest.

  teachers: MPT_TEACHERS, None or {} (no distillation), or {task: teacher prompt} for every
    task, each a .npy path (local or gs://) or an array [p_k, d_model]: a plain prompt tuned
    on that task alone. The training loss then adds `distillation_weight`
    (MPT_DISTILLATION_WEIGHT, the paper's lambda) times KL + MSE (the module doc).
  """
  import seqio  # pylint: disable=import-outside-toplevel
  from prompt_tuning.data import tasks as tasks_lib  # seqio; only when the method is built
  if isinstance(tasks, str):
    names = [tasks_lib.base_name(t.name) for t in tasks_lib.get_subtasks(tasks)]
  elif isinstance(tasks, Sequence) and not isinstance(tasks, Mapping):
    for name in tasks:  # each a registered task: UnknownTaskError names the closest
      if not isinstance(name, str) or isinstance(tasks_lib.get_mixture_or_task(name),
                                                 seqio.Mixture):
        raise ValueError(f"MPT_TASKS entry {name!r} is not a task name; give a mixture's "
                         "name, or a list of task names.")
    names = list(tasks)
  else:
    raise ValueError(f"MPT_TASKS={tasks!r} must be a mixture or task name, or a list of task "
                     "names.")
  MultiTask(tuple(names), distillation_weight=distillation_weight)  # the weight, before files
  return MultiTask(tuple(names), teachers_from(teachers, names), distillation_weight)
