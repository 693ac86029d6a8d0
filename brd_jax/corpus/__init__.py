"""The corpus stage: raw text -> `paragraphs/` (DESIGN.md), the paragraphs the teacher reads.

readers -> normalise + filters -> sentence split -> decontaminate -> exact / near-duplicate
removal -> deterministic JSONL shards. `stage.run(cfg, workdir, eval_texts)` is the entry point;
`brd corpus` wraps it.
"""
