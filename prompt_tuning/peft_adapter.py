r"""Prompts to and from Hugging Face PEFT prompt-tuning adapters.

    python -m prompt_tuning.peft_adapter export --prompt_file=F.npy --base_model=HF_DIR \
      --output_dir=DIR [--overwrite]
    python -m prompt_tuning.peft_adapter import --adapter_dir=DIR --output=F.npy \
      [--base_model=HF_DIR] [--tasks=a,b,c] [--overwrite]

HF_DIR is the Hugging Face directory of the frozen model; its config.json decides the kind:
a T5 gives a SEQ_2_SEQ_LM adapter, a decoder-only model (Llama, Qwen2, Gemma, GPT-2) a
CAUSAL_LM one. `export` writes DIR (adapter_config.json + adapter_model.safetensors) so that
`peft.PeftModel.from_pretrained(T5ForConditionalGeneration.from_pretrained(HF_DIR), DIR)`
(or AutoModelForCausalLM) scores as this library does with the prompt (for a decoder: where
the layouts agree, docs/decoder_only.md). `import` writes the adapter's prompt as a float32
.npy [num_virtual_tokens, d_model], checked against HF_DIR (its d_model, its kind); a
CAUSAL_LM adapter needs --base_model, since Gemma's prompt carries the embedding multiplier
in PEFT and not here. The format is described in prompt_tuning/checkpoints/peft.py.

Multi-task prompts (MPT, methods/mpt.gin): export given an MPT record (prompts/step_{STEP}.npy
of an MPT run) writes a MULTITASK_PROMPT_TUNING adapter (rank one, one PEFT task id per task,
in the record's order, which it prints); PEFT called with task_ids=k then gives a row task k's
prompt. import of such an adapter writes an MPT record, its tasks named by --tasks (one per
task id, in order; default task_0, task_1, ...). prompt_tuning/checkpoints/peft_mpt.py says
what maps (num_ranks 1, the encoder's prompt only).

Nothing is replaced unless --overwrite is given: export refuses a DIR that holds files, and
import an existing F.npy. With --overwrite, export replaces only the adapter's two files in
DIR (anything else there is left alone) and import replaces F.npy. Files appear whole or not
at all.
"""

import sys
from typing import Sequence

from absl import flags

from prompt_tuning.checkpoints import peft

_COMMANDS = {"export": ("prompt_file", "base_model", "output_dir"),
             "import": ("adapter_dir", "output")}


def _flag_values() -> flags.FlagValues:
  """The command's flags, on their own FlagValues: no clash with other commands' flags."""
  values = flags.FlagValues()
  for name, help_text in [
      ("prompt_file", "export: the .npy prompt [prompt_length, d_model], or an MPT record "
                     "(prompts/step_{STEP}.npy of an MPT run); local or gs://."),
      ("base_model", "The Hugging Face directory (T5 or decoder-only) the prompt belongs to "
                     "(import: optional for a SEQ_2_SEQ_LM adapter, where it checks the "
                     "width; required for CAUSAL_LM)."),
      ("output_dir", "export: the adapter directory to write."),
      ("adapter_dir", "import: a PEFT prompt-tuning adapter directory."),
      ("output", "import: the .npy prompt file to write (local or gs://).")]:
    flags.DEFINE_string(name, None, help_text, flag_values=values)
  flags.DEFINE_list("tasks", None, "import of a MULTITASK_PROMPT_TUNING adapter: its task "
                    "names, comma-separated, one per PEFT task id in order (default task_0, "
                    "task_1, ...).", flag_values=values)
  flags.DEFINE_bool("overwrite", False, "Replace an earlier adapter's files in --output_dir "
                    "(export) or the file --output (import).", flag_values=values)
  return values


def run(argv: Sequence[str]) -> str:
  """Runs `argv` ([program, command, --flag=value, ...]); returns what was done.

  Raises ValueError (or OSError) for bad input.
  """
  values = _flag_values()
  try:
    rest = values(list(argv))
  except flags.Error as e:
    raise ValueError(f"{e}; see --help.") from None
  command = rest[1:]
  if len(command) != 1 or command[0] not in _COMMANDS:
    raise ValueError(f"Expected one command, export or import, not {command}; see --help.")
  missing = [f"--{name}" for name in _COMMANDS[command[0]] if not values[name].value]
  if missing:
    raise ValueError(f"{command[0]} needs {', '.join(missing)}; see --help.")
  if command[0] == "export":
    if values["tasks"].present:
      raise ValueError("--tasks is for import (an MPT adapter's task names); export takes the "
                       "names from the MPT record. Leave it out.")
    prompt = peft.export_adapter(values.prompt_file, values.base_model, values.output_dir,
                                 overwrite=values.overwrite)
    if peft.is_mpt_record(prompt):
      return (f"Wrote the PEFT {peft.MPT_PEFT_TYPE} adapter {values.output_dir} "
              f"({_describe_mpt(prompt)}) for {values.base_model}.")
    return (f"Wrote the PEFT adapter {values.output_dir} (prompt {prompt.shape[0]} x "
            f"{prompt.shape[1]}) for {values.base_model}.")
  prompt = peft.import_adapter(values.adapter_dir, values.output, values.base_model,
                               overwrite=values.overwrite, tasks=values.tasks)
  if peft.is_mpt_record(prompt):
    return (f"Wrote the MPT record {values.output} ({_describe_mpt(prompt)}) from the PEFT "
            f"{peft.MPT_PEFT_TYPE} adapter {values.adapter_dir}.")
  return (f"Wrote the prompt {values.output} ({prompt.shape[0]} x {prompt.shape[1]}) from "
          f"the PEFT adapter {values.adapter_dir}.")


def _describe_mpt(record) -> str:
  """'shared prompt 5 x 32; task_ids 0=a, 1=b' for an MPT record."""
  length, width = record["shared"].shape
  tasks = [str(t) for t in record["tasks"].tolist()]
  return (f"shared prompt {length} x {width}; task_ids "
          + ", ".join(f"{k}={name}" for k, name in enumerate(tasks)))


def main(argv: Sequence[str]) -> None:
  """The command line: prints one line; bad input exits 1 with one line, no traceback."""
  if any(arg in ("-h", "--help", "--helpshort", "--helpfull") for arg in argv[1:]):
    print(__doc__.strip() + "\n\nFlags:\n" + _flag_values().get_help(include_special_flags=False))
    return
  if any("://" in arg for arg in argv[1:]):
    # gs:// files go through TensorFlow; gin_utils imports it without its start-up lines.
    from prompt_tuning import gin_utils  # pylint: disable=import-outside-toplevel,unused-import
  try:
    print(run(argv))
  except (ValueError, OSError) as e:
    sys.exit("error: " + " ".join(str(e).split("\n")))


if __name__ == "__main__":
  main(sys.argv)
