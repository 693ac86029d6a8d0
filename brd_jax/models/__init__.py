"""Decoder families (llama, XGLM, GPT-2) on one shared implementation."""
from brd_jax.models.build import abstract, create, flat_params, load, param_shardings, param_specs
from brd_jax.models.cache import KVCache
from brd_jax.models.config import ModelConfig, model_config, named_config, named_configs
from brd_jax.models.layers import Decoder

__all__ = ["abstract", "create", "flat_params", "load", "param_shardings", "param_specs",
           "KVCache", "ModelConfig", "model_config", "named_config", "named_configs", "Decoder"]
