"""Batched prefill + KV-cache decoding and sampling."""
