"""`benchmarks.performance_docs` names a docs block for every command, and each exists."""

import re

from benchmarks import machine, performance_docs


def test_every_command_has_its_docs_block():
  doc = machine.DOCS.read_text()
  blocks = set(re.findall(r"<!-- (\w+):begin -->", doc))
  assert set(performance_docs.COMMANDS) <= blocks
  # The only block no command rewrites is the record of two commits.
  assert blocks - set(performance_docs.COMMANDS) == {"decode_before_after"}


def test_dry_run_lists_the_commands(capsys):
  performance_docs.main(["--dry_run", "--skip", "pod_memory_plan", "pod_memory_plan_decoder"])
  out = capsys.readouterr().out
  assert "benchmarks.workloads_vs_peft" in out and "pod_memory_plan" not in out
