"""Architectures, configs, and checkpoint + tokenizer loading."""

from thermocline.models.checkpoint import DEFAULT_MODEL, Checkpoint, build_model, load_checkpoint
from thermocline.models.config import ModelConfig
from thermocline.models.tokenizer import TextTokenizer
from thermocline.models.transformer import KVCache, Transformer

__all__ = [
    "DEFAULT_MODEL",
    "Checkpoint",
    "KVCache",
    "ModelConfig",
    "TextTokenizer",
    "Transformer",
    "build_model",
    "load_checkpoint",
]
