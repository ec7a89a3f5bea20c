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


class _OursOrWarnings(pylogging.Filter):
  """This package's lines at any level; other libraries' only from WARNING up."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or record.pathname.startswith(_PACKAGE_DIR)


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


def parse(gin_files: Sequence[str], bindings: Sequence[str],
          search_paths: Sequence[str] = ()) -> None:
  """Parses gin files then bindings; any problem becomes one GinConfigError with its source."""
  for path in [*search_paths, gin_root()]:
    gin.add_config_file_search_path(path)
  if not gin_files:
    raise GinConfigError("No --gin_file given; start from e.g. --gin_file=models/"
                         "t5_1_1_tiny_prompt.gin --gin_file=runs/prompt_finetune.gin.")
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
  _in_configured_call = True
  try:
    result = configured()
  finally:
    _in_configured_call = False
  logging.debug("Operative gin config:\n%s", gin.operative_config_str())
  return result


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


def run(main: Callable[[], None]) -> None:
  """absl entry point: rewrite --gin.X flags, start multi-host if asked, parse gin, call main.

  Bad input ends the job with one `error:` line (exit 1); a train job stopped by SIGTERM
  exits with job_utils.Preempted.EXIT_CODE after its own message.
  """
  def _main(argv):
    del argv
    if not FLAGS.verbose:
      logging.get_absl_handler().addFilter(_OursOrWarnings())
    from prompt_tuning import job_utils, partitioning  # after flags: keeps `--help` fast
    partitioning.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id, FLAGS.cpu_collectives)
    try:
      parse(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
      main()
    except job_utils.Preempted as e:
      logging.warning("%s", str(e).splitlines()[0])  # without gin's "In call to ..." line
      sys.exit(e.EXIT_CODE)
    except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, not a trace
      logging.vlog(1, "Traceback:\n%s", traceback.format_exc())
      sys.exit(f"error: {e}\n(--verbosity=1 shows the traceback)")
  app.run(_main, argv=rewrite_gin_args(sys.argv))
