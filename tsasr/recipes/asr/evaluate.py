"""The asr recipe's evaluation stages: decode a trained system on every test condition and
score it (WER, 95 % bootstrap intervals, the probability of improving on a reference).

An evaluation stage loads its system's checkpoint read-only; it never trains, and no
training stage depends on it, so `--config.decode.beam=12` on a finished workdir reruns
evaluation only. Hypotheses go to WORKDIR/decode/<system>/<condition>.json, metrics into
results.json (tsasr.evaluate.results) as `wer` -> condition.

Multi-host: every process decodes its share of each condition (tsasr.pipeline.share) and
writes it to WORKDIR/decode/<system>/parts/; after a barrier every process merges them in
the order of a one-process run, scores its share of the conditions, and process 0 writes
the hypotheses and results (the same bytes as one process would) and removes the parts.
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
_TEST_FEATURES: dict[tuple, dict[str, np.ndarray]] = {}


def _test_features(path: pathlib.Path, records: list[dict]) -> dict[str, np.ndarray]:
    """Unnormalised features of a test manifest (this process's share of it), computed once
    per process.

    Every system (and every member of a sweep) is decoded on the same test sets; the key
    holds the manifest's mtime, so a rewritten manifest is read afresh.
    """
    key = (str(path.resolve()), path.stat().st_mtime_ns, tuple(r["id"] for r in records))
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


def utterance_errors(workdir: pathlib.Path, system: str, condition: str) -> dict[str, float]:
    """{utterance: word errors} of a decoded system on a test condition (WORKDIR/decode/<system>/
    <condition>.json against the condition's transcripts; a missing hypothesis counts as empty).
    FileNotFoundError names a condition without transcripts or a system not decoded on it."""
    sets = test_sets(workdir, (condition,))
    if condition not in sets:
        raise FileNotFoundError(f"{pathlib.Path(workdir) / layout.condition(condition)}: no {condition} test set")
    refs = {r["id"]: r["text"].split() for r in sets[condition][1]}
    hyps = json.loads((pathlib.Path(workdir) / layout.decoded(system) / f"{condition}.json").read_text())
    utts = sorted(refs)
    return dict(zip(utts, scoring.utterance_errors(refs, hyps, utts).tolist()))


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
PARTS = "parts"  # decode/<system>/parts/: each process's hypotheses and scores in a multi-host run


def _part(workdir: pathlib.Path, system: str, name: str, index: int) -> pathlib.Path:
    return pathlib.Path(workdir) / layout.decoded(system) / PARTS / f"{name}.{index}.json"


def gather_hypotheses(workdir: pathlib.Path, system: str, shares: dict, order) -> dict:
    """Every process's hypotheses of each condition, in the order of a one-process decode.

    shares: condition -> (hyps, partial, frames) decoded by this process (`frames`: what
    `order` needs of each utterance, JSON-serialisable). order(condition, frames of all
    processes) -> the utterance ids in a one-process run's order. Returns condition ->
    (hyps, partial). Multi-host: each process writes its shares, waits for the others and
    reads them all (every process gets the same result); one process returns its own."""
    index, count = pipeline.processes()
    if count == 1:
        return {condition: (hyps, partial) for condition, (hyps, partial, _) in shares.items()}
    for condition, (hyps, partial, frames) in shares.items():
        wd.write_json(_part(workdir, system, condition, index), {"hyps": hyps, "partial": partial, "frames": frames})
    pipeline.barrier(f"decode {system}: hypotheses of {', '.join(shares)} written")
    merged = {}
    for condition in shares:
        hyps, partial, frames = {}, set(), {}
        for p in range(count):
            part = json.loads(_part(workdir, system, condition, p).read_text())
            hyps.update(part["hyps"])
            partial.update(part["partial"])
            frames.update(part["frames"])
        ids = [u for u in order(condition, frames) if u in hyps]
        merged[condition] = ({u: hyps[u] for u in ids}, [u for u in ids if u in partial])
    return merged


def _score_condition(workdir: pathlib.Path, condition: str, hyps, partial, records, others, reference, dc) -> dict:
    """One condition's WER (details), its 95 % interval and its p_better against `others`."""
    refs = {r["id"]: r["text"].split() for r in records}
    result = scoring.wer(refs, hyps)
    result["not_final"] = len(partial)
    ci, p_better, relative_ci = None, {}, {}
    for other in others:
        other_path = workdir / layout.decoded(other) / f"{condition}.json"
        if not other_path.exists():
            continue
        compared = scoring.compare(
            refs, json.loads(other_path.read_text()), hyps, replications=dc.bootstrap_replications
        )
        p_better[other] = compared["p_b_better"]
        relative_ci[other] = compared["relative_ci95"]
        if other == reference:
            ci = [compared["b"]["ci95min"], compared["b"]["ci95max"]]
    if ci is None:
        alone = scoring.interval(refs, hyps, replications=dc.bootstrap_replications)
        ci = [alone["ci95min"], alone["ci95max"]]
    return {"details": result, "ci": ci, "p_better": p_better, "relative_ci": relative_ci}


def score_system(
    workdir: pathlib.Path, system: str, hyps_by_condition: dict, records_by_condition: dict, dc, reference
):
    """WER of `system`'s hypotheses per condition, with bootstrap 95 % intervals (paired with
    `reference`'s hypotheses when it has been decoded), and the bootstrap probability that it
    improves on `reference` and on each teacher decoded before it (`p_better_than`), with the
    paired 95 % interval of its relative WER change against each (`relative_ci95_to`); writes
    the hypotheses and merges the rows into results.json. Returns {condition: WER}.

    Multi-host: every process passes all hypotheses (gather_hypotheses) and scores its share
    of the conditions; process 0 collects the scores, writes, and returns every condition's
    WER (the others their share's)."""
    workdir = pathlib.Path(workdir)
    index, count = pipeline.processes()
    others = [t for t in TEACHERS if t not in (system, reference) and (workdir / layout.decoded(t)).exists()]
    names = ([reference] if reference else []) + others
    conditions_ = list(hyps_by_condition)
    scores = {}
    for i in pipeline.share(len(conditions_)):
        condition = conditions_[i]
        hyps, partial = hyps_by_condition[condition]
        records = records_by_condition[condition]
        scores[condition] = _score_condition(workdir, condition, hyps, partial, records, names, reference, dc)
    if count > 1:
        wd.write_json(_part(workdir, system, "scores", index), scores)
        pipeline.barrier(f"decode {system}: scores written")
        if index != 0:
            return {condition: score["details"]["wer"] for condition, score in scores.items()}
        for p in range(count):
            scores.update(json.loads(_part(workdir, system, "scores", p).read_text()))
    wers, details, ci = {}, {}, {}
    p_better = {name: {} for name in names}
    relative_ci = {name: {} for name in names}
    for condition, (hyps, _) in hyps_by_condition.items():
        score = scores[condition]
        wers[condition], details[condition], ci[condition] = score["details"]["wer"], score["details"], score["ci"]
        wd.write_json(workdir / layout.decoded(system) / f"{condition}.json", hyps)
        for other, p in score["p_better"].items():
            p_better[other][condition] = p
        for other, interval in score.get("relative_ci", {}).items():
            relative_ci[other][condition] = interval
        log.info(
            "%s %s: WER %.2f %% (%d utterances)",
            system,
            condition,
            wers[condition],
            len(records_by_condition[condition]),
        )
    extra = {"ci": {"wer": ci}, "details": details}
    if p_better := {name: p for name, p in p_better.items() if p}:
        extra["p_better_than"] = p_better
    if relative_ci := {name: c for name, c in relative_ci.items() if c}:
        extra["relative_ci95_to"] = relative_ci
    results_lib.update_results(workdir, system, {"wer": wers}, extra)
    if count > 1:  # every process has read every part (gather_hypotheses came before the barrier above)
        wd.rmtree(workdir / layout.decoded(system) / PARTS)
    return wers


def forward_shares(records_by_condition: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """This process's share of each test set for a network: whole batches of its forward pass.

    acoustic.compute_features and acoustic.log_posteriors take a set's utterances by duration,
    acoustic.BATCH at a time (durations and frame counts rise together). The batches of all
    conditions are numbered in turn and process p takes those numbered b % P == p, so each of
    its batches holds the same utterances, padded the same, as in a one-process run (the
    posteriors are the same bits), and a few small test sets still spread over the processes."""
    _, count = pipeline.processes()
    if count == 1:
        return dict(records_by_condition)
    size = acoustic.BATCH
    numbered = []
    for condition, records in records_by_condition.items():
        order = sorted(range(len(records)), key=lambda i: records[i]["duration"])
        numbered += [(condition, order[k : k + size]) for k in range(0, len(order), size)]
    shares = {condition: [] for condition in records_by_condition}
    for b in pipeline.share(len(numbered)):
        condition, batch = numbered[b]
        shares[condition] += [records_by_condition[condition][i] for i in batch]
    for condition, share in shares.items():  # in the order of the whole set, as compute_features sorts it
        rank = {id(r): i for i, r in enumerate(records_by_condition[condition])}
        share.sort(key=lambda r: rank[id(r)])
    return shares


def _forward_order(records: list[dict]):
    """The order of a one-process network decode: by frames, ties by duration, then manifest order."""

    def order(condition, frames):
        by_duration = [r["id"] for r in sorted(records[condition], key=lambda r: r["duration"])]
        return sorted(by_duration, key=lambda u: frames.get(u, 0))

    return order


def _log_share(system: str, shares: dict, records: dict) -> None:
    """One INFO line per process of a multi-host run: the utterances it decoded."""
    index, count = pipeline.processes()
    if count > 1:
        log.info(
            "%s: process %d of %d decoded %d of %d utterances",
            system,
            index,
            count,
            sum(len(hyps) for hyps, _, _ in shares.values()),
            sum(len(r) for r in records.values()),
        )


def decode_network(config, workdir: pathlib.Path, system: str, model, params, norm: dict, reference: str | None):
    """Decodes every test condition with a network's posteriors and scores it (score_system)."""
    workdir = pathlib.Path(workdir)
    priors = np.load(workdir / "align" / "priors.npy")
    graph = decoder_lib.Graph.load(workdir / "graph")
    dc = config.decode
    sets = test_sets(workdir, conditions(config))
    mine = forward_shares({condition: condition_records for condition, (_, condition_records) in sets.items()})
    shares, records = {}, {}
    for condition, (path, condition_records) in sets.items():
        feats = acoustic.normalise(_test_features(path, mine[condition]), norm)
        posts = acoustic.log_posteriors(model, params, feats)
        loglikes = {u: decoder_lib.pseudo_log_likelihoods(p, priors, dc.prior_floor) for u, p in posts.items()}
        hyps, partial = decoder_lib.decode(
            loglikes, graph, dc.acoustic_scale, dc.beam, dc.max_active, workers=config.workers
        )
        shares[condition] = (hyps, partial, {u: len(f) for u, f in feats.items()})
        records[condition] = condition_records
    _log_share(system, shares, records)
    hyps = gather_hypotheses(workdir, system, shares, _forward_order(records))
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
    decode.gmm_acoustic_scales on the clean dev set.

    Multi-host: every process computes the features of every utterance (their CMVN is per
    speaker, over all of a speaker's utterances), then scores and decodes its share of them
    (tsasr.pipeline.share, by manifest position); the dev set's hypotheses for each scale are
    gathered by every process, so all choose the same scale."""
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
        mine = {records[i]["id"] for i in pipeline.share(len(records))}
        with realign_lib.single_threaded_blas():  # faster, and leaves the decoders a core
            loglikes = {u: scorer(f) for u, f in feats.items() if len(f) and u in mine}
        seconds["scoring"] += time.time() - started
        return loglikes

    def in_manifest_order(records):
        return lambda condition, frames: [r["id"] for r in records[condition]]

    def decode(pool, loglikes, scale):
        started = time.time()
        result = pool.decode(loglikes, scale)
        seconds["decoding"] += time.time() - started
        return result

    scale = dc.acoustic_scale
    dev = workdir / layout.clean(layout.DEV)
    tuning = {}
    shares, records = {}, {}
    with decoder_lib.DecoderPool(workdir / "graph", dc.gmm_beam, dc.max_active, workers) as pool:
        if len(dc.gmm_acoustic_scales) > 1 and dev.exists():
            dev_records = [r for r in acoustic.read(workdir, layout.clean(layout.DEV)) if r.get("text")]
            dev_loglikes = score(dev_records)
            refs = {r["id"]: r["text"].split() for r in dev_records}
            candidates = {f"dev@{c}": (*decode(pool, dev_loglikes, c), {}) for c in dc.gmm_acoustic_scales}
            dev_hyps = gather_hypotheses(
                workdir, "gmm", candidates, in_manifest_order({name: dev_records for name in candidates})
            )
            for candidate in dc.gmm_acoustic_scales:
                tuning[str(candidate)] = scoring.wer(refs, dev_hyps[f"dev@{candidate}"][0])["wer"]
            scale = float(min(dc.gmm_acoustic_scales, key=lambda s: tuning[str(s)]))
        for condition, (_, condition_records) in test_sets(workdir, conditions(config)).items():
            shares[condition] = (*decode(pool, score(condition_records), scale), {})
            records[condition] = condition_records
    log.info("gmm: %d decoding workers; seconds %s", workers, json.dumps({k: round(v, 1) for k, v in seconds.items()}))
    _log_share("gmm", shares, records)
    hyps = gather_hypotheses(workdir, "gmm", shares, in_manifest_order(records))
    wers = score_system(workdir, "gmm", hyps, records, dc, None) if hyps else {}
    if not hyps and pipeline.processes()[1] > 1:  # score_system removes the parts; here only the dev set's
        pipeline.barrier("gmm: dev hypotheses read")
        if pipeline.processes()[0] == 0 and (workdir / layout.decoded("gmm") / PARTS).exists():
            wd.rmtree(workdir / layout.decoded("gmm") / PARTS)
    if wers and pipeline.processes()[0] == 0:
        results_lib.update_results(workdir, "gmm", {}, {"acoustic_scale": scale, "dev_wer_by_acoustic_scale": tuning})
    return wers
