"""Gin files shipped with prompt_tuning; names are relative to this folder."""
