"""Checkpoint formats: HF safetensors in/out, GGUF import, and `--model` resolution."""
