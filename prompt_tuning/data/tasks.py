"""Finding registered seqio tasks and mixtures by name.

Importing this module registers every built-in task (GLUE, SuperGLUE, WordNet, the demo); JSONL tasks
register when `prompt_tuning.data.jsonl.jsonl_task` is called (by gin). Names: docs/data.md.
"""

import difflib

import seqio

from prompt_tuning.data import errors, registry, vocabularies
# Imported for their registrations.
from prompt_tuning.data import demo, glue, super_glue, wordnet  # pylint: disable=unused-import

BUILTIN_TASKS = (*glue.TASK_NAMES, *super_glue.TASK_NAMES, *wordnet.TASK_NAMES, demo.TASK_NAME)
BUILTIN_MIXTURES = (*super_glue.MIXTURE_NAMES, *wordnet.MIXTURES)


def registered_names() -> list[str]:
  """Every registered task and mixture name (seqio's registries, not only ours), sorted."""
  return sorted({*seqio.TaskRegistry.names(), *seqio.MixtureRegistry.names()})


def get_mixture_or_task(name: str) -> seqio.Task | seqio.Mixture:
  """The registered task or mixture `name`.

  Raises:
    UnknownTaskError: naming `name` and the closest registered names.
  """
  if not isinstance(name, str):
    raise errors.UnknownTaskError(
        f"MIXTURE_OR_TASK_NAME must be a task or mixture name (str), got {name!r}.")
  if name in seqio.MixtureRegistry.names():
    return seqio.MixtureRegistry.get(name)
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  names = registered_names()
  close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
  hint = f"closest: {close}" if close else "none is close"
  raise errors.UnknownTaskError(
      f"No task or mixture named {name!r} is registered ({hint}). Registered names are listed "
      "by `python -m prompt_tuning.data.list_tasks`; for a JSONL file of your own use "
      "--gin_file=data/jsonl.gin.")


def as_provider(name_or_provider: str | seqio.Task | seqio.Mixture) -> seqio.Task | seqio.Mixture:
  """A task or mixture given by name or as the object itself."""
  if isinstance(name_or_provider, (seqio.Task, seqio.Mixture)):
    return name_or_provider
  return get_mixture_or_task(name_or_provider)


def get_subtasks(name_or_provider: str | seqio.Task | seqio.Mixture) -> list[seqio.Task]:
  """[task] for a task; the tasks of a mixture (sorted by name, sub-mixtures flattened)."""
  provider = as_provider(name_or_provider)
  return list(provider.tasks) if isinstance(provider, seqio.Mixture) else [provider]


def with_vocabulary(name: str, vocabulary_path: str | None = None, *, kind: str = "t5",
                    extra_ids: int = vocabularies.DEFAULT_EXTRA_IDS) -> str:
  """Name of task/mixture `name` tokenized with the vocabulary at `vocabulary_path`.

  For VOCABULARY_PATH: None keeps the task's own vocabulary and returns `name`; so does a
  file that tokenizes the same way. Otherwise a copy "{name}.vocab_{hash}" is registered
  (once) and its name returned.
  """
  provider = get_mixture_or_task(name)
  if vocabulary_path is None:
    return name
  vocabulary = vocabularies.get_vocabulary(vocabulary_path, kind=kind, extra_ids=extra_ids)
  return registry.with_vocabulary(provider, vocabulary)


def base_name(name: str) -> str:
  """The user's name behind a `with_vocabulary` copy: "glue_sst2.vocab_1a2b" -> "glue_sst2"."""
  return name.split(".vocab_")[0]
