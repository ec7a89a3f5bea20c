"""The model object the jobs call: a frozen T5, optionally with a soft prompt on its inputs.

    T5Model            every weight a T5 weight (model tuning, the paper's baseline)
    PromptedT5Model    T5Model plus `prompt/prompt` [prompt_length, d_model] (prompt tuning),
                       or another prompt kind's `prompt/` parameters (`method`, see
                       prompts/method.py: residual, DePT, deep prompts)

Both are plain Python objects around a Flax module; every method that touches weights is a
pure function of `params` (a nested dict with T5X names), so jobs can jit and shard them:

    abstract_params()                      ShapeDtypeStruct tree, prompt included
    param_axes()                           logical axis-name tuples, same tree
    init_params(rng, frozen) -> params     adds the initialised prompt to a loaded frozen tree
    random_params(rng) -> params           a random model (tests, demos)
    loss(params, batch, dropout_rng=None)  (mean cross-entropy over real targets, metrics);
                                           plus MPT's distillation given teacher prompts
    score(params, batch) -> [batch]        sum of ln p(target) over weighted target tokens
    score_candidates(params, batch, cands) -> [batch, candidates]   each input encoded once
    export_prompt(trainable) -> array      what the prompt file holds (None without a prompt)
    serving_model()                        the model that reads those files (itself, or the
                                           plain prompted model for a residual prompt)

PromptedT5Model.with_prompt_table(params, prompts) serves several prompts from one frozen
model: a batch's `prompt_ids` [batch] then picks each row's prompt (mixed-task batches,
prompt ensembles), and every method above works row by row as with that prompt alone.
    predict(params, batch, method=...)     tokens [batch, max_decode_length]

A batch holds int32 [batch, length] arrays `encoder_input_tokens`, `decoder_input_tokens`,
`decoder_target_tokens` and `decoder_loss_weights` (as seqio's EncDecFeatureConverter makes
them, unpacked). Gin files build the model objects: see gin_configs/models/*.gin.
"""

import copy
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from prompt_tuning import combine as combine_lib
from prompt_tuning import decoding, frozen, prompts
from prompt_tuning.prompts import deep as deep_lib
from prompt_tuning.prompts import method as method_lib
from prompt_tuning.prompts import mpt
from prompt_tuning.t5 import config as t5_config
from prompt_tuning.t5 import network

Array = jax.Array
Params = Any


class PromptedTransformer(network.Transformer):
  """T5 whose encoder sees `combine(prompt, embedded inputs)`; the decoder is unchanged.

  Parameters stay top-level (`token_embedder/...`, `encoder/...`, `decoder/...`) plus the
  prompt method's module at `prompt/` (`prompt/prompt` for the plain prompt), so a frozen T5X
  checkpoint fills everything but the prompt.
  """
  prompt_length: int = 100
  combine: combine_lib.Combine = combine_lib.prefix
  prompt_method: method_lib.Method = method_lib.Method()

  def setup(self):
    super().setup()
    self.prompt = self.prompt_method.module(self.prompt_length, self.config.emb_dim)

  def encode(self, encoder_input_tokens: Array, enable_dropout: bool = False,
             prompts: Array | None = None, prompt_lengths: Array | None = None):
    """[batch, length] -> (encoded [batch, out_length, embed], mask [batch, out_length] bool).

    Every row gets the `prompt/` module's prompt, unless `prompts` [batch, p, embed] (deep
    prompts: [batch, layers, p, embed]) gives each row its own, of prompt_lengths [batch] rows
    (mixed-prompt batches; see `with_prompt_table`).
    out_length = length + prompt_length (the longest) unless the combination caps it.
    """
    method = self.prompt_method
    embedded = self.token_embedder(encoder_input_tokens)
    if prompts is None:
      embedded = method.embed_inputs(self.prompt, embedded, encoder_input_tokens)
      prompt = self.prompt().astype(embedded.dtype)  # float32 parameter, activation-dtype use
      combined, mask = self.combine(method.input_prompt(prompt), embedded,
                                    encoder_input_tokens)
    else:
      prompt = prompts.astype(embedded.dtype)
      combined, mask = self.combine(method.input_prompt(prompt), embedded,
                                    encoder_input_tokens, prompt_lengths=prompt_lengths)
    hook = method.layer_hook(prompt, self.combine, encoder_input_tokens, prompt_lengths)
    return self.encoder(combined, mask, not enable_dropout, hook), mask


class T5Model(frozen.FrozenModel):
  """A T5 whose weights all come from the frozen checkpoint (none added).

  Args:
    config: the architecture (`t5.config.get_config(name)` or `huggingface.config_from_hf`).
    activation_dtype: 'float32' (CPU, the default) or 'bfloat16' (pass it on TPU/GPU);
      parameters stay float32. None keeps `config.dtype`.
    dropout_rate: overrides `config.dropout_rate` when given (used only with a dropout_rng).
    remat: overrides `config.remat` when given: recompute each layer's activations in the
      backward pass (far less memory for training, about a third more compute).
    eos_id: the vocabulary's EOS, where decoding stops.
    frozen_dtype: FROZEN_DTYPE, how the checkpoint's weights are stored in memory:
      'float32' (the default) or 'bfloat16' (half the memory; every layer casts its weights
      to the activation dtype anyway). Added leaves (the prompt) and optimizer state stay
      float32; model tuning needs 'float32'.
  """

  network = network  # FrozenModel.random_params initialises the frozen weights with it

  def __init__(self, config: t5_config.T5Config, activation_dtype: Any = None,
               dropout_rate: float | None = None, eos_id: int = 1,
               remat: bool | None = None, frozen_dtype: Any = "float32"):
    if not isinstance(config, t5_config.T5Config):
      raise ValueError(f"MODEL_CONFIG={config!r} is not a T5Config; use "
                       "@t5_config.get_config() or @huggingface.config_from_hf().")
    if activation_dtype is not None:
      config = config.replace(dtype=t5_config.activation_dtype(activation_dtype))
    if dropout_rate is not None:
      config = config.replace(dropout_rate=float(dropout_rate))
    if remat is not None:
      config = config.replace(remat=bool(remat))
    self.config = config
    self.eos_id = eos_id
    self.frozen_dtype = t5_config.frozen_dtype(frozen_dtype)

  @functools.cached_property
  def module(self) -> nn.Module:
    """The Flax module (a `network.Transformer`)."""
    return network.Transformer(self.config)

  # ---- parameters ---------------------------------------------------------------------------

  def _abstract_variables(self):
    tokens = jnp.ones((1, 1), jnp.int32)
    return jax.eval_shape(self.module.init, jax.random.PRNGKey(0), tokens, tokens)["params"]

  def abstract_params(self) -> Params:
    """The parameter tree as jax.ShapeDtypeStruct leaves (float32)."""
    return network.strip_axes(self._abstract_variables())

  def param_axes(self) -> Params:
    """The parameter tree with a logical axis-name tuple per leaf, e.g. ('vocab', 'embed')."""
    return network.logical_axes(self._abstract_variables())

  # ---- computations -------------------------------------------------------------------------

  def logits(self, params: Params, batch: dict, dropout_rng: Array | None = None) -> Array:
    """Teacher-forced logits [batch, target_length, vocab] float32."""
    rngs = {} if dropout_rng is None else {"dropout": dropout_rng}
    return self.module.apply({"params": params}, batch["encoder_input_tokens"],
                             batch["decoder_input_tokens"], batch["decoder_target_tokens"],
                             enable_dropout=dropout_rng is not None, rngs=rngs,
                             **self._encode_kwargs(params, batch))

  def _encode_kwargs(self, params: Params, batch: dict) -> dict:
    """Extra encoder inputs a batch selects (none for a plain T5)."""
    del params
    if "prompt_ids" in batch:
      raise ValueError("The batch has prompt_ids but the model has no prompt; use a "
                       "PromptedT5Model (models/*_prompt.gin).")
    return {}

  def _encode(self, params: Params, batch: dict) -> tuple[Array, Array]:
    return self.module.apply({"params": params}, batch["encoder_input_tokens"], method="encode",
                             **self._encode_kwargs(params, batch))

  def loss(self, params: Params, batch: dict,
           dropout_rng: Array | None = None) -> tuple[Array, dict]:
    """(mean cross-entropy over tokens with loss weight > 0, metrics).

    Dropout is on only when `dropout_rng` is given. metrics: 'loss', 'accuracy' (argmax
    hits among weighted tokens), 'num_tokens' (sum of loss weights).
    """
    return _token_loss(self.logits(params, batch, dropout_rng), batch)

  def score(self, params: Params, batch: dict) -> Array:
    """[batch] float32: sum over weighted target tokens (EOS included) of ln p(token)."""
    logits = self.logits(params, batch)
    log_p = _target_log_probs(logits, batch["decoder_target_tokens"])
    return jnp.sum(log_p * _loss_weights(batch), axis=-1)

  def score_candidates(self, params: Params, batch: dict, candidates: dict) -> Array:
    """[batch, num_candidates] float32: `score` of every input with every candidate target.

    Rank classification's cost: each input is encoded once and its encoding shared by the
    candidates, so only the (short) decoder runs batch x num_candidates times.

    Args:
      batch: `encoder_input_tokens` [batch, length].
      candidates: `decoder_input_tokens`, `decoder_target_tokens` and optionally
        `decoder_loss_weights`, each [num_candidates, target_length], the same for every input.
    """
    encoded, mask = self._encode(params, batch)
    batch_size, num = encoded.shape[0], candidates["decoder_target_tokens"].shape[0]
    tile = lambda x: jnp.tile(x, (batch_size, 1))  # [batch * num, target_length], example-major
    targets = tile(candidates["decoder_target_tokens"])
    logits = self.module.apply({"params": params}, jnp.repeat(encoded, num, axis=0),
                               jnp.repeat(mask, num, axis=0),
                               tile(candidates["decoder_input_tokens"]), targets,
                               method="decode")
    weights = tile(_loss_weights(candidates))
    log_p = _target_log_probs(logits, targets)
    return jnp.sum(log_p * weights, axis=-1).reshape(batch_size, num)

  def predict(self, params: Params, batch: dict, *, method: str = "greedy",
              max_decode_length: int, rng: Array | None = None, beam_size: int = 4,
              **decode_kwargs) -> Array:
    """Decoded tokens [batch, max_decode_length] int32, 0 after EOS (start token excluded).

    method: 'greedy', 'beam' (best of `beam_size`; `alpha` etc. via decode_kwargs) or
    'sample' (needs `rng`; `temperature`, `top_k`, `top_p` via decode_kwargs).
    """
    inputs = batch["encoder_input_tokens"]
    batch_size = inputs.shape[0]
    encoded, mask = self._encode(params, batch)
    step, state = decoding.t5_decode_fns(self.module, params, encoded, mask,
                                         batch_size=batch_size, max_length=max_decode_length)
    common = dict(batch_size=batch_size, max_length=max_decode_length, eos_id=self.eos_id,
                  **decode_kwargs)
    if method == "greedy":
      return decoding.greedy(step, state, **common)
    if method == "beam":
      tokens, _ = decoding.beam_search(step, state, beam_size=beam_size, **common)
      return tokens[:, 0]
    if method == "sample":
      if rng is None:
        raise ValueError("predict(method='sample') needs an rng.")
      return decoding.temperature_sample(step, state, rng, **common)
    raise ValueError(f"Unknown decoding method {method!r}; use 'greedy', 'beam' or 'sample'.")


class PromptedT5Model(T5Model):
  """A frozen T5 with a trainable soft prompt `prompt/prompt` [prompt_length, d_model].

  Args (beyond T5Model's):
    prompt_length: PROMPT_LENGTH, rows of the prompt (the paper: 100).
    prompt_initializer: `(rng, embedding, shape) -> prompt`, see `prompts`; default
      `prompts.sampled_vocab()`.
    combine: where the prompt goes: a `combine.Combine` function or a position name
      ('prefix', the default; 'prefix_after_bos'; 'suffix'), see `combine.combiner`.
    method: the prompt kind (prompts/method.py): default the plain prompt; e.g.
      `prompts.residual.method()`, `prompts.dept.method(max_input_length)`. Set by
      gin_configs/methods/*.gin. A multi-task method (prompts/mpt.py) reads each row's
      task from batch['prompt_ids'].
  """

  def __init__(self, config: t5_config.T5Config, prompt_length: int = 100,
               prompt_initializer: prompts.Initializer | None = None,
               combine: combine_lib.Combine | str = "prefix",
               activation_dtype: Any = None, dropout_rate: float | None = None,
               eos_id: int = 1, remat: bool | None = None, frozen_dtype: Any = "float32",
               method: method_lib.Method | None = None):
    super().__init__(config, activation_dtype, dropout_rate, eos_id, remat, frozen_dtype)
    self.prompt_length = prompts.check_prompt_length(prompt_length)
    method = method_lib.Method() if method is None else method
    if not isinstance(method, method_lib.Method):
      raise ValueError(f"method={method!r} is not a prompt method; use e.g. "
                       "prompts.residual.method() or a gin_configs/methods/*.gin file.")
    self.method = method.for_config(self.config)
    self.prompt_module()  # a kind's sizes (e.g. DePT's split) are checked now, before compute
    self.prompt_initializer = prompt_initializer or prompts.sampled_vocab()
    prompts.check_fits(self.prompt_initializer, self.method.prompt_rows(self.prompt_length))
    self.combine = combine_lib.combiner(combine) if isinstance(combine, str) else combine

  @functools.cached_property
  def module(self) -> nn.Module:
    return PromptedTransformer(self.config, self.prompt_length, self.combine, self.method)

  def prompt_module(self) -> nn.Module:
    """The method's module on its own (parameters: the `prompt/` subtree)."""
    return self.method.module(self.prompt_length, self.config.emb_dim)

  def export_prompt(self, trainable: Params) -> np.ndarray | None:
    """The prompt file's content (`{MODEL_DIR}/prompts/step_{STEP}.npy`) for trained leaves
    that hold `prompt/`; None when they do not. Computed on the host."""
    prompt = trainable.get("prompt")
    if prompt is None:
      return None
    host = jax.tree.map(np.asarray, prompt)
    return self.method.export(self.prompt_module(), host)

  def task_files(self, exported: np.ndarray) -> dict[str, np.ndarray]:
    """{name: plain prompt [p, d_model]} written beside the exported file, in
    `{MODEL_DIR}/prompts/step_{STEP}/{name}.npy`: each task's prompt and the shared one for
    a multi-task method (prompts/mpt.py), none for the others."""
    if not self.method.routes_by_task:
      return {}
    return self.method.task_files(exported)

  def serving_model(self) -> "PromptedT5Model":
    """The model that reads this one's exported files: itself, or (a residual prompt) the
    plain prompted model of the same settings."""
    serving = self.method.serving()
    if serving == self.method:
      return self
    served = copy.copy(self)
    served.__dict__.pop("module", None)  # the cached Flax module is the training method's
    served.method = serving
    return served

  def with_prompt_file(self, params: Params, value: np.ndarray, source: str) -> Params:
    """`params` with `prompt/` read from a prompt file's array (checked for this model: its
    kind, PROMPT_LENGTH and d_model; errors name `source`), placed like the prompt it
    replaces when `params` holds one."""
    prompt = self.method.params_from_file(value, self.prompt_length, self.config.emb_dim,
                                          source)
    current = params.get("prompt")
    if current is not None and jax.tree.structure(current) == jax.tree.structure(prompt):
      prompt = jax.tree.map(lambda v, c: jax.device_put(v, c.sharding)
                            if hasattr(c, "sharding") else v, prompt, current)
    frozen = {k: v for k, v in params.items() if k != "prompt"}
    return {**frozen, "prompt": prompt}

  def with_prompt_table(self, params: Params, prompts: Sequence[Any],
                        names: Sequence[str] | None = None) -> Params:
    """`params` serving several prompts at once: each batch row picks one by `prompt_ids`.

    Args:
      params: the frozen tree (any `prompt` in it is replaced).
      prompts: n prompts [p_i, d_model], any lengths p_i >= 1 (deep prompts: [layers, p_i,
        d_model]).
      names: what to call each prompt in errors ("Prompt {name} has ...", e.g. "file 'a.npy'");
        default its index.
    Returns:
      params with `prompt` = {'table': [n, max p_i, d_model] float32 (zero-padded; deep
      prompts: [n, layers, max p_i, d_model]), 'lengths': [n] int32}. Batches for it carry
      `prompt_ids` [batch] int32 in [0, n); every row computes what it would with its prompt
      alone (the padding rows are masked out).
    """
    if not prompts:
      raise ValueError("A prompt table needs at least one prompt.")
    if type(self.method) is not method_lib.Method and not isinstance(self.method, deep_lib.Deep):
      raise ValueError(f"PROMPTS and PROMPT_ENSEMBLE serve plain prompt files (and deep ones, "
                       f"with methods/deep.gin), and this model's prompts are "
                       f"{self.method.name!r} prompts; evaluate each file alone with "
                       "PROMPT_FILE.")
    names = list(names) if names is not None else [str(i) for i in range(len(prompts))]
    arrays = []
    for name, prompt in zip(names, prompts):  # each checked as a prompt file of this kind
      array = self.method.params_from_file(prompt, None, self.config.emb_dim, name)["prompt"]
      if array.shape[-2] < 1:
        raise ValueError(f"Prompt {name} has shape {array.shape}: no rows.")
      arrays.append(array)
    longest = max(a.shape[-2] for a in arrays)
    pad = lambda a: np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, longest - a.shape[-2]), (0, 0)])
    table = np.stack([pad(a) for a in arrays])
    lengths = np.asarray([a.shape[-2] for a in arrays], np.int32)
    frozen = {k: v for k, v in params.items() if k != "prompt"}
    return {**frozen, "prompt": {"table": table, "lengths": lengths}}

  def _encode_kwargs(self, params: Params, batch: dict) -> dict:
    """Per-row prompts when the batch names them (`prompt_ids`) from a prompt table."""
    prompt = params.get("prompt", {})
    ids = batch.get("prompt_ids")
    if self.method.routes_by_task:  # multi-task prompts: each row's task picks its prompt
      return {"prompts": self._task_prompts(prompt, ids)}
    if ids is None:
      if "table" in prompt:
        raise ValueError("These params hold a prompt table; give each example its prompt "
                         "with batch['prompt_ids'].")
      return {}
    if "table" not in prompt:
      raise ValueError("The batch has prompt_ids but the params hold one prompt; build a "
                       "table with PromptedT5Model.with_prompt_table.")
    return {"prompts": jnp.take(prompt["table"], ids, axis=0),
            "prompt_lengths": jnp.take(prompt["lengths"], ids)}

  def loss(self, params: Params, batch: dict,
           dropout_rng: Array | None = None) -> tuple[Array, dict]:
    """T5Model.loss; for an MPT method with teacher prompts (prompts/mpt.py), the paper's
    distillation: task loss + weight * (KL + MSE), with metrics 'task_loss', 'distill_kl'
    and 'distill_mse' beside 'loss' (the total)."""
    if not getattr(self.method, "distills", False):
      return super().loss(params, batch, dropout_rng)
    student_logits, student_hidden = self._logits_and_hidden(
        params, batch, dropout_rng, self._encode_kwargs(params, batch))
    table, lengths = self.method.teacher_table()
    ids = batch["prompt_ids"]
    teacher = {"prompts": jnp.take(jnp.asarray(table), ids, axis=0),
               "prompt_lengths": jnp.take(jnp.asarray(lengths), ids)}
    teacher_logits, teacher_hidden = jax.lax.stop_gradient(
        self._logits_and_hidden(params, batch, None, teacher))
    task_loss, metrics = _token_loss(student_logits, batch)
    kl, mse = mpt.distillation_terms(student_logits, teacher_logits, student_hidden,
                                     teacher_hidden, _loss_weights(batch))
    loss = task_loss + self.method.distillation_weight * (kl + mse)
    return loss, {**metrics, "loss": loss, "task_loss": task_loss, "distill_kl": kl,
                  "distill_mse": mse}

  def _logits_and_hidden(self, params: Params, batch: dict, dropout_rng: Array | None,
                         encode_kwargs: dict) -> tuple[Array, Array]:
    """Teacher-forced (logits [batch, t_len, vocab] float32, the decoder's final hidden
    states [batch, t_len, d_model]) with these encoder inputs (`encode`'s prompts)."""
    rngs = {} if dropout_rng is None else {"dropout": dropout_rng}
    logits, state = self.module.apply(
        {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
        batch["decoder_target_tokens"], enable_dropout=dropout_rng is not None, rngs=rngs,
        capture_intermediates=_is_decoder_norm, mutable=["intermediates"], **encode_kwargs)
    [hidden] = state["intermediates"]["decoder"]["decoder_norm"]["__call__"]
    return logits, hidden

  def _task_prompts(self, prompt: Params, ids: Array | None) -> Array:
    """[batch, p, d_model]: each row's task prompt (prompts/mpt.py) for prompt_ids [batch]."""
    if ids is None:
      raise ValueError(f"This {self.method.name!r} model gives each example its task's prompt: "
                       "give batch['prompt_ids'], each row's index in its task list "
                       f"{list(getattr(self.method, 'task_names', []))}.")
    if not isinstance(ids, jax.core.Tracer):  # host ids are checked; traced ones give NaN
      self.method.check_task_ids(np.asarray(ids))
    return self.method.task_prompts(self.prompt_module(), prompt, ids)

  def init_params(self, rng: Array, frozen_params: Params) -> Params:
    """frozen T5 tree + {'prompt': the method's parameters}, `prompt/prompt` from
    `initializer(rng, embedding, shape)` (the plain prompt: {'prompt': {'prompt': ...}}).

    Only the frozen embedding table is read (and only by initializers that need it), so
    `frozen_params` may be abstract for e.g. `prompts.from_file`. Any 'prompt' in it is
    replaced.
    """
    prompt = self.method.init_prompt(self, rng, frozen_params)
    frozen = {k: v for k, v in frozen_params.items() if k != "prompt"}
    return {**frozen, "prompt": prompt}


def _token_loss(logits: Array, batch: dict) -> tuple[Array, dict]:
  """`T5Model.loss` from the logits [batch, length, vocab]."""
  targets = batch["decoder_target_tokens"]
  weights = _loss_weights(batch)
  log_p = _target_log_probs(logits, targets)
  num = jnp.sum(weights)
  loss = -jnp.sum(log_p * weights) / jnp.maximum(num, 1.0)
  hits = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  metrics = {"loss": loss, "accuracy": jnp.sum(hits * weights) / jnp.maximum(num, 1.0),
             "num_tokens": num}
  return loss, metrics


def _is_decoder_norm(module: nn.Module, method_name: str) -> bool:
  """The decoder's last norm: its output is the final hidden state before the logits."""
  return method_name == "__call__" and module.name == "decoder_norm"


def _loss_weights(batch: dict) -> Array:
  weights = batch.get("decoder_loss_weights")
  if weights is None:
    weights = batch["decoder_target_tokens"] > 0
  return weights.astype(jnp.float32)


def _target_log_probs(logits: Array, targets: Array) -> Array:
  """logits [batch, length, vocab], targets [batch, length] -> ln p(target) [batch, length]."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
