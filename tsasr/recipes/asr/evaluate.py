"""The asr recipe's evaluation stages: decode a trained system on every test condition and
score it (WER, 95 % bootstrap intervals, the probability of improving on a reference).

An evaluation stage loads its system's checkpoint read-only; it never trains, and no
training stage depends on it, so `--config.decode.beam=12` on a finished workdir reruns
evaluation only. Hypotheses go to WORKDIR/decode/<system>/<condition>.json, metrics into
results.json (tsasr.evaluate.results) as `wer` -> condition.
"""

from __future__ import annotations

import collections
import json
import logging
import pathlib
import time

import numpy as np

from tsasr import pipeline
from tsasr import workdir as wd
from tsasr.data import layout
from tsasr.decode import decoder as decoder_lib
from tsasr.decode import scoring
from tsasr.evaluate import results as results_lib
from tsasr.hmm import gmm as gmm_lib
from tsasr.hmm import realign as realign_lib
from tsasr.hmm import stages as hmm_stages
from tsasr.recipes.asr import acoustic

log = logging.getLogger(__name__)
_TEST_FEATURES: dict[tuple[str, int], dict[str, np.ndarray]] = {}


def _test_features(path: pathlib.Path, records: list[dict]) -> dict[str, np.ndarray]:
    """Unnormalised features of a test manifest, computed once per process.

    Every system (and every member of a sweep) is decoded on the same test sets; the key
    holds the manifest's mtime, so a rewritten manifest is read afresh.
    """
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _TEST_FEATURES:
        _TEST_FEATURES[key] = acoustic.compute_features(records, f"features: {path.name}")
    return _TEST_FEATURES[key]


def conditions(config) -> tuple[str, ...]:
    """The test conditions to score: decode.conditions, then the corpus's extra clean test sets."""
    corpus = config.get("corpus") or {}  # partial configs (tests, tools) may carry no corpus section
    return tuple(config.decode.conditions) + tuple(layout.extra_tests(corpus.get("extra_tests", "")))


def test_sets(workdir: pathlib.Path, conditions) -> dict[str, tuple[pathlib.Path, list[dict]]]:
    """condition -> (manifest, records with a transcript) for each configured condition present."""
    out = {}
    for condition in conditions:
        path = pathlib.Path(workdir) / layout.condition(condition)
        if not path.exists():
            log.info("no %s manifest at %s; not scored", condition, path)
            continue
        out[condition] = (path, [r for r in acoustic.read(workdir, layout.condition(condition)) if r.get("text")])
    return out


SPECIAL_WORDS = ("<eps>", "<unk>", "#0", "<s>", "</s>")
OOV_WARNING_PERCENT = 2.0  # above this share of test tokens outside the vocabulary, the log warns


def vocabulary(workdir: pathlib.Path) -> set[str]:
    """The decoding graph's words (graph/words.txt), without its special symbols."""
    lines = (pathlib.Path(workdir) / "graph" / "words.txt").read_text().splitlines()
    return {line.split()[0] for line in lines if line.strip()} - set(SPECIAL_WORDS)


def out_of_vocabulary(records: list[dict], words: set[str]) -> dict:
    """Reference tokens a decoder with vocabulary `words` cannot output: their count, rate in
    percent and the most frequent ones. No system can recognise these."""
    tokens = [w for r in records for w in r["text"].split()]
    missing = collections.Counter(w for w in tokens if w not in words)
    oov = sum(missing.values())
    return {
        "utterances": len(records),
        "words": len(tokens),
        "oov_words": oov,
        "oov_rate": round(100.0 * oov / max(len(tokens), 1), 2),
        "most_frequent_oov": [w for w, _ in missing.most_common(10)],
    }


def report_vocabulary(workdir: pathlib.Path, records_by_condition: dict) -> None:
    """The OOV rate of every test condition, in the log and in results.json `conditions`."""
    words = vocabulary(workdir)
    facts = {c: out_of_vocabulary(records, words) for c, records in records_by_condition.items()}
    for condition, fact in facts.items():
        level = logging.WARNING if fact["oov_rate"] > OOV_WARNING_PERCENT else logging.INFO
        log.log(
            level,
            "%s: %.2f %% of the %d test words are outside the decoding vocabulary (%d words; most frequent: %s)",
            condition,
            fact["oov_rate"],
            fact["words"],
            len(words),
            ", ".join(fact["most_frequent_oov"]) or "none",
        )
    results_lib.update_conditions(workdir, facts)


def oov(config, workdir: pathlib.Path) -> dict:
    """Evaluation stage `oov`: the share of each test condition's reference words that the
    decoding vocabulary lacks (no system can recognise them), logged and in results.json."""
    records = {c: r for c, (_, r) in test_sets(workdir, conditions(config)).items()}
    report_vocabulary(workdir, records)
    facts = results_lib.read(workdir).get("conditions", {})
    return {c: facts[c]["oov_rate"] for c in records}


TEACHERS = ("teacher_ce", "teacher_seq")  # every student is compared with both, as in the paper's Table 2


def score_system(
    workdir: pathlib.Path, system: str, hyps_by_condition: dict, records_by_condition: dict, dc, reference
):
    """WER of `system`'s hypotheses per condition, with bootstrap 95 % intervals (paired with
    `reference`'s hypotheses when it has been decoded), and the bootstrap probability that it
    improves on `reference` and on each teacher decoded before it (`p_better_than`); writes
    the hypotheses and merges the rows into results.json (process 0 of a multi-host run:
    every process decodes the same). Returns {condition: WER}."""
    workdir = pathlib.Path(workdir)
    writes = pipeline.process_index() == 0
    wers, details, ci = {}, {}, {}
    others = [t for t in TEACHERS if t not in (system, reference) and (workdir / layout.decoded(t)).exists()]
    p_better = {name: {} for name in ([reference] if reference else []) + others}
    for condition, (hyps, partial) in hyps_by_condition.items():
        records = records_by_condition[condition]
        refs = {r["id"]: r["text"].split() for r in records}
        result = scoring.wer(refs, hyps)
        result["not_final"] = len(partial)
        wers[condition], details[condition] = result["wer"], result
        if writes:
            wd.write_json(workdir / layout.decoded(system) / f"{condition}.json", hyps)
        for other in p_better:
            other_path = workdir / layout.decoded(other) / f"{condition}.json"
            if not other_path.exists():
                continue
            compared = scoring.compare(
                refs, json.loads(other_path.read_text()), hyps, replications=dc.bootstrap_replications
            )
            p_better[other][condition] = compared["p_b_better"]
            if other == reference:
                ci[condition] = [compared["b"]["ci95min"], compared["b"]["ci95max"]]
        if condition not in ci:
            alone = scoring.interval(refs, hyps, replications=dc.bootstrap_replications)
            ci[condition] = [alone["ci95min"], alone["ci95max"]]
        log.info("%s %s: WER %.2f %% (%d utterances)", system, condition, result["wer"], len(records))
    extra = {"ci": {"wer": ci}, "details": details}
    if p_better := {name: p for name, p in p_better.items() if p}:
        extra["p_better_than"] = p_better
    if writes:
        results_lib.update_results(workdir, system, {"wer": wers}, extra)
    return wers


def decode_network(config, workdir: pathlib.Path, system: str, model, params, norm: dict, reference: str | None):
    """Decodes every test condition with a network's posteriors and scores it (score_system)."""
    workdir = pathlib.Path(workdir)
    priors = np.load(workdir / "align" / "priors.npy")
    graph = decoder_lib.Graph.load(workdir / "graph")
    dc = config.decode
    hyps, records = {}, {}
    for condition, (path, condition_records) in test_sets(workdir, conditions(config)).items():
        feats = acoustic.normalise(_test_features(path, condition_records), norm)
        posts = acoustic.log_posteriors(model, params, feats)
        loglikes = {u: decoder_lib.pseudo_log_likelihoods(p, priors, dc.prior_floor) for u, p in posts.items()}
        hyps[condition] = decoder_lib.decode(
            loglikes, graph, dc.acoustic_scale, dc.beam, dc.max_active, workers=config.workers
        )
        records[condition] = condition_records
    return score_system(workdir, system, hyps, records, dc, reference)


def decode_stage(system: str, reference: str | None):
    """The evaluation stage function of a trained `system` (WORKDIR/<system>/checkpoints)."""

    def run(config, workdir: pathlib.Path) -> dict:
        workdir = pathlib.Path(workdir)
        if not (workdir / system / "model.json").exists():
            return {"skipped": f"{system} was not trained"}
        model, params, norm = acoustic.load_system(workdir, system)
        ref = reference if reference and (workdir / layout.decoded(reference)).exists() else None
        return {"wer": decode_network(config, workdir, system, model, params, norm, ref), "reference": ref}

    run.__name__ = f"decode_{system}"
    return run


def gmm(config, workdir: pathlib.Path) -> dict:
    """Evaluation stage `gmm`: decodes every test condition present with the triphone GMM of
    the align stage; WER into results.json as system `gmm`. Its acoustic scale is the best of
    decode.gmm_acoustic_scales on the clean dev set."""
    if not config.hmm.gmm_baseline:
        return {"skipped": "hmm.gmm_baseline is false"}
    workdir = pathlib.Path(workdir)
    dc = config.decode
    scorer = gmm_lib.GmmScorer(gmm_lib.from_bytes((workdir / "align" / "tri_gmm.pkl").read_bytes()))
    workers = max(1, int(config.get("workers", 1) or 1))
    seconds = {"features": 0.0, "scoring": 0.0, "decoding": 0.0}

    def score(records):
        started = time.time()
        feats = hmm_stages.load_features(records)
        seconds["features"] += time.time() - started
        started = time.time()
        with realign_lib.single_threaded_blas():  # faster, and leaves the decoders a core
            loglikes = {u: scorer(f) for u, f in feats.items() if len(f)}
        seconds["scoring"] += time.time() - started
        return loglikes

    def decode(pool, loglikes, scale):
        started = time.time()
        result = pool.decode(loglikes, scale)
        seconds["decoding"] += time.time() - started
        return result

    scale = dc.acoustic_scale
    dev = workdir / layout.clean(layout.DEV)
    tuning = {}
    hyps, records = {}, {}
    with decoder_lib.DecoderPool(workdir / "graph", dc.gmm_beam, dc.max_active, workers) as pool:
        if len(dc.gmm_acoustic_scales) > 1 and dev.exists():
            dev_records = [r for r in acoustic.read(workdir, layout.clean(layout.DEV)) if r.get("text")]
            dev_loglikes = score(dev_records)
            refs = {r["id"]: r["text"].split() for r in dev_records}
            for candidate in dc.gmm_acoustic_scales:
                tuning[str(candidate)] = scoring.wer(refs, decode(pool, dev_loglikes, candidate)[0])["wer"]
            scale = float(min(dc.gmm_acoustic_scales, key=lambda s: tuning[str(s)]))
        for condition, (_, condition_records) in test_sets(workdir, conditions(config)).items():
            hyps[condition] = decode(pool, score(condition_records), scale)
            records[condition] = condition_records
    log.info("gmm: %d decoding workers; seconds %s", workers, json.dumps({k: round(v, 1) for k, v in seconds.items()}))
    wers = score_system(workdir, "gmm", hyps, records, dc, None) if hyps else {}
    if wers:
        results_lib.update_results(workdir, "gmm", {}, {"acoustic_scale": scale, "dev_wer_by_acoustic_scale": tuning})
    return wers
