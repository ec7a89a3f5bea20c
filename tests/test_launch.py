"""The launch/ scripts: what --dry-run prints, what a real run executes, and their errors.

No gcloud, srun, network or training: every command a script could run (gcloud, srun,
python3, git, tar, env's target) is a stub on PATH that records its arguments, so the tests
can check both that --dry-run runs nothing and that a real run runs what --dry-run printed.
"""

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SCRIPTS = ["tpu_vm_pod.sh", "gpu.sh", "local_cpu.sh", "local_multiprocess_cpu.sh"]
STUBBED = ["gcloud", "srun", "python3", "git", "tar"]

LABELS = "['not entailment', 'entailment']"
# Flags after --, with what a shell would mangle: spaces, both quotes, $, backquote, ;, *.
TRICKY = [f"--gin.CLASS_LABELS={LABELS}",
          "--gin.JSONL_TRAIN=/data/it's a \"file\" $HOME `x`;*.jsonl",
          "--gin.TRAIN_STEPS=10"]
CKPT = "gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_xxl/checkpoint_1100000"
RUN = ["--task", "super_glue_rte", "--class-labels", LABELS, "--checkpoint", CKPT,
       "--model-dir", "gs://bucket/rte"]
TPU = ["--tpu", "my-tpu", "--zone", "us-central2-b"]
CREATE = ["--accelerator-type", "v4-32", "--version", "tpu-ubuntu2204-base"]
# Options that make each script launch; the first three need all of RUN's but --class-labels.
MINIMAL = {
    "tpu_vm_pod.sh": TPU + CREATE + RUN,
    "gpu.sh": RUN,
    "local_cpu.sh": ["--model-dir", "/tmp/pt"],
    "local_multiprocess_cpu.sh": ["--model-dir", "/tmp/pt"],
}


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
  """A folder of stub commands; each call writes its argv, NUL-separated, to a file in
  $STUB_CALLS named by the time; it fails with status 3 when an argument is $STUB_FAIL, and
  sleeps 20 s when one is $STUB_SLOW."""
  root = tmp_path_factory.mktemp("stubs")
  (root / "bin").mkdir()
  for name in STUBBED:
    stub = root / "bin" / name
    stub.write_text(
        "#!/bin/sh\n"
        'printf "%s\\0" "$(basename "$0")" "$@" > "$STUB_CALLS/$(date +%s%N)-$$"\n'
        'case " $* " in *" $STUB_FAIL "*) exit 3 ;; esac\n'
        'case " $* " in *" $STUB_SLOW "*) exec sleep 20 ;; esac\n')
    stub.chmod(0o755)
  return root


def launch(stubs, tmp_path, script, *args, fail=None, slow=None):
  """Runs launch/SCRIPT ARGS with bash; returns (completed process, recorded calls)."""
  calls = tmp_path / "calls"
  shutil.rmtree(calls, ignore_errors=True)
  calls.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PATH=f"{stubs / 'bin'}{os.pathsep}{env['PATH']}", STUB_CALLS=str(calls),
             STUB_FAIL=fail or "--no-such-flag", STUB_SLOW=slow or "--no-such-flag",
             TMPDIR=str(tmp_path))
  proc = subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True,
                        env=env, timeout=30, check=False)
  recorded = [(calls / f).read_text().split("\0")[:-1] for f in sorted(os.listdir(calls))]
  return proc, recorded


def dry_run(stubs, tmp_path, script, *args):
  """The printed commands of a --dry-run, each as its argv; asserts that nothing ran."""
  proc, recorded = launch(stubs, tmp_path, script, "--dry-run", *args)
  assert proc.returncode == 0, proc.stderr
  assert recorded == [], "--dry-run ran a command"
  return [shlex.split(line) for line in proc.stdout.splitlines()]


def train_argv(command):
  """The argv of prompt_tuning.train inside a printed command, or None when not a train."""
  if command[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]:
    remote = [a for a in command if a.startswith("--command=")][0][len("--command="):]
    command = shlex.split(remote)
  if "prompt_tuning.train" not in command:
    return None
  start = command.index("prompt_tuning.train") - 2  # python3 -m prompt_tuning.train
  return command[start:-1] if command[-1] == "&" else command[start:]


def trains(commands):
  return [t for t in map(train_argv, commands) if t is not None]


def contains_run(argv, part):
  """`part` appears in `argv` as consecutive words."""
  return any(argv[i:i + len(part)] == part for i in range(len(argv) - len(part) + 1))


@pytest.mark.parametrize("script", SCRIPTS)
def test_class_labels_and_extra_flags_reach_the_train_command_intact(stubs, tmp_path, script):
  args = MINIMAL[script] + (["--task", "super_glue_rte"] if "local" in script else [])
  commands = dry_run(stubs, tmp_path, script, *args, "--class-labels", LABELS, "--", *TRICKY)
  assert trains(commands)
  for train in trains(commands):
    assert f"--gin.CLASS_LABELS={LABELS}" in train
    assert contains_run(train, TRICKY)
    gin_bindings = [a for a in train if a.startswith("--gin.")]
    assert gin_bindings[-len(TRICKY):] == TRICKY  # last: they override the launcher's own


def test_tpu_creates_installs_trains_on_every_worker_and_deletes(stubs, tmp_path):
  commands = dry_run(stubs, tmp_path, "tpu_vm_pod.sh", *TPU, *CREATE, "--spot",
                     "--delete-after", *RUN, "--size", "xl", "--num-partitions", "2")
  create, tarball, scp, rm, install, train, delete = commands
  assert create == ["gcloud", "compute", "tpus", "tpu-vm", "create", "my-tpu",
                    "--zone=us-central2-b", "--accelerator-type=v4-32",
                    "--version=tpu-ubuntu2204-base", "--spot"]
  assert tarball[:2] == ["bash", "-c"] and "git" in tarball[2] and str(REPO) in tarball
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert scp[5] == tarball[-1] and "--worker=all" in scp and rm == ["rm", "-f", scp[5]]
  remote_install = shlex.split(install[-1][len("--command="):])
  assert contains_run(remote_install, ["python3", "-m", "pip", "install", "-c",
                                       "constraints.txt", "jax[tpu]", "-e", "."])
  for ssh in (install, train):
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu"]
    assert "--worker=all" in ssh and "--zone=us-central2-b" in ssh
  assert train_argv(train) == [
      "python3", "-m", "prompt_tuning.train", "--gin_file=models/t5_1_1_xl_prompt.gin",
      "--gin_file=prompts/class_labels.gin", "--gin_file=runs/prompt_finetune.gin",
      "--gin.MIXTURE_OR_TASK_NAME=super_glue_rte", f"--gin.CLASS_LABELS={LABELS}",
      f"--gin.INITIAL_CHECKPOINT_PATH={CKPT}", "--gin.MODEL_DIR=gs://bucket/rte",
      "--gin.NUM_PARTITIONS=2", "--gin.ACTIVATION_DTYPE=bfloat16"]
  assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "my-tpu",
                    "--zone=us-central2-b", "--quiet"]


def test_tpu_existing_vm_without_install_only_trains(stubs, tmp_path):
  commands = dry_run(stubs, tmp_path, "tpu_vm_pod.sh", *TPU, "--use-existing", "--no-install",
                     "--project", "my-proj", *RUN)
  assert len(commands) == 1 and "--project=my-proj" in commands[0]
  assert train_argv(commands[0])[3] == "--gin_file=models/t5_1_1_xxl_prompt.gin"


def test_gpu_one_host_is_one_process_on_all_gpus(stubs, tmp_path):
  (command,) = dry_run(stubs, tmp_path, "gpu.sh", *RUN, "--model-gin", "models/hf_t5_prompt.gin")
  assert command[:4] == ["python3", "-m", "prompt_tuning.train",
                         "--gin_file=models/hf_t5_prompt.gin"]
  assert "--gin.NUM_PARTITIONS=4" in command and "--gin.ACTIVATION_DTYPE=bfloat16" in command


def test_gpu_slurm_installs_cuda_jax_and_starts_one_process_per_gpu(stubs, tmp_path):
  install, srun = dry_run(stubs, tmp_path, "gpu.sh", *RUN, "--install", "--slurm",
                          "--gpus-per-node", "8", "--nodes", "2", "--srun-arg=--partition=gpu")
  assert install == ["python3", "-m", "pip", "install", "-c", str(REPO / "constraints.txt"),
                     "jax[cuda12]", "-e", str(REPO)]
  assert srun[:6] == ["srun", "--ntasks-per-node=8", "--gpus-per-node=8", "--nodes=2",
                      "--partition=gpu", "python3"]
  assert train_argv(srun) == srun[5:]


def test_gpu_hosts_without_slurm_name_the_coordinator(stubs, tmp_path):
  (command,) = dry_run(stubs, tmp_path, "gpu.sh", *RUN, "--coordinator", "host0:1234",
                       "--num-processes", "2", "--process-id", "1")
  assert command[-3:] == ["--coordinator_address=host0:1234", "--num_processes=2",
                          "--process_id=1"]


# Without a task the local launchers run the README's CPU demo: the shipped mini T5 (its gin
# file's INITIAL_CHECKPOINT_PATH is the packaged checkpoint) on wordnet_topic.
DEMO = ["--gin_file=models/t5_1_1_mini_prompt.gin", "--gin_file=prompts/class_labels.gin",
        "--gin_file=runs/prompt_finetune.gin", "--gin_file=data/wordnet_topic.gin"]
DEMO_FLAGS = ["--gin.PROMPT_LENGTH=20", "--gin.TRAIN_STEPS=300", "--gin.BATCH_SIZE=16",
              "--gin.CHECKPOINT_PERIOD=100", "--gin.EVAL_PERIOD=100",
              "--gin.USE_RANK_CLASSIFICATION=True"]


@pytest.mark.parametrize("script", ["local_cpu.sh", "local_multiprocess_cpu.sh"])
def test_local_launchers_default_to_the_shipped_mini_model_on_wordnet_topic(stubs, tmp_path,
                                                                            script):
  commands = dry_run(stubs, tmp_path, script, "--model-dir", "/tmp/pt")
  assert commands[0][:2] == ["env", "TF_CPP_MIN_LOG_LEVEL=3"]
  for train in trains(commands):
    assert train[3:7] == DEMO
    assert contains_run(train, ["--gin.MODEL_DIR=/tmp/pt", "--gin.NUM_PARTITIONS=1",
                                *DEMO_FLAGS])
    assert not any(a.startswith("--gin.INITIAL_CHECKPOINT_PATH") for a in train)
    assert not any(a.startswith("--gin.CLASS_LABELS") for a in train)  # the data gin sets them
    assert not any(a.startswith("--gin.MIXTURE_OR_TASK_NAME") for a in train)


def test_the_demo_defaults_are_overridden_after_dashes(stubs, tmp_path):
  (command,) = dry_run(stubs, tmp_path, "local_cpu.sh", "--model-dir", "/tmp/pt", "--",
                       "--gin.TRAIN_STEPS=10")
  assert command[-2:] == ["--gin.USE_RANK_CLASSIFICATION=True", "--gin.TRAIN_STEPS=10"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_size_mini_passes_no_checkpoint_path(stubs, tmp_path, script):
  # Its gin file's default is the checkpoint shipped in the package, so no --checkpoint is
  # needed, for a task of one's own too and on every launcher.
  args = [a for a in MINIMAL[script] if a not in ("--checkpoint", CKPT)]
  if "local" in script:
    args += ["--task", "glue_sst2", "--class-labels", LABELS]
  commands = dry_run(stubs, tmp_path, script, *args, "--size", "mini")
  assert trains(commands)
  for train in trains(commands):
    assert "--gin_file=models/t5_1_1_mini_prompt.gin" in train
    assert not any(a.startswith("--gin.INITIAL_CHECKPOINT_PATH") for a in train)


@pytest.mark.parametrize("script", ["local_cpu.sh", "local_multiprocess_cpu.sh"])
def test_local_size_tiny_without_checkpoint_has_random_weights(stubs, tmp_path, script):
  for train in trains(dry_run(stubs, tmp_path, script, "--model-dir", "/tmp/pt",
                              "--size", "tiny")):
    assert "--gin_file=models/t5_1_1_tiny_prompt.gin" in train
    assert "--gin.INITIAL_CHECKPOINT_PATH=None" in train
    assert "--gin_file=data/wordnet_topic.gin" in train


@pytest.mark.parametrize("script", ["local_cpu.sh", "local_multiprocess_cpu.sh"])
def test_local_checkpoint_is_passed_for_any_size(stubs, tmp_path, script):
  for size in ["tiny", "mini", "large"]:
    for train in trains(dry_run(stubs, tmp_path, script, "--model-dir", "/tmp/pt",
                                "--size", size, "--checkpoint", CKPT)):
      assert f"--gin_file=models/t5_1_1_{size}_prompt.gin" in train
      assert [a for a in train if a.startswith("--gin.INITIAL_CHECKPOINT_PATH")] == [
          f"--gin.INITIAL_CHECKPOINT_PATH={CKPT}"]


def test_local_cpu_own_task_with_devices_and_install(stubs, tmp_path):
  install, command = dry_run(stubs, tmp_path, "local_cpu.sh", "--model-dir", "/tmp/pt",
                             "--task", "glue_sst2", "--class-labels", "['a', 'b']",
                             "--devices", "4", "--num-partitions", "2", "--install")
  assert "jax[cpu]" in install and install[-2:] == ["-e", str(REPO)]
  assert "XLA_FLAGS=--xla_force_host_platform_device_count=4" in command
  train = train_argv(command)
  assert "--gin_file=data/wordnet_topic.gin" not in train
  assert not set(DEMO_FLAGS) & set(train)
  assert "--gin.MIXTURE_OR_TASK_NAME=glue_sst2" in train and "--gin.NUM_PARTITIONS=2" in train


def test_local_multiprocess_starts_every_process_with_its_id(stubs, tmp_path):
  commands = dry_run(stubs, tmp_path, "local_multiprocess_cpu.sh", "--model-dir", "/tmp/pt",
                     "--num-processes", "3", "--port", "2345")
  assert commands[-1] == ["wait"] and all(c[-1] == "&" for c in commands[:-1])
  trains_ = trains(commands)
  assert [t[-1] for t in trains_] == [f"--process_id={i}" for i in range(3)]
  for command, train in zip(commands, trains_):
    assert "XLA_FLAGS=--xla_force_host_platform_device_count=4" in command
    assert contains_run(train, ["--coordinator_address=127.0.0.1:2345", "--num_processes=3",
                                "--cpu_collectives=gloo"])
    assert "--gin_file=data/wordnet_topic.gin" in train


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_real_run_executes_what_the_dry_run_prints(stubs, tmp_path, script):
  args = [*MINIMAL[script], "--", *TRICKY]
  printed = dry_run(stubs, tmp_path, script, *args)
  proc, recorded = launch(stubs, tmp_path, script, *args)
  assert proc.returncode == 0, proc.stderr
  expected = []
  for command in printed:
    command = command[:-1] if command[-1] == "&" else command
    if command[0] == "env":  # env runs the stubbed python3 after its VAR=value words
      command = command[next(i for i, a in enumerate(command[1:], 1) if "=" not in a):]
    if command[0] == "bash":  # the tarball pipeline runs the git and tar stubs
      expected += [["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                    "--exclude-standard"]]
      command = ["tar", "-C", str(REPO), "--null", "--ignore-failed-read", "-T", "-", "-czf",
                 command[-1]]
    if command[0] in STUBBED:
      expected.append(command)
  # The same commands; in the same order, but for the ones that run at once (the two ends
  # of the tarball pipe, the processes of a multi-process launch).
  assert sorted(recorded) == sorted(expected)
  if script != "local_multiprocess_cpu.sh":
    in_order = lambda calls: [c for c in calls if c[0] not in ("git", "tar")]
    assert in_order(recorded) == in_order(expected)


def test_local_multiprocess_stops_the_others_when_one_process_fails(stubs, tmp_path):
  start = time.monotonic()
  proc, recorded = launch(stubs, tmp_path, "local_multiprocess_cpu.sh", "--model-dir", "/tmp/pt",
                          fail="--process_id=1", slow="--process_id=0")
  assert proc.returncode == 3 and "stopping the others" in proc.stderr
  assert any("--process_id=1" in call for call in recorded)
  assert time.monotonic() - start < 10  # process 0 (20 s) was stopped, not waited for


@pytest.mark.parametrize("script", SCRIPTS)
def test_no_options_prints_the_usage_and_runs_nothing(stubs, tmp_path, script):
  proc, recorded = launch(stubs, tmp_path, script)
  assert proc.returncode != 0
  assert proc.stderr.startswith("Usage: launch/" + script) and "--model-dir" in proc.stderr
  assert proc.stdout == "" and recorded == []


def one_line_error(proc):
  """The launcher's error: one line that ends by pointing at --help, no usage before it."""
  assert proc.stderr.endswith("; see --help\n") and proc.stderr.count("\n") == 1, proc.stderr
  return proc.stderr


@pytest.mark.parametrize("script,option", [
    *[("tpu_vm_pod.sh", o) for o in ["--tpu", "--zone", "--accelerator-type", "--version",
                                     "--task", "--checkpoint", "--model-dir", "--class-labels"]],
    *[("gpu.sh", o) for o in ["--task", "--checkpoint", "--model-dir", "--class-labels"]],
    ("local_cpu.sh", "--model-dir"), ("local_multiprocess_cpu.sh", "--model-dir"),
])
def test_each_missing_required_option_is_named(stubs, tmp_path, script, option):
  args = list(MINIMAL[script])
  del args[args.index(option):args.index(option) + 2]
  # Without --class-labels the launcher has a working set otherwise: --task names a real run.
  # (Some option is given: none at all prints the usage instead.)
  proc, recorded = launch(stubs, tmp_path, script, *(args or ["--python", "python3"]))
  assert proc.returncode != 0
  assert re.search(f"error: .*{option}", one_line_error(proc))
  assert proc.stdout == "" and recorded == []


# Every option that takes a value, per launcher (--srun-arg takes srun's own options).
VALUE_OPTIONS = {
    "tpu_vm_pod.sh": ["--tpu", "--zone", "--project", "--accelerator-type", "--version"],
    "gpu.sh": ["--gpus-per-node", "--nodes", "--coordinator", "--num-processes",
               "--process-id"],
    "local_cpu.sh": ["--devices"],
    "local_multiprocess_cpu.sh": ["--num-processes", "--devices-per-process", "--port"],
}
RUN_VALUE_OPTIONS = ["--task", "--class-labels", "--checkpoint", "--size", "--model-gin",
                     "--prompt-init", "--num-partitions", "--model-dir", "--python"]


@pytest.mark.parametrize("script,option", [
    (script, option) for script in SCRIPTS
    for option in VALUE_OPTIONS[script] + RUN_VALUE_OPTIONS])
def test_an_option_is_never_taken_as_the_value_of_another(stubs, tmp_path, script, option):
  # `--model-dir --dry-run` once started a real run in a folder named --dry-run.
  proc, recorded = launch(stubs, tmp_path, script, *MINIMAL[script], option, "--dry-run")
  assert proc.returncode == 2
  assert f"error: {option} needs a value, not the option '--dry-run'" in one_line_error(proc)
  assert proc.stdout == "" and recorded == [] and list(tmp_path.iterdir()) == [tmp_path / "calls"]


def test_srun_args_are_srun_options(stubs, tmp_path):
  (_, srun) = dry_run(stubs, tmp_path, "gpu.sh", *RUN, "--install", "--slurm",
                      "--gpus-per-node", "8", "--srun-arg", "--partition=gpu")
  assert "--partition=gpu" in srun


@pytest.mark.parametrize("script,args,message", [
    ("gpu.sh", RUN + ["--size", "huge"], "unknown --size 'huge'; the sizes are .*xxl"),
    ("gpu.sh", RUN + ["--class-labels", "a,b"], "--class-labels takes a gin list"),
    ("gpu.sh", RUN + ["--num-partitions", "0"], "--num-partitions takes a positive integer"),
    ("gpu.sh", RUN + ["--prompt-init", "nope"], "no gin file 'prompts/nope.gin'"),
    ("gpu.sh", RUN + ["--nodes", "2"], "need --slurm"),
    ("gpu.sh", RUN + ["--slurm"], "missing --gpus-per-node"),
    ("gpu.sh", RUN + ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id must be 0 to 1"),
    ("tpu_vm_pod.sh", TPU + CREATE + RUN + ["--use-existing"], "--use-existing creates nothing"),
    ("local_cpu.sh", ["--model-dir", "/tmp/pt", "--gin.TRAIN_STEPS=3"], "unknown option"),
    ("local_cpu.sh", ["--model-dir"], "--model-dir needs a value"),
    # Only the shipped mini model and the random tiny one go without a checkpoint.
    *[(s, ["--model-dir", "/tmp/pt", "--size", "large"],
       "error: missing --checkpoint; .*not models/t5_1_1_large_prompt.gin")
      for s in ["local_cpu.sh", "local_multiprocess_cpu.sh"]],
    ("local_cpu.sh", ["--model-dir", "/tmp/pt", "--model-gin", "models/hf_t5_prompt.gin"],
     "error: missing --checkpoint"),
    ("gpu.sh", [a for a in RUN if a != CKPT and a != "--checkpoint"] + ["--size", "tiny"],
     "error: missing --checkpoint"),
])
def test_bad_options_are_refused_before_anything_runs(stubs, tmp_path, script, args, message):
  proc, recorded = launch(stubs, tmp_path, script, *args)
  assert proc.returncode != 0 and re.search(message, one_line_error(proc))
  assert proc.stdout == "" and recorded == []


def test_class_labels_may_come_after_dashes_and_other_initializers_need_none(stubs, tmp_path):
  no_labels = [a for a in RUN if a not in ("--class-labels", LABELS)]
  (command,) = dry_run(stubs, tmp_path, "gpu.sh", *no_labels, "--", f"--gin.CLASS_LABELS={LABELS}")
  assert command.count(f"--gin.CLASS_LABELS={LABELS}") == 1
  (command,) = dry_run(stubs, tmp_path, "gpu.sh", *no_labels, "--prompt-init", "sampled_vocab")
  assert "--gin_file=prompts/sampled_vocab.gin" in command
  assert not any(a.startswith("--gin.CLASS_LABELS") for a in command)


def test_a_data_gin_file_after_dashes_stands_for_the_task(stubs, tmp_path):
  no_task = [a for a in RUN if a not in ("--task", "super_glue_rte")]
  jsonl = ["--gin_file=data/jsonl.gin", "--gin.JSONL_TRAIN=/data/train.jsonl"]
  (command,) = dry_run(stubs, tmp_path, "gpu.sh", *no_task, "--", *jsonl)
  assert not any(a.startswith("--gin.MIXTURE_OR_TASK_NAME") for a in command)
  assert command[-2:] == jsonl
  (command,) = dry_run(stubs, tmp_path, "local_cpu.sh", "--model-dir", "/tmp/pt",
                       "--class-labels", LABELS, "--", *jsonl)
  assert "--gin_file=data/wordnet_topic.gin" not in command
  assert not set(DEMO_FLAGS) & set(command)


def test_option_equals_value_is_the_same_as_option_value(stubs, tmp_path):
  spaced = dry_run(stubs, tmp_path, "gpu.sh", *RUN)
  joined = dry_run(stubs, tmp_path, "gpu.sh",
                   *[f"{RUN[i]}={RUN[i + 1]}" for i in range(0, len(RUN), 2)])
  assert joined == spaced


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_is_printed_and_every_option_is_documented(stubs, tmp_path, script):
  proc, recorded = launch(stubs, tmp_path, script, "--help")
  assert proc.returncode == 0 and proc.stdout.startswith("Usage:") and recorded == []
  docs = (REPO / "docs" / "launch.md").read_text()
  assert f"launch/{script}" in docs
  for option in set(re.findall(r"^\s+(--[a-z][a-z-]*)", proc.stdout, flags=re.MULTILINE)):
    assert f"`{option}" in docs, f"{option} of {script} is not in docs/launch.md"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean():
  scripts = sorted(str(p) for p in LAUNCH.glob("*.sh"))
  proc = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True, check=False,
                        timeout=60)
  assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
