"""Training data: paragraphs + ledger -> formatted texts -> seqio Tasks / Mixtures -> packed batches."""
