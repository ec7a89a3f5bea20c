# shellcheck shell=bash
# What the launchers share: the run options, the train command built from them, and
# --dry-run. Sourced by each launch/*.sh script (after it sets DEFAULT_SIZE and
# DEFAULT_NUM_PARTITIONS); not a command of its own.

if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 404)); then
  # Empty arrays under `set -u` and `wait -n` need bash 4.4 (macOS ships 3.2).
  echo "$0: needs bash 4.4 or newer, this is $BASH_VERSION" >&2
  exit 2
fi

# The checkout the scripts live in: what gets installed, and where gin names are checked.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The run options (see common_usage).
TASK="" CLASS_LABELS="" CHECKPOINT="" MODEL_GIN="" MODEL_DIR=""
SIZE=$DEFAULT_SIZE NUM_PARTITIONS=$DEFAULT_NUM_PARTITIONS PROMPT_INIT=class_labels
PYTHON=python3 DRY_RUN=0
NEED_CLASS_LABELS=1  # 0 where a data gin file sets CLASS_LABELS (the local demo)
RANDOM_TINY=0     # 1 where the tiny model may run without --checkpoint, on random weights
EXTRA=()          # train flags after --, passed through untouched and last
DATA_GIN=()       # gin files a launcher adds after the model and run files
DEFAULT_FLAGS=()  # a launcher's own defaults, before EXTRA so that EXTRA overrides them

# The shipped mini T5: its gin file's INITIAL_CHECKPOINT_PATH (and VOCABULARY_PATH) default to
# files inside the package, so it needs no --checkpoint. The tiny model has no weights at all.
MINI_GIN=models/t5_1_1_mini_prompt.gin
TINY_GIN=models/t5_1_1_tiny_prompt.gin

common_usage() {
  cat <<EOF
Run options (every launcher):
  --task NAME           seqio task or mixture to train on (MIXTURE_OR_TASK_NAME); or
                        give a data gin file after --, e.g. -- --gin_file=data/jsonl.gin
  --class-labels LIST   the class labels as a gin list, e.g. "['negative', 'positive']"
                        (CLASS_LABELS); needed by --prompt-init class_labels unless the
                        flags after -- set --gin.CLASS_LABELS
  --checkpoint PATH     the frozen model (INITIAL_CHECKPOINT_PATH): a T5X checkpoint or a
                        Hugging Face directory, local or gs://; not needed by --size mini,
                        whose gin file defaults to the mini T5 shipped in the package
  --size SIZE           T5 1.1 size, gin file models/t5_1_1_SIZE_prompt.gin
                        (tiny, mini, small, base, large, xl, xxl; default $DEFAULT_SIZE)
  --model-gin FILE      another models/*.gin instead of --size, e.g. models/hf_t5_prompt.gin
                        or models/mt5_xl_prompt.gin
  --prompt-init NAME    prompt initializer, gin file prompts/NAME.gin (default class_labels;
                        also sampled_vocab, random_uniform, from_text, from_file, ...)
  --num-partitions N    model-parallel ways (NUM_PARTITIONS; default $DEFAULT_NUM_PARTITIONS)
  --model-dir DIR       where checkpoints, prompts and summaries go (MODEL_DIR)
  --python PY           Python interpreter that runs pip and the job (default python3)
  --dry-run             print every command, one per line and shell-quoted, and run nothing
  -h, --help            print this help
  -- FLAGS...           everything after -- goes to prompt_tuning.train as it is, after
                        the launcher's flags (so it overrides them), e.g.
                        -- --gin.TRAIN_STEPS=1000 --gin.LEARNING_RATE=0.1
Options take their value as "--opt VALUE" or "--opt=VALUE".
EOF
}

local_defaults_usage() {  # what the local launchers do without a task or a checkpoint
  cat <<EOF
Without a task (--task, or a data gin file after --): the README's CPU demo task,
wordnet_topic (data/wordnet_topic.gin, which sets CLASS_LABELS), with
  --gin.PROMPT_LENGTH=20 --gin.TRAIN_STEPS=300 --gin.BATCH_SIZE=16
  --gin.CHECKPOINT_PERIOD=100 --gin.EVAL_PERIOD=100 --gin.USE_RANK_CLASSIFICATION=True
(override any after --).
Without --checkpoint: --size mini (the default) is the pretrained mini T5 shipped in the
package (no INITIAL_CHECKPOINT_PATH flag); --size tiny gets INITIAL_CHECKPOINT_PATH=None
(random weights: a smoke run); any other model needs --checkpoint.
EOF
}

prepare_local_run() {  # the local launchers' checks and train command, after their options
  RANDOM_TINY=1  # the tiny model without --checkpoint: random weights, a smoke run
  require MODEL_DIR CHECKPOINT
  demo_defaults
  check_run_options
  build_train_command
}

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

usage_error() {  # what was wrong, in one line, before anything has run
  die "$*; see --help"
}

usage_without_options() {  # usage_without_options "$@": no options at all is a request for help
  if (($# == 0)); then
    usage >&2
    exit 2
  fi
}

need_value() {  # need_value "$@": the option in $1 has a value in $2, not the next option
  # (`--model-dir --dry-run` would otherwise train in a folder named --dry-run)
  (($# >= 2)) || usage_error "$1 needs a value"
  [[ $2 != --* ]] || usage_error "$1 needs a value, not the option '$2'"
}

need_any_value() {  # need_value for options whose values are options, e.g. --srun-arg
  (($# >= 2)) || usage_error "$1 needs a value"
}

check_int() {  # check_int OPTION VALUE: a positive integer
  [[ $2 =~ ^[1-9][0-9]*$ ]] || usage_error "$1 takes a positive integer, not '$2'"
}

# shellcheck disable=SC2034  # SHIFT is read by the launcher's option loop
common_option() {  # handles one run option at "$@"; sets SHIFT to the arguments it used
  SHIFT=2
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; SHIFT=1 ;;
    --task) need_value "$@"; TASK=$2 ;;
    --class-labels) need_value "$@"; CLASS_LABELS=$2 ;;
    --checkpoint) need_value "$@"; CHECKPOINT=$2 ;;
    --size) need_value "$@"; SIZE=$2 ;;
    --model-gin) need_value "$@"; MODEL_GIN=$2 ;;
    --prompt-init) need_value "$@"; PROMPT_INIT=$2 ;;
    --num-partitions) need_value "$@"; check_int "$@"; NUM_PARTITIONS=$2 ;;
    --model-dir) need_value "$@"; MODEL_DIR=$2 ;;
    --python) need_value "$@"; PYTHON=$2 ;;
    *) usage_error "unknown option '$1' (flags for the train job go after --)" ;;
  esac
}

require() {  # require VAR...: each variable is set, else name its option (VAR_NAME -> --var-name)
  local var missing=() note=""
  for var; do
    if [[ $var == TASK ]] && task_given; then continue; fi
    # An unknown --size or --model-gin is check_run_options' error, not a missing checkpoint.
    if [[ $var == CHECKPOINT ]] && { checkpoint_optional || ! gin_exists "$(model_gin)"; }; then
      continue
    fi
    if [[ -z ${!var} ]]; then
      if [[ $var == CHECKPOINT ]]; then
        note="; without --checkpoint only --size mini (shipped in the package)"
        if ((RANDOM_TINY)); then
          note+=" and --size tiny (random weights) run"
        else
          note+=" runs"
        fi
        note+=", not $(model_gin)"
      fi
      var=${var,,}
      missing+=("--${var//_/-}")
    fi
  done
  ((${#missing[@]} == 0)) || usage_error "missing ${missing[*]}$note"
}

gin_exists() {  # a gin name as the jobs resolve it: relative to gin_configs/, or a path
  [[ -f $REPO/gin_configs/$1 || -f $1 ]]
}

model_gin() {  # the model gin file: --model-gin, else the one of --size
  echo "${MODEL_GIN:-models/t5_1_1_${SIZE}_prompt.gin}"
}

checkpoint_optional() {  # the run has its frozen weights without --checkpoint: the flags
  # after -- bind INITIAL_CHECKPOINT_PATH, the model is the shipped mini T5, or (where
  # RANDOM_TINY) the tiny model, which then gets INITIAL_CHECKPOINT_PATH=None
  extra_sets INITIAL_CHECKPOINT_PATH && return 0
  case $(model_gin) in
    "$MINI_GIN") return 0 ;;
    "$TINY_GIN") ((RANDOM_TINY)) && return 0 ;;
  esac
  return 1
}

extra_sets() {  # extra_sets MACRO: the flags after -- bind --gin.MACRO themselves
  local flag
  for flag in "${EXTRA[@]}"; do
    [[ $flag == "--gin.$1="* ]] && return 0
  done
  return 1
}

task_given() {  # --task, or flags after -- that choose the task: a data/*.gin file (whose
  # MIXTURE_OR_TASK_NAME may be a reference that registers it, as in data/jsonl.gin) or
  # --gin.MIXTURE_OR_TASK_NAME itself
  local flag
  [[ -n $TASK ]] && return 0
  extra_sets MIXTURE_OR_TASK_NAME && return 0
  for flag in "${EXTRA[@]}"; do
    [[ $flag == --gin_file=data/* ]] && return 0
  done
  return 1
}

check_run_options() {  # the run options make sense together; catches typos before any launch
  local f sizes=""
  if [[ -z $MODEL_GIN ]]; then
    MODEL_GIN=$(model_gin)
    for f in "$REPO"/gin_configs/models/t5_1_1_*_prompt.gin; do
      f=${f##*/t5_1_1_}
      sizes+=" ${f%_prompt.gin}"
    done
    gin_exists "$MODEL_GIN" || usage_error "unknown --size '$SIZE'; the sizes are$sizes"
  fi
  gin_exists "$MODEL_GIN" || usage_error "--model-gin: no gin file '$MODEL_GIN' in gin_configs/"
  gin_exists "prompts/$PROMPT_INIT.gin" ||
    usage_error "--prompt-init: no gin file 'prompts/$PROMPT_INIT.gin' in gin_configs/"
  if [[ -n $CLASS_LABELS && $CLASS_LABELS != \[*\] ]]; then
    usage_error "--class-labels takes a gin list, e.g. \"['negative', 'positive']\"," \
      "not '$CLASS_LABELS'"
  fi
  if [[ $PROMPT_INIT == class_labels && -z $CLASS_LABELS ]] && ((NEED_CLASS_LABELS)) &&
    ! extra_sets CLASS_LABELS; then
    usage_error "--prompt-init class_labels needs --class-labels"
  fi
}

build_train_command() {  # TRAIN: the train job's argv; gin files first, then bindings
  TRAIN=("$PYTHON" -m prompt_tuning.train --gin_file="$MODEL_GIN"
    --gin_file="prompts/$PROMPT_INIT.gin" --gin_file=runs/prompt_finetune.gin)
  local gin
  for gin in "${DATA_GIN[@]}"; do TRAIN+=(--gin_file="$gin"); done
  if [[ -n $TASK ]]; then TRAIN+=(--gin.MIXTURE_OR_TASK_NAME="$TASK"); fi
  if [[ -n $CLASS_LABELS ]]; then TRAIN+=(--gin.CLASS_LABELS="$CLASS_LABELS"); fi
  # Without --checkpoint: the mini model keeps its gin default (the shipped checkpoint); the
  # tiny one, where RANDOM_TINY, starts from random weights.
  if [[ -n $CHECKPOINT ]]; then
    TRAIN+=(--gin.INITIAL_CHECKPOINT_PATH="$CHECKPOINT")
  elif ((RANDOM_TINY)) && [[ $MODEL_GIN == "$TINY_GIN" ]] &&
    ! extra_sets INITIAL_CHECKPOINT_PATH; then
    TRAIN+=(--gin.INITIAL_CHECKPOINT_PATH=None)
  fi
  TRAIN+=(--gin.MODEL_DIR="$MODEL_DIR" --gin.NUM_PARTITIONS="$NUM_PARTITIONS")
  TRAIN+=("${DEFAULT_FLAGS[@]}" "${EXTRA[@]}")
}

demo_defaults() {  # the local launchers without a task: the README's CPU demo, as in
  # runs/cpu_demo.gin but for BATCH_SIZE 16 and no eval before training: a prompt for the
  # wordnet_topic task, whose data gin file sets CLASS_LABELS; with the default --size mini,
  # on the shipped model.
  task_given && return 0
  DATA_GIN=(data/wordnet_topic.gin)
  NEED_CLASS_LABELS=0
  DEFAULT_FLAGS=(--gin.PROMPT_LENGTH=20 --gin.TRAIN_STEPS=300 --gin.BATCH_SIZE=16
    --gin.CHECKPOINT_PERIOD=100 --gin.EVAL_PERIOD=100 --gin.USE_RANK_CLASSIFICATION=True)
}

quote() {  # the words as one line that any POSIX shell reads back as the same words
  # Like Python's shlex.quote: plain words stay bare, the rest go in single quotes ('
  # itself as '\''). Readable, and unlike printf %q never bash-only syntax for remote shells.
  local word words=()
  for word; do
    if [[ $word =~ ^[[:alnum:]_@%+=:,./-]+$ ]]; then
      words+=("$word")
    else
      words+=("'${word//\'/\'\\\'\'}'")
    fi
  done
  echo "${words[*]}"
}

run() {  # runs a command; under --dry-run prints it instead. Real runs log it to stderr.
  if ((DRY_RUN)); then
    quote "$@"
  else
    echo "+ $(quote "$@")" >&2
    "$@"
  fi
}

pip_install() {  # pip_install 'jax[PLATFORM]': jax for the platform and this checkout,
  # editable, at the versions CI tests together (constraints.txt)
  run "$PYTHON" -m pip install -c "$REPO/constraints.txt" "$1" -e "$REPO"
}
