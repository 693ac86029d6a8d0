"""Curated one-line breaks of the package, each with the tests that must catch it.

Every entry below is a defect a test once let through. `python tests/mutations.py` copies the
tracked tree to a temporary directory, applies one break at a time (the `old` text must occur
exactly once in `file`), runs the named tests there with this interpreter, and prints for each
break whether they failed and the first failure line. Exit status 1 when any break survives.

  python tests/mutations.py                 # every break
  python tests/mutations.py kd_off topk_values   # some, by name
  python tests/mutations.py --list

Not collected by pytest (no test_ prefix): a full pass runs the named tests once per break.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Break:
  name: str
  file: str           # relative to the repository root
  old: str            # must occur exactly once
  new: str
  tests: tuple        # pytest node ids that must fail
  why: str = ""


_DECONTAM = ("tests/test_corpus.py::"
             "test_a_13_word_overlap_with_an_rte_input_is_dropped_and_a_12_word_one_kept")
_AGREE = "tests/test_bench_generate.py::test_agreement_counts_rows_with_identical_tokens"
_AGREE_RUN = ("tests/test_bench_generate.py::"
              "test_bench_reports_agreement_below_one_when_one_peer_row_differs")
_KD_UPDATE = "tests/test_kd.py::test_kd_weight_enters_the_update_as_plain_jax_grad_predicts"
_LEDGER_TOPK = "tests/test_kd.py::test_stored_topk_are_the_teachers_as_transformers_computes_them"
_TOPK_REF = "tests/test_slots.py::test_top_logprobs_are_the_models_as_transformers_computes_them"

_GEN_KILL = ("tests/test_generate.py::"
             "test_sigkill_at_five_moments_then_finish_equals_an_uninterrupted_run")
_GEN_VALID = "tests/test_generate.py::test_valid_readings_are_never_generated_again"

_PIPE = "tests/test_pipeline.py::test_pipeline_runs_every_stage_skips_on_rerun_and_reruns_only_dependents"
_BOOT = "tests/test_pipeline.py::test_paired_bootstrap_against_numpy_and_scipy"
_PIPE_FP = "tests/test_pipeline.py::test_a_changed_corpus_or_ledger_retrains_and_nothing_else_does"
_REF_E2E = ("tests/test_evaluation.py::"
            "test_brd_eval_reference_model_scores_the_teacher_against_the_student")
_EXPERIMENT = ("tests/test_experiment.py::"
               "test_an_experiment_of_three_arms_and_two_seeds_reads_once_and_adds_an_arm_alone")
_TRAIN_RESUME = ("tests/test_train_cli.py::"
                 "test_resume_after_sigkill_restores_the_last_checkpoint_and_redoes_only_later_steps")
_ASSET_ARCHIVE = "tests/test_assets.py::test_a_local_archive_is_taken_only_with_the_pinned_bytes"
_ASSET_WITHDRAWN = ("tests/test_assets.py::"
                    "test_a_withdrawn_release_is_named_with_the_way_to_give_a_copy")
_BF16_MM = "tests/test_models.py::test_bf16_matmul_and_its_gradients_equal_xlas_bf16_dot"
_BF16_TRAIN = "tests/test_training.py::test_bf16_training_follows_fp32_with_fp32_master_weights"
_BF16_CACHE = ("tests/test_models.py::"
               "test_bf16_cached_decoding_keeps_an_fp32_cache_on_cpu_and_follows_transformers")
_LAYERS_UP = "tests/test_structure.py::test_no_module_imports_cli_config_or_pipeline_from_below"
_LAYERS_CIRCLE = "tests/test_structure.py::test_the_package_has_no_import_circle"
_TDIST = ("tests/test_task_distill.py::"
          "test_the_examples_do_not_read_labels_and_hold_the_teachers_eval_answers")
_DIV_TORCH = "tests/test_evaluation.py::test_teacher_student_divergence_matches_torch"
_SKD = "tests/test_generate.py::test_skd_responses_become_brd_skd_examples_in_the_mixture"
_CONTEXT = "tests/test_generate.py::test_context_sentences_reach_the_teacher"

_LOCK_ORDER = ("tests/test_locks.py::"
               "test_generate_and_corpus_take_the_lock_before_the_teacher_and_the_input")
_LOCK_GEN = ("tests/test_locks.py::test_second_generate_on_the_same_index_is_refused_and_a_"
             "restart_after_sigkill_finishes")
_LOCK_CORPUS = ("tests/test_locks.py::test_second_corpus_on_the_same_index_is_refused_and_a_"
                "restart_after_sigkill_finishes")
_LEASE = ("tests/test_locks.py::"
          "test_lease_on_an_object_store_is_refused_while_refreshed_and_taken_over_when_not")

_EXPORT_RT = "tests/test_export.py::test_export_round_trips_every_record_through_hf_datasets"
_EXPORT_TRAIN = "tests/test_export.py::test_training_from_the_export_gives_the_ledgers_batches"

_BFILE_V1 = "tests/test_behavior_files.py::test_builtin_files_give_the_v1_prompts_parses_and_renders"
_BFILE_NEW = ("tests/test_behavior_files.py::"
              "test_a_declared_behaviour_parses_renders_and_rejects_by_its_file")
_PREP_JOIN = "tests/test_prepare.py::test_prepared_text_examples_equal_a_plain_join"
_PREP_KD = "tests/test_prepare.py::test_prepared_kd_examples_carry_the_teachers_tokens_and_topk"
_PREP_KILL = ("tests/test_prepare.py::"
              "test_sigkill_during_preparation_then_a_rerun_gives_the_same_shards")
_PREP_GLOO = ("tests/test_prepare.py::"
              "test_two_processes_open_only_their_shards_and_see_every_example_once")
_PREP_BEAM = ("tests/test_prepare.py::"
              "test_a_beam_build_writes_the_local_builds_shards_byte_for_byte")
_DATA_HOSTS = "tests/test_data.py::test_each_host_reads_a_disjoint_share"
_DATA_RESUME = ("tests/test_data.py::"
                "test_packed_stream_is_deterministic_and_a_saved_state_resumes_exactly")
_LEDGER_INDEX = ("tests/test_behaviors.py::"
                 "test_the_key_index_says_what_the_records_say_and_a_stale_one_is_not_believed")
_BENCH_DATA = ("tests/test_bench_data.py::"
               "test_bench_data_measures_both_paths_and_its_ledger_is_generates")
_BFILE_REAL = ("tests/test_behavior_files.py::"
               "test_a_new_behaviour_file_is_read_by_the_real_teacher_and_trained_on")

BREAKS: list[Break] = [
    Break("control_gets_brd_mixture", "brd_jax/experiment.py",
          '**({"corpus_only": {"data.mixture": "brd_corpus_only"}}', '**({"corpus_only": {}}',
          (_PIPE,),
          "the corpus-only control trains on the BRD mixture"),
    Break("brd_gets_control_mixture", "brd_jax/experiment.py", 'return {"brd": {}, **(',
          'return {"brd": {"data.mixture": "brd_corpus_only"}, **(', (_PIPE,),
          "the BRD arm trains on the corpus alone"),
    Break("no_log_samples", "brd_jax/pipeline.py",
          "ecfg = dataclasses.replace(ecfg, log_samples=True)", "ecfg = ecfg", (_PIPE,),
          "the pipeline's evals keep no samples: the report has no interval rows"),
    Break("bootstrap_percentile", "brd_jax/pipeline_report.py",
          "float(d.mean()), float(np.percentile(means, 2.5))",
          "float(d.mean()), float(np.percentile(means, 5.0))", (_BOOT, _PIPE), "the interval's lower bound at 5%, not 2.5%"),
    Break("bootstrap_resamples", "brd_jax/pipeline_report.py",
          "b: np.ndarray, n: int = 2000", "b: np.ndarray, n: int = 500",
          (_BOOT, _PIPE), "the bootstrap draws 500 resamples where the report says 2000"),
    Break("train_fp_without_corpus", "brd_jax/pipeline.py",
          '"train", name, fp_par, fp_ledger,', '"train", name, fp_ledger,', (_PIPE_FP,),
          "fewer paragraphs do not retrain the students"),
    Break("train_fp_without_ledger", "brd_jax/pipeline.py",
          '"train", name, fp_par, fp_ledger,', '"train", name, fp_par,', (_PIPE_FP,),
          "new teacher readings do not retrain the students"),
    Break("divergence_swapped", "brd_jax/evaluation/run.py",
          "Divergence(loaded.model, ref.model,", "Divergence(ref.model, loaded.model,",
          (_REF_E2E,), "--reference_model scores the student as the teacher and back"),
    Break("context_not_in_prompt", "brd_jax/behaviors/templates.py",
          "return (self.context_query if context else self.query).format(",
          "return (self.query).format(", (_CONTEXT,),
          "generate.context_sentences reaches the unit key but not the teacher"),
    Break("skd_without_response", "brd_jax/data/formatting.py",
          '"text": f"{text}{sep}{reading}"})', '"text": text})', (_SKD,),
          "brd_skd examples lose the teacher's response"),
    Break("todo_ignores_valid", "brd_jax/behaviors/generate.py",
          "    if not ok and attempts < cfg.max_attempts and _share(u.unit, n_proc) == proc:",
          "    if attempts < cfg.max_attempts and _share(u.unit, n_proc) == proc:",
          (_GEN_VALID, _GEN_KILL), "a re-run generates valid units again"),
    Break("ledger_state_ignores_valid", "brd_jax/behaviors/generate.py",
          'ok or valid is True)', 'ok)', (_GEN_VALID, _GEN_KILL),
          "the ledger's state forgets which units have a valid reading"),
    Break("decontam_n14", "brd_jax/corpus/config.py", "decontam_ngram: int = 13",
          "decontam_ngram: int = 14", (_DECONTAM,),
          "a 13-word overlap with an evaluation input is no longer dropped"),
    Break("decontam_n12", "brd_jax/corpus/config.py", "decontam_ngram: int = 13",
          "decontam_ngram: int = 12", (_DECONTAM,),
          "a 12-word overlap with an evaluation input is dropped"),
    Break("eval_reader_text", "brd_jax/evaluation/tasks.py",
          '    Task("rte", ("entailment", "not_entailment"), _NLI, ("val.jsonl",), _jsonl,',
          '    Task("rte", ("entailment", "not_entailment"), _NLI, ("val.jsonl",), '
          'lambda p: [{**r, "premise": r["premise"][:-1]} for r in _jsonl(p)],',
          ("tests/test_lm_eval_parity.py::test_every_request_of_the_official_files_equals_"
           "lm_evals[rte]",),
          "the project's reader drops the last character of every RTE premise"),
    Break("agreement_always_one", "brd_jax/benchmarks/generate.py",
          "  return sum(ours[k] == peer[k] for k in peer) / len(peer)", "  return 1.0",
          (_AGREE, _AGREE_RUN), "`brd bench generate` reports agreement 1.0 whatever decoded"),
    Break("bench_agreement_self", "brd_jax/benchmarks/generate.py",
          "  agree = agreement(ours, peer)", "  agree = agreement(ours, ours)", (_AGREE_RUN,),
          "the bench compares the engine's rows with themselves, not the peer's"),
    Break("kd_off", "brd_jax/training/step.py",
          'obj = t["nll"] + cfg.z_loss * t["z"] + cfg.kd_weight * t.get("kd", 0.0)',
          'obj = t["nll"] + cfg.z_loss * t["z"]', (_KD_UPDATE,),
          "KD is reported in the metrics but left out of the differentiated objective"),
    Break("kd_unweighted", "brd_jax/training/step.py", 'cfg.kd_weight * t.get("kd", 0.0)',
          't.get("kd", 0.0)', (_KD_UPDATE,),
          "the KD term trains at weight 1 whatever train.kd_weight says (0 included)"),
    Break("topk_values", "brd_jax/inference/slots.py",
          'top_lp=out["top_lp"].at[r, cols].set(top_lp, mode="drop")',
          'top_lp=out["top_lp"].at[r, cols].set(jnp.broadcast_to(lp[..., None], top_lp.shape), '
          'mode="drop")',
          (f"{_TOPK_REF}[slots]", _LEDGER_TOPK),
          "the slot engine stores the chosen token's log-prob in every top-k column"),
    Break("topk_values_plain", "brd_jax/inference/sampling.py",
          "top_lp, top_ids = jax.lax.top_k(lp, top_n)",
          "top_lp, top_ids = jnp.broadcast_to(chosen[:, None], (lp.shape[0], top_n)), "
          "jax.lax.top_k(lp, top_n)[1]", (f"{_TOPK_REF}[plain]",),
          "both engines store the chosen token's log-prob in every top-k column"),
    Break("chosen_logprob_is_max", "brd_jax/inference/sampling.py",
          "chosen = jnp.take_along_axis(lp, tokens_R[:, None], -1)[:, 0]",
          "chosen = jnp.max(lp, -1)", (f"{_TOPK_REF}[slots_sampled]",),
          "the top-1 log-prob is reported as the chosen token's (the same under greedy decoding)"),
    Break("writer_lock_noop", "brd_jax/writer_lock.py",
          "      fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", "      pass",
          (_LOCK_GEN,), "the local writer lock takes nothing: two `brd generate` runs with one "
          "process index commit shards of the same names"),
    Break("writer_lock_not_in_generate", "brd_jax/behaviors/generate.py",
          '  with writer_lock.hold(ledger_dir, proc, "generate"):', "  if True:",
          (_LOCK_ORDER, _LOCK_GEN), "`brd generate` never takes the ledger's writer lock"),
    Break("writer_lock_not_in_corpus", "brd_jax/corpus/stage.py",
          '  with writer_lock.hold(workdir, i, "corpus"):', "  if True:",
          (_LOCK_ORDER, _LOCK_CORPUS), "`brd corpus` never takes the workdir's writer lock"),
    Break("lease_not_refreshed", "brd_jax/writer_lock.py",
          "        self.fs.pipe_file(self.key, json.dumps(self.info).encode())", "        pass",
          (_LEASE,), "an object-store lease is never refreshed: a live holder looks dead and "
          "is taken over"),
    Break("seeds_ignored", "brd_jax/experiment.py", "        if seed is not None:\n",
          "        if False:\n", (_EXPERIMENT,),
          "every seed of an arm trains the same run"),
    Break("arm_bindings_ignored", "brd_jax/experiment.py",
          "        cfgs[what] = dataclasses.replace(cfgs[what], **{field: value})",
          "        pass", (_EXPERIMENT,), "every arm trains on the default data and settings"),
    Break("average_of_first_task", "brd_jax/pipeline_report.py",
          "  means = np.mean(per_task, axis=0)", "  means = per_task[0]",
          (_EXPERIMENT,), "the average's interval resamples one task only"),
    Break("paper_difference_unreferenced", "brd_jax/pipeline_report.py",
          'p_diff = f"{p - p_ref:+.1f}"', 'p_diff = f"{p:+.1f}"', (_EXPERIMENT,),
          "the paper's column shows its arm's figure, not its difference from the reference"),
    Break("cut_share_of_kept_text", "brd_jax/pipeline_report.py",
          'cut = s0["tokens_cut"] / max(s0["tokens_cut"] + s0["unique_tokens"], 1)',
          'cut = s0["tokens_cut"] / max(s0["unique_tokens"], 1)', (_PIPE,),
          "the share cut by seq_len is taken of the kept text, not of all the text"),
    Break("tokens_seen_not_restored", "brd_jax/training/loop.py",
          'prov, seen = old_meta["provenance"], event["tokens_seen"]',
          'prov, seen = old_meta["provenance"], 0', (_TRAIN_RESUME,),
          "a resumed run counts tokens seen from 0: the report's epochs shrink after a kill"),
    Break("archive_pin_unchecked", "brd_jax/assets.py", "      if got != a.archive_sha256:",
          "      if False:", (_ASSET_ARCHIVE,),
          "a local copy of an archive is taken whatever its bytes"),
    Break("withdrawn_is_any_error", "brd_jax/assets.py", "      raise Withdrawn(",
          "      raise UserError(", (_ASSET_WITHDRAWN,),
          "a withdrawn release reads as a network failure (and its test fails instead of BLOCKED)"),
    Break("bf16_matmul_plain", "brd_jax/models/layers.py",
          '  return _cpu_matmul(x_BTD, w_DF)', '  return x_BTD @ w_DF', (_BF16_MM,),
          "bf16 dots on CPU go back to XLA's upcast path (fp32 speed or worse, no AMX)"),
    Break("bf16_matmul_weight_grad_dropped", "brd_jax/models/layers.py",
          '_product(x, g, "...d,...f->df")', '0 * _product(x, g, "...d,...f->df")',
          (_BF16_MM,), "the custom VJP loses the weight gradient"),
    Break("fp32_product_rounded", "brd_jax/models/layers.py",
          "    return jnp.einsum(spec, a, b)\n",
          "    return jnp.einsum(spec, a, b).astype(jnp.bfloat16)\n",
          (_BF16_MM,), "fp32 matmuls on CPU hand bf16 products on"),
    Break("bf16_rounding_skipped", "brd_jax/models/layers.py",
          'preferred_element_type=jnp.float32).astype(jnp.bfloat16)',
          'preferred_element_type=jnp.float32)', (_BF16_MM, _BF16_TRAIN),
          "bf16 matmuls hand fp32 products on: the activations' dtype changes under the model"),
    Break("bf16_cache_on_cpu", "brd_jax/models/layers.py",
          '  return jnp.float32 if dt == jnp.bfloat16 and sharding.platform() == "cpu" else dt',
          '  return dt', (_BF16_CACHE,),
          "bf16 decoding on CPU keeps a bf16 cache, which XLA converts whole every step"),
    Break("bf16_cache_attention_output_dtype", "brd_jax/models/cache.py",
          "    return grouped_attention(q_BTNH.astype(k.dtype), k, v, mask_B1TS, scale).astype(dtype)",
          "    return grouped_attention(q_BTNH.astype(k.dtype), k, v, mask_B1TS, scale)",
          (_BF16_CACHE,), "cached attention hands fp32 on into a bf16 layer"),
    Break("tdist_reads_labels", "brd_jax/behaviors/task_distill.py",
          "  docs = {t: tasks_lib.prompts(t, data_dir) for t in tasks}",
          "  docs = {t: tasks_lib.load(t, data_dir) for t in tasks}", (_TDIST,),
          "task distillation builds its prompts from the labelled documents"),
    Break("tdist_sum_rule", "brd_jax/behaviors/task_distill.py",
          "  return int(np.argmax(np.asarray(loglik) / np.asarray(n_tokens, np.float64)))",
          "  return int(np.argmax(np.asarray(loglik)))", (_TDIST,),
          "the teacher's answer is ranked by summed, not mean per-token, log-prob"),
    Break("divergence_per_doc_first_row", "brd_jax/evaluation/divergence.py",
          "        per_doc[j] = [float(v) for v in sums[:, r]]",
          "        per_doc[j] = [float(v) for v in sums[:, 0]]", (_DIV_TORCH,),
          "every document of a batch gets the first document's CE / KL sums"),
    Break("divergence_interval_unweighted", "brd_jax/pipeline_report.py",
          "                                    weights=[y[:, 2] for y in r])", ")", (_EXPERIMENT,),
          "the arms' CE / KL differences average documents, not tokens"),
    Break("models_import_config", "brd_jax/models/config.py",
          "from brd_jax.paths import MODELS_DIR", "from brd_jax.config import CONFIG_DIR\n"
          "MODELS_DIR = CONFIG_DIR / 'models'", (_LAYERS_UP, _LAYERS_CIRCLE),
          "the model layer reaches up into the gin layer for a path (the 27-module circle)"),
    Break("eval_writes_operative_config", "brd_jax/evaluation/run.py",
          "  check(cfg)\n", "  check(cfg)\n  from brd_jax import config\n", (_LAYERS_UP,),
          "a stage imports `config` to write its own config.gin instead of its caller"),
    Break("layers_import_cache_config_circle", "brd_jax/models/config.py",
          "    n = sum(math.prod(shape)",
          "    from brd_jax.models import layers  # noqa: F401\n    n = sum(math.prod(shape)",
          (_LAYERS_CIRCLE,), "models.config imports models.layers, which imports it back"),
    Break("export_selected_wrong", "brd_jax/data/export.py",
          'parts.add(_row(rec, rec["key"] in chosen_keys))', "parts.add(_row(rec, rec['valid']))",
          (_EXPORT_RT,), "every valid attempt marked as the one training uses"),
    Break("export_texts_reordered", "brd_jax/data/exported.py",
          "    out[t] = [r for f in files for r in pq.read_table(str(f)).to_pylist()]",
          "    out[t] = [r for f in files for r in pq.read_table(str(f)).to_pylist()][::-1]",
          (_EXPORT_TRAIN,), "training from an export reads its texts in another order"),
    Break("divergence_limit_ignored", "brd_jax/evaluation/harness.py",
          "ref_docs = docs[:divergence_limit or None]", "ref_docs = docs",
          (_REF_E2E,), "eval.divergence_limit scores CE / KL on every document anyway"),
    Break("behavior_rules_ignored", "brd_jax/behaviors/spec.py",
          "        if r.fails(rec, unit_text):", "        if False:", (_BFILE_V1, _BFILE_NEW),
          "a behaviour file's rules reject nothing (entity_not_in_sentence gone)"),
    Break("behavior_none_answers_ignored", "brd_jax/behaviors/spec.py",
          'if len(lines) == 1 and lines[0].rstrip(".").lower() in self.none:',
          "if False:", (_BFILE_V1, _BFILE_NEW), "'None' is no longer a valid empty reading"),
    Break("behavior_render_header_dropped", "brd_jax/behaviors/spec.py",
          "([self.render_header] if self.render_header else [])", "[]", (_BFILE_V1, _BFILE_NEW),
          "readings render without the file's header"),
    Break("manifest_without_declarations", "brd_jax/behaviors/generate.py",
          "      \"behavior_specs\": {", "      \"behavior_specs_\": {", (_BFILE_REAL,),
          "a ledger of a file-declared behaviour cannot be rendered without the file"),
    Break("edited_behavior_file_accepted", "brd_jax/behaviors/generate.py",
          "    if b in old and old[b] != declared and \\", "    if False and \\", (_BFILE_REAL,),
          "a behaviour file changed under the same version files readings under old keys"),
    Break("mixture_plus_ignored", "brd_jax/data/tasks.py",
          "  used = mixture_rates(chosen, counts, cfg.rates)",
          "  used = mixture_rates(('brd_ori',), counts, cfg.rates)", (_BFILE_REAL,),
          "data.mixture='brd_ori+brd_relation' trains on the corpus alone"),
    Break("join_once_per_key", "brd_jax/data/prepare.py",
          "        if key in chosen and (key, c) not in sent:\n          sent.add((key, c))",
          "        if key in chosen and key not in sent:\n          sent.add(key)", (_PREP_JOIN,),
          "a sentence repeated in another chunk loses its reading there"),
    Break("join_takes_any_attempt", "brd_jax/data/prepare.py",
          "      chosen = ledger.select((json.loads(line) for line in recs.lines(part)), manifest)",
          "      chosen = {json.loads(l)['sentence_key']: json.loads(l) for l in recs.lines(part)}",
          (_PREP_JOIN,), "the join takes the last valid attempt, not the one training uses"),
    Break("kd_positions_shifted", "brd_jax/data/prepare.py",
          "      pos = np.flatnonzero(slot > formatting.KDTable.NONE)",
          "      pos = np.flatnonzero(slot > formatting.KDTable.NONE) + 1", (_PREP_KD,),
          "the teacher's top-k sit one token off the tokens they were computed for"),
    Break("killed_partial_reused", "brd_jax/data/prepare.py",
          "    rmtree(tmp)  # a killed build left it", "    pass  # a killed build left it",
          (_PREP_KILL,), "a re-run after a kill trips over (or trusts) the half-built set"),
    Break("beam_tie_to_later_shard", "brd_jax/data/prepare_beam.py",
          "sorted(g[\"recs\"], key=lambda t: (t[0], t[1]))",
          "sorted(g[\"recs\"], key=lambda t: (-t[0], t[1]))", (_PREP_BEAM,),
          "on Beam a tie goes to the later ledger shard, locally to the first"),
    Break("beam_offsets_per_shard", "brd_jax/data/prepare_beam.py",
          "  o = sum(n for j, n in counts if j < i)", "  o = 0", (_PREP_BEAM,),
          "every paragraph shard numbers its paragraphs from 0: chunks mix shards"),
    Break("beam_chunk_unsorted", "brd_jax/data/prepare_beam.py",
          "  paragraphs = [par for _, par in sorted(g[\"paras\"], key=lambda t: t[0])]",
          "  paragraphs = [par for _, par in g[\"paras\"]]", (_PREP_BEAM,),
          "a chunk's paragraphs are written in the order the runner delivers them"),
    Break("beam_repeat_once", "brd_jax/data/prepare_beam.py",
          "    for c in chunks:\n      yield c, (key, chosen)",
          "    for c in chunks[:1]:\n      yield c, (key, chosen)", (_PREP_BEAM,),
          "on Beam a sentence repeated in another chunk loses its reading there"),
    Break("no_strided_share", "brd_jax/data/feed.py", "        ds = ds[host::n_hosts]",
          "        pass", (_DATA_HOSTS,),
          "with fewer shards than hosts every host reads every example"),
    Break("shards_not_split_by_host", "brd_jax/data/feed.py",
          "    return files[host::n_hosts], False", "    return files, False", (_DATA_HOSTS,
                                                                              _PREP_GLOO),
          "every host opens every shard"),
    Break("restore_ignored", "brd_jax/data/feed.py",
          "    self._it.set_state(json.loads(state))", "    pass", (_DATA_RESUME,),
          "a saved input position is not restored: a resume starts the stream over"),
    Break("restore_and_replay", "brd_jax/training/loop.py",
          "      batches.restore(states[jax.process_index()])\n    else:\n",
          "      batches.restore(states[jax.process_index()])\n    if True:\n", (_TRAIN_RESUME,),
          "a resume restores the position and then skips as many batches again"),
    Break("no_bos_at_segment_start", "brd_jax/data/feed.py",
          '"decoder_input_tokens": np.where(seg != prev, self.bos, inputs).astype(np.int32),',
          '"decoder_input_tokens": inputs.astype(np.int32),', (_DATA_RESUME,),
          "a packed example's first input is the previous example's last token"),
    Break("bench_ledger_not_generates", "brd_jax/benchmarks/data.py",
          '        unit = ledger.unit_key(sk, tid, "teacher", decode)',
          '        unit = ledger.unit_key(sk, tid, "teacher", {})', (_BENCH_DATA,),
          "bench data times a generate restart that finds nothing done"),
    Break("stale_index_believed", "brd_jax/behaviors/ledger.py",
          '  ok = isinstance(index, dict) and index.get("crc32") == _crc32(path) and all(',
          '  ok = isinstance(index, dict) and all(', (_LEDGER_INDEX,),
          "a restart counts an edited shard by the index of what it was"),
]


def _copy_tree(dest: pathlib.Path) -> None:
  files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.splitlines()
  for f in files:
    src = ROOT / f
    if src.is_file():
      (dest / f).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(src, dest / f)


def _failure_line(out: str) -> str:
  """The first assertion / error line pytest printed for a failing test."""
  for pat in (r"^E\s+(.*\S.*)$", r"^FAILED (.*)$", r"^ERROR (.*)$"):
    for m in re.finditer(pat, out, re.M):
      line = m.group(1).strip()
      if line not in ("AssertionError:", "AssertionError"):  # numpy's: the detail comes next
        return line[:200]
  return out.strip().splitlines()[-1][:200] if out.strip() else ""


def run(breaks: list[Break], workers: int) -> int:
  survived = 0
  with tempfile.TemporaryDirectory(prefix="brd-mut-") as tmp:
    tree = pathlib.Path(tmp) / "tree"
    tree.mkdir()
    _copy_tree(tree)
    for b in breaks:
      path = tree / b.file
      original = path.read_text()
      n = original.count(b.old)
      if n != 1:
        print(f"{b.name}: the text to break occurs {n} times in {b.file}; fix the entry")
        survived += 1
        continue
      path.write_text(original.replace(b.old, b.new))
      t0 = time.time()
      cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
             *(["-n", str(workers), "--dist", "loadfile"] if workers > 1 else ["-p", "no:xdist"]),
             *b.tests]
      # The copy lives in /tmp: point it at this checkout's evaluation data, and make a test
      # that would skip for want of a reference fail instead (a skip is not a catch).
      env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "BRD_STRICT": "1",
             "BRD_EVAL_DATA": os.environ.get("BRD_EVAL_DATA",
                                             str(ROOT.parent / "shared" / "data" / "eval"))}
      r = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=env)
      path.write_text(original)
      out = r.stdout + r.stderr
      caught = r.returncode == 1
      survived += not caught
      verdict = "caught" if caught else f"SURVIVED (pytest exit {r.returncode})"
      print(f"{b.name}: {verdict} in {time.time() - t0:.0f} s by {' '.join(b.tests)}")
      if caught:
        print(f"    {_failure_line(out)}")
      sys.stdout.flush()
  print(f"{len(breaks) - survived} of {len(breaks)} breaks caught")
  return 1 if survived else 0


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("names", nargs="*")
  ap.add_argument("--list", action="store_true")
  ap.add_argument("-n", "--workers", type=int, default=1)
  a = ap.parse_args()
  if a.list:
    for b in BREAKS:
      print(f"{b.name:28s} {b.file}: {b.why}")
    return 0
  known = {b.name: b for b in BREAKS}
  unknown = [n for n in a.names if n not in known]
  if unknown:
    print(f"unknown break(s): {', '.join(unknown)}", file=sys.stderr)
    return 2
  return run([known[n] for n in a.names] if a.names else BREAKS, a.workers)


if __name__ == "__main__":
  sys.exit(main())
