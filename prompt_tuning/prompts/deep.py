"""Deep prompts: a prompt at the input of every encoder layer, the T5 still frozen.

P-tuning v2 (Liu et al. 2022, "P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning
Universally Across Scales and Tasks") and the per-layer prompts of google-research/
prompt-tuning give each layer its own prompt rather than only the input. Here, as in the
latter, the prompt replaces hidden states (rather than P-tuning v2's attention keys and
values), so it needs nothing from the network but a per-layer hook:

  prompt/prompt  P [layers, p, d_model] float32, layers = the encoder's layer count.
  layer 0        P[0] is combined with the embedded input exactly like a plain prompt (prefix,
                 after BOS or suffix; the same mask, dropout and relative positions).
  layer i > 0    before layer i, the hidden states at the prompt positions are replaced by
                 P[i] (`combine.prompt_rows` says where they are, row by row, for every
                 combination and for mixed-prompt batches); the tokens' states are untouched,
                 and every token attends to P[i] at layer i.

The decoder attends to the encoder's output at the prompt positions too, as with a plain
prompt. Trainable parameters: layers x p x d_model, `layers` times the plain prompt's.

The prompt file is P itself: float32 .npy [num_encoder_layers, PROMPT_LENGTH, d_model]
(`{MODEL_DIR}/prompts/step_{STEP}.npy`), row [i] the prompt at layer i's input.

Initialisation. The model's initializer (prompts/*.gin) gives P[0], as for a plain prompt.
Hidden states above the input are not embeddings (on the mini T5 their RMS grows from 1.1 at
the input to 3.0 at the last layer's input, at the prompt positions), so the deeper layers
start from the frozen encoder's own hidden states at the prompt positions when it reads P[0]
followed by EOS alone (`propagate`): at step 0 the deep prompt then feeds every layer what
the plain prompt P[0] would have put there, but for the input tokens' influence on the
prompt positions. A `from_file` initializer gives all layers from a deep file.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from prompt_tuning import combine as combine_lib
from prompt_tuning import prompts
from prompt_tuning.prompts import method as method_lib
from prompt_tuning.t5 import config as t5_config
from prompt_tuning.t5 import network

Array = jax.Array
Params = Any
DEEP_AXES = ("prompt_layers", *prompts.PROMPT_AXES)


class DeepPrompt(nn.Module):
  """The deep prompt: parameter `prompt` [num_layers, length, embed_dim], float32.

  Its module-level init (uniform in [-0.5, 0.5]) only serves `Module.init`; real runs set the
  value from the initializer and `propagate` (see the module doc).
  """
  num_layers: int
  length: int
  embed_dim: int

  @nn.compact
  def __call__(self) -> Array:
    """-> prompt [num_layers, length, embed_dim] float32."""
    prompts.check_prompt_length(self.length)
    init = lambda rng, shape, dtype: jax.random.uniform(rng, shape, dtype, -0.5, 0.5)
    return self.param("prompt", nn.with_logical_partitioning(init, DEEP_AXES),
                      (self.num_layers, self.length, self.embed_dim), jnp.float32)


def layer_hook(prompt: Array, rows: Array) -> network.LayerHook:
  """The encoder hook that puts P[i] at the prompt positions of layer i's input, i > 0.

  Args:
    prompt: [layers, p, d] (every row's) or [batch, layers, p, d] (a mixed-prompt batch).
    rows: [batch, out_length] int32, `combine.prompt_rows` of the batch: the prompt row at
      each position, -1 at tokens and padding.
  Layer 0's input is left alone: the combination already put P[0] there (with dropout, as a
  plain prompt gets).
  """
  at_prompt = (rows >= 0)[..., None]
  safe_rows = jnp.maximum(rows, 0)

  def hook(i: int, x: Array) -> Array:
    if i == 0:
      return x
    layer = prompt[..., i, :, :].astype(x.dtype)           # [p, d] or [batch, p, d]
    if layer.ndim == 2:
      values = jnp.take(layer, safe_rows, axis=0)          # [batch, out_length, d]
    else:
      values = jnp.take_along_axis(layer, safe_rows[..., None], axis=1)
    return jnp.where(at_prompt, values, x)
  return hook


def propagate(config: t5_config.T5Config, frozen_params, first: Array,
              combine: combine_lib.Combine, eos_id: int = 1) -> Array:
  """The frozen encoder's hidden states at the prompt positions, at the input of each layer,
  when it reads the prompt `first` [p, d] followed by EOS alone -> [layers, p, d] float32.

  Row [0] is `first` itself; rows [i > 0] are what the plain prompt `first` leaves at the
  prompt positions before layer i: the initial value of a deep prompt's deeper layers.
  `frozen_params` is the T5 tree (its token embedder and encoder are read).
  """
  p = first.shape[0]
  tokens = jnp.full((1, 1), eos_id, jnp.int32)
  embedding = frozen_params["token_embedder"]["embedding"]
  embedded = jnp.take(embedding, tokens, axis=0).astype(config.dtype)
  combined, mask = combine(first.astype(config.dtype), embedded, tokens)
  rows = combine_lib.prompt_rows(combine, tokens, p)[0]                 # [out_length]
  positions = jnp.argmax(rows[None, :] == jnp.arange(p)[:, None], axis=1)  # [p]
  inputs = []

  def record(i: int, x: Array) -> Array:
    del i
    inputs.append(jnp.take(x[0], positions, axis=0))
    return x

  network.Encoder(config).apply({"params": frozen_params["encoder"]}, combined, mask, True,
                                record)
  deeper = jnp.stack(inputs[1:]).astype(jnp.float32)
  return jnp.concatenate([first[None].astype(jnp.float32), deeper])


DEEPER_INITS = ("propagate", "copy")


@dataclasses.dataclass(frozen=True)
class Deep(method_lib.Method):
  """Deep prompts: `prompt/prompt` [num_layers, p, d], P[i] at encoder layer i's input.

  num_layers: the encoder's layer count; None until `for_config` fills it in (a model
    builds its method for its config, so gin and Python callers leave it None).
  deeper_init: how layers > 0 start: 'propagate' (the frozen encoder's hidden states under
    P[0]; the default) or 'copy' (P[0] at every layer, as an embedding-space initializer
    would give them; the measured alternative).
  """
  name = "deep"
  num_layers: int | None = None
  deeper_init: str = "propagate"

  def __post_init__(self):
    if self.deeper_init not in DEEPER_INITS:
      raise ValueError(f"deep.method deeper_init={self.deeper_init!r} is not one of "
                       f"{DEEPER_INITS}.")

  def for_config(self, config: t5_config.T5Config) -> "Deep":
    return dataclasses.replace(self, num_layers=config.num_encoder_layers)

  def module(self, prompt_length: int, embed_dim: int) -> nn.Module:
    return DeepPrompt(self._layers(), prompt_length, embed_dim)

  def input_prompt(self, prompt: Array) -> Array:
    return prompt[..., 0, :, :]

  def layer_hook(self, prompt: Array, combine: Any, tokens: Array,
                 prompt_lengths: Array | None = None) -> network.LayerHook:
    rows = combine_lib.prompt_rows(combine, tokens, prompt.shape[-2], prompt_lengths)
    return layer_hook(prompt, rows)

  def init_params(self, module: nn.Module, rng: Array, embedding: Array,
                  initializer: prompts.Initializer) -> Params:
    """P[0] from the initializer, copied to every layer; a file initializer (`from_file`,
    `from_t5x_checkpoint`) gives the whole [layers, p, d] prompt."""
    shape = (self._layers(), module.length, module.embed_dim)
    if getattr(initializer, "reads_trained_prompt", False):
      prompt = jnp.asarray(initializer(rng, embedding, shape), jnp.float32)
    else:
      first = jnp.asarray(initializer(rng, embedding, shape[1:]), jnp.float32)
      if first.shape != shape[1:]:
        raise ValueError(f"The prompt initializer returned shape {first.shape}, expected "
                         f"{shape[1:]} [PROMPT_LENGTH, d_model].")
      prompt = jnp.broadcast_to(first, shape)
    if prompt.shape != shape:
      raise ValueError(f"The prompt initializer returned shape {prompt.shape}, expected "
                       f"{shape} [encoder layers, PROMPT_LENGTH, d_model].")
    return {"prompt": prompt}

  def init_prompt(self, model: Any, rng: Array, frozen_params: Params) -> Params:
    """`init_params`, then (deeper_init 'propagate', unless a file gave every layer) the
    deeper layers from the frozen encoder's hidden states under P[0] (`propagate`)."""
    params = super().init_prompt(model, rng, frozen_params)
    if (self.deeper_init == "copy"
        or getattr(model.prompt_initializer, "reads_trained_prompt", False)):
      return params
    return {"prompt": propagate(model.config, frozen_params, params["prompt"][0],
                                model.combine, model.eos_id)}

  def params_from_file(self, value: np.ndarray, prompt_length: int | None, embed_dim: int,
                       source: str) -> Params:
    """{'prompt': the file's [num_layers, p, d] array}, checked against this model."""
    return {"prompt": check_file(value, self._layers(), prompt_length, embed_dim,
                                 f"Prompt {source}")}

  def _layers(self) -> int:
    if self.num_layers is None:
      raise ValueError("This deep-prompt method has no layer count yet; build it into a "
                       "model (PromptedT5Model(config, method=deep.method())), which fills "
                       "in its encoder's.")
    return self.num_layers


def check_file(value: Any, num_layers: int, prompt_length: int | None, embed_dim: int,
               subject: str) -> np.ndarray:
  """`value` as float32 [num_layers, prompt_length, embed_dim] if it is a finite float deep
  prompt of that shape (any length when prompt_length is None), else one ValueError that
  starts with `subject` (e.g. "Prompt file 'x.npy'") and says its shape, what the model
  needs and the fix."""
  value = np.asarray(value)
  shape = tuple(value.shape)
  length = "PROMPT_LENGTH" if prompt_length is None else prompt_length
  need = (f"[{num_layers}, {length}, {embed_dim}] ([encoder layers, PROMPT_LENGTH, d_model]: "
          "a deep prompt, methods/deep.gin)")
  if value.dtype.names is not None:
    raise ValueError(f"{subject} is a DePT prompt file (fields {', '.join(value.dtype.names)}) "
                     f"but this model needs {need}; a DePT file is read by a model with "
                     "--gin_file=methods/dept.gin.")
  if value.ndim != 3:
    kind = ("a plain prompt [PROMPT_LENGTH, d_model]; read it without methods/deep.gin"
            if value.ndim == 2 else "not a deep prompt")
    raise ValueError(f"{subject} has shape {shape} but this model needs {need}; it is {kind}.")
  fixes = []
  if shape[0] != num_layers:
    fixes.append(f"it holds prompts for {shape[0]} encoder layers: use the model it was "
                 "trained on")
  if prompt_length is not None and shape[1] != prompt_length:
    fixes.append(f"set PROMPT_LENGTH={shape[1]}, the file's")
  if shape[2] != embed_dim:
    fixes.append(f"its width is {shape[2]}, not this model's d_model: use the model it was "
                 "trained on")
  if fixes or shape[1] < 1:
    raise ValueError(f"{subject} has shape {shape} but this model needs {need}; "
                     f"{'; '.join(fixes) or 'it has no rows'}.")
  if value.dtype.kind != "f" and value.dtype.name != "bfloat16":
    raise ValueError(f"{subject} has dtype {value.dtype}; it must be a float array (float32 "
                     "as exported by training).")
  value = value.astype(np.float32)
  if not np.all(np.isfinite(value)):
    raise ValueError(f"{subject} has {int(np.size(value) - np.isfinite(value).sum())} "
                     "non-finite values (NaN or inf); export it again from a healthy "
                     "checkpoint.")
  return value


def method(deeper_init: str = "propagate") -> Deep:
  """The deep-prompt method (methods/deep.gin); the model fills in its encoder's layer count."""
  return Deep(deeper_init=deeper_init)
