"""Training data: paragraphs + ledger -> prepared examples (ArrayRecord shards) -> a host's packed
batches (Grain); the same tasks and mixtures as seqio Tasks / Mixtures."""
