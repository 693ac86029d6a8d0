"""Zero-shot evaluation: task loaders, log-likelihood ranking under three scoring rules, reports."""
