"""Residual prompts (Razdaibiedina et al. 2023, "Residual Prompt Tuning"): while training,
the prompt is reparameterised by a small MLP with a skip connection, applied to each prompt
row alone (one MLP shared by the rows):

    P' = P + LayerNorm(W_up relu(W_down P + b_down) + b_up)      P [p, d], W_down [d, bottleneck]

P, the MLP and the LayerNorm all train (parameters under `prompt/`); the exported prompt
file is P' [p, d], a plain prompt, so serving reads it as any other (`serving()` is the plain
method) and the MLP is dropped after training.

Defaults from the authors' reference code (github.com/arazd/ResidualPrompts, train.py): a
bottleneck of 800 units (their setting for T5-Base, d_model 768), ReLU, LayerNorm after the
up-projection, one MLP shared by the rows, no dropout in the MLP.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import linen as nn

from prompt_tuning import prompts
from prompt_tuning.prompts import method as method_lib

Array = jax.Array

MLP_AXES = ("prompt_embed", "prompt_mlp")


class ResidualPrompt(nn.Module):
  """`prompt/prompt` [length, embed_dim] and its MLP (`prompt/down`, `prompt/up`,
  `prompt/norm`); calling it gives P' [length, embed_dim] float32."""
  length: int
  embed_dim: int
  bottleneck: int = 800

  @nn.compact
  def __call__(self) -> Array:
    prompt = prompts.prompt_parameter(self, self.length, self.embed_dim)
    dense = lambda features, axes, name: nn.Dense(
        features, dtype=jnp.float32, param_dtype=jnp.float32, name=name,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))
    hidden = nn.relu(dense(self.bottleneck, MLP_AXES, "down")(prompt))
    update = dense(self.embed_dim, MLP_AXES[::-1], "up")(hidden)
    update = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, param_dtype=jnp.float32,
                          scale_init=nn.with_logical_partitioning(nn.initializers.ones,
                                                                  ("prompt_embed",)),
                          bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                                 ("prompt_embed",)),
                          name="norm")(update)
    return prompt + update


@dataclasses.dataclass(frozen=True)
class Residual(method_lib.Method):
  """The residual reparameterisation; exports P' and serves as a plain prompt."""
  name = "residual"
  bottleneck: int = 800

  def __post_init__(self):
    if isinstance(self.bottleneck, bool) or not isinstance(self.bottleneck, int) or \
        self.bottleneck < 1:
      raise ValueError(f"RESIDUAL_BOTTLENECK={self.bottleneck!r} must be a positive integer "
                       "(the MLP's hidden width; the authors used 800 on T5-Base).")

  def module(self, prompt_length: int, embed_dim: int) -> nn.Module:
    return ResidualPrompt(prompt_length, embed_dim, self.bottleneck)

  def serving(self) -> method_lib.Method:
    return method_lib.Method()


def method(bottleneck: int = 800) -> Residual:
  """The residual prompt method (methods/residual.gin binds it to RESIDUAL_BOTTLENECK)."""
  return Residual(bottleneck)
