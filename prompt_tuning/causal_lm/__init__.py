"""Decoder-only language models (Llama, Qwen2, Gemma, GPT-2) in Flax Linen."""
