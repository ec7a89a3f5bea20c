"""T5X-style command lines for the jobs: --gin_file, --gin.NAME=VALUE, --gin_search_paths.

Gin file names resolve against the user's search paths first, then the gin_configs/ folder
installed with this package, so `--gin_file=models/t5_1_1_base_prompt.gin` works anywhere.

The log shows this package's lines and the warnings and errors of anything; the INFO lines
of orbax, absl, JAX and TensorFlow appear only with --verbose. The train job writes the
operative gin config to {MODEL_DIR}/config.gin.
"""

import ast
import difflib
import importlib.resources
import logging as pylogging
import os
import re
import sys
import tempfile
import traceback
from typing import Any, Callable, Sequence

import gin
from absl import app, flags, logging


def _verbose_in(argv: Sequence[str]) -> bool:
  return any(arg in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1")
             for arg in argv)


# TensorFlow's C++ side writes INFO lines ('Could not find cuda drivers ...') to stderr while
# it is imported, before any log setting applies.
_CPP_INFO = re.compile(r"^(I\d{4} |WARNING: All log messages before absl::InitializeLog)")


def _import_tensorflow_quietly() -> None:
  """Imports TensorFlow with its start-up INFO lines dropped; warnings and errors still show.

  Jobs import this module before TensorFlow, so this import is the first. --verbose keeps
  every line.
  """
  if "tensorflow" in sys.modules:
    return
  if _verbose_in(sys.argv):
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # pylint: disable=import-outside-toplevel,unused-import
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
      sys.stderr.write("".join(line for line in lines if not _CPP_INFO.match(line)))


_import_tensorflow_quietly()

flags.DEFINE_multi_string("gin_file", [], "Gin file, relative to the search paths; repeatable.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin binding 'NAME = VALUE'; repeatable.")
flags.DEFINE_list("gin_search_paths", [], "Extra folders to look for gin files in.")
flags.DEFINE_string("coordinator_address", None, "Multi-host: the coordinator's host:port.")
flags.DEFINE_integer("num_processes", None, "Multi-host: how many processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
flags.DEFINE_string("cpu_collectives", None, "Multi-host on CPU: 'gloo'.")
flags.DEFINE_bool("verbose", False, "Also log the INFO lines of orbax, absl, JAX and "
                  "TensorFlow (by default only this package's, plus everyone's warnings).")

FLAGS = flags.FLAGS
CONFIG_FILE = "config.gin"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _QuietGinSearch(pylogging.Filter):
  """Gin logs an ERROR for every search path an include is not in; it is not an error."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.module != "resource_reader"


pylogging.getLogger().addFilter(_QuietGinSearch())


def _skip_folders_in_gin_package_search() -> None:
  """Gin also looks for `data/x.gin` as a file of the Python package `data`. A plain folder
  data/ (or runs/, models/) in the working directory is a namespace package with no file,
  and gin's check then raises TypeError ('expected str, ... not NoneType') instead of trying
  the next place: a user with a data/ folder could not use --gin_file=data/jsonl.gin. The
  check is wrapped to answer 'not here' for such a folder."""
  from gin import config as gin_config  # pylint: disable=import-outside-toplevel
  from gin import resource_reader  # pylint: disable=import-outside-toplevel

  def exists(path: str) -> bool:
    try:
      return resource_reader.system_path_file_exists(path)
    except TypeError:
      return False

  gin_config._FILE_READERS[:] = [  # pylint: disable=protected-access
      (reader, exists if check is resource_reader.system_path_file_exists else check)
      for reader, check in gin_config._FILE_READERS]  # pylint: disable=protected-access


_skip_folders_in_gin_package_search()


class _OursOrWarnings(pylogging.Filter):
  """This package's lines at any level; other libraries' only from WARNING up."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or record.pathname.startswith(_PACKAGE_DIR)


_OURS_OR_WARNINGS = _OursOrWarnings()


class GinConfigError(ValueError):
  """A gin file or binding that cannot be used."""


def gin_root() -> str:
  return str(importlib.resources.files("prompt_tuning.gin_configs"))


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
  """`--gin.NAME=VALUE` -> `--gin_bindings=NAME = VALUE`, quoting bare strings.

  T5X makes users quote strings in the shell (`--gin.MODEL_DIR=\\"/tmp/x\\"`); a value that is
  no Python literal, macro or reference is taken as a string here instead.
  """
  out = []
  for arg in argv:
    if arg.startswith("--gin.") and "=" in arg:
      name, value = arg[len("--gin."):].split("=", 1)
      out.append(f"--gin_bindings={name} = {_as_gin_value(value)}")
    else:
      out.append(arg)
  return out


def _as_gin_value(value: str) -> str:
  if value.startswith(("%", "@")):
    return value
  try:
    ast.literal_eval(value)
    return value
  except (ValueError, SyntaxError):
    return repr(value)


# What the jobs tell a user who gave no --gin_file.
JOB_EXAMPLE = ("--gin_file=models/t5_1_1_mini_prompt.gin and the job's run file, e.g. "
               "--gin_file=runs/prompt_finetune.gin (train), runs/prompt_eval.gin (eval) or "
               "runs/prompt_infer.gin (infer)")


def parse(gin_files: Sequence[str], bindings: Sequence[str],
          search_paths: Sequence[str] = (), example: str = JOB_EXAMPLE) -> None:
  """Parses gin files then bindings; any problem becomes one GinConfigError with its source.

  Relative local paths in PATH_MACROS become absolute; `example` is the gin files to suggest
  when none is given.
  """
  for path in [*search_paths, gin_root()]:
    gin.add_config_file_search_path(path)
  if not gin_files:
    raise GinConfigError(f"No --gin_file given; start from e.g. {example}.")
  for name in gin_files:
    if not _findable(name, [*search_paths, gin_root()]):
      raise GinConfigError(f"--gin_file={name} was not found in {[*search_paths, gin_root()]}; "
                           "names are relative to gin_configs/ (e.g. runs/prompt_finetune.gin).")
  try:
    gin.parse_config_files_and_bindings(gin_files, [], finalize_config=False)
    _check_macros_exist(bindings)
    gin.parse_config_files_and_bindings([], bindings, finalize_config=False)
  except GinConfigError:
    raise
  except Exception as e:  # gin raises many kinds; its message already names the file and line
    raise GinConfigError(f"Gin configuration error: {e}") from None
  _resolve_path_macros()


# Macros that hold local or remote paths (a string, or a list or dict of them).
PATH_MACROS = ("MODEL_DIR", "INFER_OUTPUT_DIR", "INITIAL_CHECKPOINT_PATH", "VOCABULARY_PATH",
               "PROMPT_FILE", "PROMPTS", "PROMPT_ENSEMBLE", "JSONL_TRAIN", "JSONL_VALIDATION",
               "JSONL_TEST", "PRETRAIN_TEXT_FILES", "PRETRAIN_VALIDATION_TEXT_FILES")


def _resolve_path_macros() -> None:
  """Rebinds each relative local path in PATH_MACROS to its absolute path; refuses ''.

  Where the job runs from is fixed here, once: orbax takes only absolute paths (a relative
  MODEL_DIR used to fail at the first checkpoint, its steps lost), and config.gin then records
  paths that mean the same from anywhere. Remote paths (gs://...) and references are kept.
  """
  bound = set(re.findall(r"^([A-Z][A-Z0-9_]*) = ", gin.config_str(), flags=re.MULTILINE))
  rebound = []
  for name in PATH_MACROS:
    if name in bound:
      value = gin.query_parameter(f"%{name}")
      resolved = _absolute_paths(name, value)
      if resolved != value:
        rebound.append(f"{name} = {resolved!r}")
        logging.info("%s=%r is relative to the current directory: using %r.", name, value,
                     resolved)
  if rebound:
    gin.parse_config("\n".join(rebound))


def _absolute_paths(name: str, value: Any) -> Any:
  """`value` with every local path in it made absolute (str, or a list or dict of str)."""
  if isinstance(value, (list, tuple)):
    return type(value)(_absolute_paths(f"{name}[{i}]", v) for i, v in enumerate(value))
  if isinstance(value, dict):
    return {k: _absolute_paths(f"{name}[{k!r}]", v) for k, v in value.items()}
  if not isinstance(value, str):
    return value  # None, or a reference (e.g. the shipped model's path)
  if not value.strip():
    raise GinConfigError(f"{name}={value!r} is empty; give a path (or None where the macro "
                         "may be left out).")
  if "://" in value:
    return value
  return os.path.abspath(os.path.expanduser(value))


_MACRO_BINDING = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s*=")


def _check_macros_exist(bindings: Sequence[str]) -> None:
  """A --gin.MACRO the gin files never define is a typo: gin alone would accept it silently."""
  config = gin.config_str()
  known = sorted(set(re.findall(r"^([A-Z][A-Z0-9_]*) = ", config, flags=re.MULTILINE)
                     + re.findall(r"%([A-Z][A-Z0-9_]*)\b", config)))
  for binding in bindings:
    match = _MACRO_BINDING.match(binding)
    if match and match.group(1) not in known:
      close = difflib.get_close_matches(match.group(1), known, n=3)
      raise GinConfigError(f"--gin.{match.group(1)} sets a macro that no gin file uses"
                           + (f"; did you mean {', '.join(close)}?" if close else
                              f"; known macros: {', '.join(known)}."))


def _findable(name: str, roots: Sequence[str]) -> bool:
  return os.path.exists(name) or any(os.path.exists(os.path.join(r, name)) for r in roots)


_in_configured_call = False  # whether a job's function runs with its gin bindings


def call_configured(fn: Callable[[], Any], example_run_file: str) -> Any:
  """Calls `fn` with its gin bindings (dynamic registration binds, it does not patch)."""
  global _in_configured_call
  try:
    configured = gin.get_configurable(fn)
  except ValueError:
    raise GinConfigError(f"No gin file configures {fn.__module__}.{fn.__name__}; add e.g. "
                         f"--gin_file={example_run_file}.") from None
  _bind_unset_macros()
  _in_configured_call = True
  try:
    result = configured()
  finally:
    _in_configured_call = False
  logging.debug("Operative gin config:\n%s", gin.operative_config_str())
  return result


# What to suggest for a macro a gin file marks `%gin.REQUIRED` when none is given.
_REQUIRED_EXAMPLES = {
    "MODEL_DIR": "/path/for/this/run",
    "INFER_OUTPUT_DIR": "/path/for/the/predictions",
    "MIXTURE_OR_TASK_NAME": "glue_sst2 (python -m prompt_tuning.data.list_tasks), or give a "
                            "--gin_file=data/*.gin",
    "CLASS_LABELS": "\"['negative', 'positive']\", or use another prompts/*.gin",
    "PROMPT_TEXT": "'Classify the sentiment:'",
    "PROMPT_FILE": "/path/to/prompt.npy",
    "INITIAL_CHECKPOINT_PATH": "/path/to/checkpoint",
}


def _required_macros() -> list[str]:
  """The macros still bound to `%gin.REQUIRED`: a gin file asks for them and none was given."""
  names = sorted(set(re.findall(r"^([A-Z][A-Z0-9_]*) = ", gin.config_str(), flags=re.MULTILINE)))
  return [name for name in names if getattr(gin.query_parameter(f"%{name}"),
                                            "scoped_selector", None) == "gin.REQUIRED/gin.constant"]


def _bind_unset_macros() -> None:
  """Binds each unset required macro to `unset_macro` in a scope of its name.

  Gin would hand the job a bare sentinel object instead (failing deep inside, or printing
  `<object object at 0x...>`); this way using the macro is the one clear error, and a
  macro the job never uses costs nothing.
  """
  lines = [f"{name} = @{name}/gin_utils.unset_macro()" for name in _required_macros()]
  if lines:
    gin.parse_config("from __gin__ import dynamic_registration\n"
                     "from prompt_tuning import gin_utils\n" + "\n".join(lines))


def unset_macro() -> Any:
  """Raises GinConfigError naming the macro (the innermost gin scope) that is not set."""
  name = gin.current_scope()[-1]
  raise GinConfigError(f"{name} is required and not set; pass --gin.{name}="
                       f"{_REQUIRED_EXAMPLES.get(name, 'VALUE')}.")


def write_operative_config(model_dir: str) -> None:
  """Writes the gin config in force to {model_dir}/config.gin (process 0, atomically).

  Called by a job once its configured function has started, when every binding it uses has
  been read; outside a gin-configured call (a direct Python call) there is none to write.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if not _in_configured_call or jax.process_index() != 0:
    return
  path = os.path.join(model_dir, CONFIG_FILE)
  tmp = f"{path}.tmp-{os.getpid()}"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(gin.operative_config_str())
  tf.io.gfile.rename(tmp, path, overwrite=True)
  logging.info("Wrote the operative gin config to %s.", path)


def run(main: Callable[[], None], example: str = JOB_EXAMPLE) -> None:
  """absl entry point: rewrite --gin.X flags, then `execute(main)` with the parsed flags."""
  def _main(argv):
    del argv
    execute(main, example)
  app.run(_main, argv=rewrite_gin_args(sys.argv))


def execute(main: Callable[[], None], example: str = JOB_EXAMPLE) -> None:
  """Starts multi-host if asked, parses gin, calls main; the flags are already parsed.

  Bad input ends the job with one `error:` line (SystemExit, exit status 1); a train job
  stopped by SIGTERM exits with job_utils.Preempted.EXIT_CODE after its own message.
  """
  if not FLAGS.verbose:
    logging.get_absl_handler().addFilter(_OURS_OR_WARNINGS)
  from prompt_tuning import job_utils, partitioning  # after flags: keeps `--help` fast
  partitioning.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                      FLAGS.process_id, FLAGS.cpu_collectives)
  try:
    parse(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths, example)
    main()
  except job_utils.Preempted as e:
    logging.warning("%s", _without_gin_context(str(e)))
    sys.exit(e.EXIT_CODE)
  except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, not a trace
    logging.vlog(1, "Traceback:\n%s", traceback.format_exc())
    message = str(e) if _detailed() else _without_gin_context(str(e))
    message = _SENTINEL.sub("not set", message)
    sys.exit(f"error: {message}\n(--verbosity=1 shows the traceback)")


# Gin appends where an exception passed through a configurable ("  In call to configurable
# 'train' (<function train at 0x...>)"): noise in a one-line error, kept with --verbosity=1.
_GIN_CONTEXT = re.compile(r"\n\s*In call to configurable .*$", flags=re.DOTALL)


# gin.REQUIRED as Python prints it, should an unset value reach a message some other way.
_SENTINEL = re.compile(r"<object object at 0x[0-9a-f]+>")


def _without_gin_context(message: str) -> str:
  return _GIN_CONTEXT.sub("", message)


def _detailed() -> bool:
  return FLAGS.verbose or logging.get_verbosity() >= 1
