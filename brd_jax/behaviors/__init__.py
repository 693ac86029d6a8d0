"""The teacher's reading: NER / QRA (and SKD) templates, parsing + validation + `render`, the
ledger of teacher outputs (schema, keys, atomic shards, the one reader) and the generation driver.
`data/` reads the ledger only through `ledger.read` / `ledger.select` and `parse.render`.
"""
