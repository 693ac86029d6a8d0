"""The teacher's reading: behaviours declared in files (`spec.py`; NER / QRA / SKD in `builtin/`),
their templates, parsing + validation + `render`, the ledger of teacher outputs (schema, keys,
atomic shards, the one reader) and the generation driver. `data/` reads the ledger only through
`ledger.read` / `ledger.select`, `parse.render` and `spec` (for the behaviours a manifest declares).
"""
