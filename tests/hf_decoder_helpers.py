"""Random tiny Hugging Face decoder-only models (float32, torch on CPU) for the parity tests."""

import numpy as np

VOCAB = 97

# name -> (family, transformers config keys): odd head counts, grouped-query attention,
# tied and untied outputs, biases, Gemma's head_dim != d_model / heads, RoPE scalings.
CASES = {
    "llama": ("llama", dict(num_attention_heads=3, num_key_value_heads=1)),
    "llama_tied_bias_llama3": ("llama", dict(
        num_attention_heads=3, num_key_value_heads=3, tie_word_embeddings=True,
        attention_bias=True, mlp_bias=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16})),
    "qwen2": ("qwen2", dict(num_attention_heads=6, num_key_value_heads=2,
                            rope_parameters={"rope_type": "linear", "rope_theta": 1000.0,
                                             "factor": 2.0})),
    "gemma": ("gemma", dict(num_attention_heads=3, num_key_value_heads=1, head_dim=16)),
    "gpt2": ("gpt2", dict(n_head=3)),
}


def build(case: str, seed: int = 0):
  """A random transformers *ForCausalLM / GPT2LMHeadModel of `case`, float32, eval mode.
  Norm scales and biases are perturbed away from their 1 / 0 init so they matter."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  family, keys = CASES[case]
  torch.manual_seed(seed)
  if family == "gpt2":
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=24, n_layer=2, n_positions=40,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=1, eos_token_id=2, **keys)
    model = transformers.GPT2LMHeadModel(config)
  else:
    classes = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
               "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
               "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM)}[family]
    config = classes[0](vocab_size=VOCAB, hidden_size=24, intermediate_size=40,
                        num_hidden_layers=2, max_position_embeddings=64, bos_token_id=1,
                        eos_token_id=2, pad_token_id=0, **keys)
    model = classes[1](config)
  model = model.float().eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if "norm" in name or ".ln_" in name:
        param.add_(torch.randn_like(param) * 0.3)
      elif name.endswith("bias"):
        param.add_(torch.randn_like(param) * 0.1)
  return model


def logits(model, tokens: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
  """transformers' logits [batch, length, vocab] of tokens with an attention mask."""
  import torch  # pylint: disable=g-import-not-at-top
  mask = np.ones_like(tokens, bool) if mask is None else mask
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens, dtype=torch.long),
                attention_mask=torch.tensor(mask.astype(np.int64)))
  return out.logits.float().numpy()


def batch(seed: int = 0, rows: int = 3, length: int = 11, lengths=(11, 7, 4)):
  """Random tokens [rows, length] and a right-padding mask with the given real lengths."""
  tokens = np.random.RandomState(seed).randint(3, VOCAB, (rows, length))
  mask = np.arange(length)[None, :] < np.asarray(lengths)[:, None]
  return tokens, mask
