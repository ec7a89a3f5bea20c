"""The compiled train step of prompt tuning holds no gradient and no optimizer state for the
frozen weights: XLA's memory analysis of the step (compiled only, on abstract inputs, so no
weights exist) for t5_1_1_small must come out at least that many bytes below model tuning's.

Accounting: live bytes = arguments + temporaries + outputs - alias. The state (argument 0) is
donated, as in `train.train`, so the outputs that alias it (new trainable leaves and optimizer
state) are written into the argument buffers and must not be counted twice; only unaliased
outputs (metrics) add to the total.

Like for like: the prompted encoder runs over inputs + prompt positions, which costs more
activations than the frozen-weight saving on a model this small (see docs/performance.md), so
model tuning is compiled with inputs lengthened by the prompt length: same encoder positions,
same activation shapes, and the gap isolates what freezing saves.
"""

import functools
import math

import jax
import jax.numpy as jnp
import pytest

from prompt_tuning import model as model_lib
from prompt_tuning import optim, train
from prompt_tuning.t5 import config as t5_config

CONFIG = t5_config.get_config("t5_1_1_small", dtype="float32")
BATCH, INPUTS, TARGETS, PROMPT = 32, 256, 16, 100
OPTIMIZERS = {"adafactor": optim.adafactor, "adam": optim.adam}
MIB = 2**20


def nbytes(tree) -> int:
  return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def abstract_batch(inputs: int, batch: int = BATCH) -> dict:
  shapes = {"encoder_input_tokens": (batch, inputs)}
  return {k: jax.ShapeDtypeStruct(shapes.get(k, (batch, TARGETS)), jnp.int32)
          for k in ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                    "decoder_loss_weights")}


def compiled_memory(model, optimizer, regex: str, inputs: int, batch: int = BATCH):
  """(memory analysis, abstract state) of the jitted, state-donating train step."""
  trainable, frozen = optim.partition(model.abstract_params(), regex)
  state = jax.eval_shape(functools.partial(train._initial_state, optimizer), trainable)
  seed = jax.eval_shape(jax.random.PRNGKey, 0)
  step = jax.jit(functools.partial(train.train_step, model, optimizer), donate_argnums=0)
  compiled = step.lower(state, frozen, abstract_batch(inputs, batch), seed).compile()
  return compiled.memory_analysis(), state


def live_bytes(stats) -> int:
  """Arguments + temporaries + the outputs not written in place into donated arguments."""
  return (stats.argument_size_in_bytes + stats.temp_size_in_bytes
          + stats.output_size_in_bytes - stats.alias_size_in_bytes)


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_prompt_tuning_saves_frozen_gradients_and_optimizer_state(opt_name):
  optimizer = OPTIMIZERS[opt_name]()
  prompt_stats, prompt_state = compiled_memory(
      model_lib.PromptedT5Model(CONFIG, prompt_length=PROMPT), optimizer, optim.PROMPT_REGEX,
      INPUTS)
  model_stats, model_state = compiled_memory(
      model_lib.T5Model(CONFIG), optimizer, optim.ALL_REGEX, INPUTS + PROMPT)

  # The expected saving, from the trees alone: one gradient per frozen weight plus the
  # optimizer's slots for it (eval_shape of optimizer.init; Adafactor's are factored).
  frozen_tree = model_lib.T5Model(CONFIG).abstract_params()
  frozen_grads = nbytes(frozen_tree)
  frozen_opt_state = nbytes(jax.eval_shape(optimizer.init, frozen_tree))
  expected_gap = frozen_grads + frozen_opt_state
  assert frozen_grads > 290 * MIB  # t5_1_1_small: 77M float32 weights
  if opt_name == "adam":
    assert frozen_opt_state == pytest.approx(2 * frozen_grads, rel=1e-3)

  gap = live_bytes(model_stats) - live_bytes(prompt_stats)
  assert gap >= expected_gap, (
      f"{opt_name}: prompt tuning saves {gap / MIB:.1f} MiB, expected at least "
      f"{expected_gap / MIB:.1f} MiB (gradients {frozen_grads / MIB:.1f} + optimizer state "
      f"{frozen_opt_state / MIB:.1f})")

  # Where the saving sits. Arguments: prompt tuning's hold the frozen weights but no
  # optimizer slot for them, only the prompt's (a few hundred KB).
  prompt_inputs = (frozen_grads + nbytes(prompt_state) + nbytes(abstract_batch(INPUTS)))
  assert prompt_stats.argument_size_in_bytes <= prompt_inputs + 4096
  assert (model_stats.argument_size_in_bytes - prompt_stats.argument_size_in_bytes
          >= frozen_opt_state - nbytes(prompt_state) - 4096)
  # Temporaries: model tuning's hold a gradient per weight; prompt tuning's hold none.
  assert model_stats.temp_size_in_bytes - prompt_stats.temp_size_in_bytes >= frozen_grads
  # Donation: model tuning writes its new weights and slots in place (aliased), so its
  # outputs add (almost) nothing to the live total.
  assert model_stats.alias_size_in_bytes >= nbytes(model_state) - 4096


def backward_residual_bytes(config, batch: int, positions: int, targets: int) -> int:
  """float32 bytes of the activations a prompt-tuning backward pass must read, by hand: per
  encoder layer the attention probabilities, the head-major queries, keys and values, the
  two layer norms' inputs and the two MLP inputs (wi_0, wi_1); per decoder layer the same
  for its self-attention and MLP, plus the cross-attention's queries, probabilities and its
  keys and values over the encoder; and the logits, twice (values and their gradient).
  Nothing else: gelu and the product after it are recomputed, and softmax's backward reads
  only its output."""
  joined = config.num_heads * config.head_dim
  encoder_position = (config.num_heads * positions + 3 * joined + 2 * config.emb_dim
                      + 2 * config.mlp_dim)
  decoder_position = (config.num_heads * (targets + positions) + 4 * joined
                      + 3 * config.emb_dim + 2 * config.mlp_dim)
  encoder = config.num_encoder_layers * batch * positions * encoder_position
  decoder = config.num_decoder_layers * batch * (targets * decoder_position
                                                 + positions * 2 * joined)
  logits = 2 * batch * targets * config.vocab_size
  return 4 * (encoder + decoder + logits)


def test_prompt_step_keeps_only_the_residuals_its_backward_pass_reads():
  """The step's temporaries stay within 10% of the hand count of what its backward pass must
  keep. Before the MLP's activation was recomputed and softmax got its own backward pass
  (and with XLA:CPU's default scheduler), they were 648 MiB at this shape: 1.6x the count."""
  batch, inputs = 8, 128
  stats, _ = compiled_memory(model_lib.PromptedT5Model(CONFIG, prompt_length=PROMPT),
                             optim.adafactor(), optim.PROMPT_REGEX, inputs, batch)
  needed = backward_residual_bytes(CONFIG, batch, inputs + PROMPT, TARGETS)
  assert needed / MIB == pytest.approx(411, abs=1)  # t5_1_1_small at this shape
  assert stats.temp_size_in_bytes <= 1.10 * needed, (
      f"temporaries {stats.temp_size_in_bytes / MIB:.1f} MiB, the backward pass needs "
      f"{needed / MIB:.1f} MiB")
