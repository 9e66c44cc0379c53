"""Stages `align` and `graph` of the asr recipe: from the labelled corpus to senone
alignments, the senone tree and the decoding graph.

align(config, workdir):  WORKDIR/lang (lexicon, symbol tables, topology) and WORKDIR/align
  (per-frame senone ids of every alignable labelled utterance, senone priors, tree.json,
  the triphone GMM) from corpus/train_labelled.jsonl.
graph(config, workdir):  WORKDIR/graph (G from an n-gram LM on the training transcripts and
  the hmm.lm_text files, or from the user's ARPA LM hmm.lm_arpa; HCLG.fst with senone+1 input
  labels; words.txt and lexicon.txt of the decoding vocabulary: the lexicon of `align` plus the
  LM text's words, or the ARPA LM's words).
A user's lexicon file (hmm.lexicon) pronounces the words it lists in both stages.
The triphone GMM's own WER is an evaluation stage (tsasr.recipes.asr.evaluate.gmm).

Both return a short summary dict. Excluded utterances (no pronunciation for a word,
too short, beam failure) are counted and named in the log and in align/excluded.json.
Realignment and decoding run on `config.workers` processes (1 when absent); the outputs
do not depend on how many. Multi-host, every process of the run computes the features and
the GMM updates (the same on all), builds the alignment graphs of its share of the
utterances and aligns them (tsasr.hmm.realign); process 0 writes the outputs.
"""

from __future__ import annotations

import json
import logging
import pathlib
import time

import numpy as np

from tsasr import pipeline
from tsasr import workdir as wd
from tsasr.audio.io import read_audio
from tsasr.data import layout
from tsasr.data.manifest import read_manifest
from tsasr.hmm import align as align_lib
from tsasr.hmm import boundaries
from tsasr.hmm import context as context_lib
from tsasr.hmm import external as external_lib
from tsasr.hmm import features as features_lib
from tsasr.hmm import gmm as gmm_lib
from tsasr.hmm import graph as graph_lib
from tsasr.hmm import lexicon as lexicon_lib
from tsasr.hmm import phones as phone_set
from tsasr.hmm import realign as realign_lib
from tsasr.hmm import tree as tree_lib


def load_features(records: list[dict]) -> dict[str, np.ndarray]:
    """MFCC + deltas with per-speaker CMVN, keyed by utterance id."""
    audios = [read_audio(r["audio"]) for r in records]
    feats = features_lib.mfcc_with_deltas(audios, [r.get("speaker", r["id"]) for r in records])
    return {r["id"]: f for r, f in zip(records, feats)}


def _lexicon_file(hc) -> dict | None:
    """The user's lexicon (hmm.lexicon), or None."""
    return external_lib.read_lexicon(hc.lexicon) if hc.get("lexicon") else None


def _costs(hc) -> graph_lib.HmmCosts:
    return graph_lib.HmmCosts(self_loop_prob=hc.self_loop_prob, self_loop_scale=hc.self_loop_scale)


def _say(message: str, *args) -> None:
    """An INFO line about the alignment as a whole: process 0's alone (every process knows it)."""
    if pipeline.processes()[0] == 0:
        logging.info(message, *args)


def _realign(aligner, am, hc, excluded, label):
    alignments = {}
    for utt, result in aligner.realign(am, hc.align_acoustic_scale, hc.align_beam, hc.align_retry_beam).items():
        if result is None:
            excluded[utt] = f"beam failure ({label})"
        else:
            alignments[utt] = result
    aligner.drop([u for u in aligner.utts if u not in alignments])
    return alignments


def _train(aligner, feats, am, alignments, iters, realign_every, total_gauss, hc, excluded, label):
    max_iter_inc = max(1, int(iters * 0.75))
    step = max(0, (total_gauss - am.num_gauss) // max_iter_inc)
    num_gauss = am.num_gauss
    for it in range(iters):
        if it > 0 and it % realign_every == 0:
            alignments = _realign(aligner, am, hc, excluded, label)
        if it < max_iter_inc:
            num_gauss += step
        senones = {u: a.senones if hasattr(a, "senones") else a for u, a in alignments.items()}
        with realign_lib.single_threaded_blas():  # many small per-senone products
            avg = gmm_lib.em_update(am, feats, senones, mixup=num_gauss, exchange=aligner)
        _say(
            "align: %s pass %d: %.3f log-likelihood/frame, %d utterances, %d Gaussians",
            label,
            it,
            avg,
            len(senones),
            am.num_gauss,
        )
    return _realign(aligner, am, hc, excluded, label)


def _tree_contexts(alignment: align_lib.Alignment) -> np.ndarray:
    """[frames, 4] (left, centre, right, state) from a monophone alignment's segments."""
    centres = [w[0] for _, _, w in alignment.segments]
    contexts = np.zeros((len(alignment.senones), 4), np.int64)
    for k, (first, end, _) in enumerate(alignment.segments):
        contexts[first:end, 0] = centres[k - 1] if k > 0 else 0
        contexts[first:end, 1] = centres[k]
        contexts[first:end, 2] = centres[k + 1] if k + 1 < len(centres) else 0
    contexts[:, 3] = alignment.states
    return contexts


def align(config, workdir: pathlib.Path) -> dict:
    """The `align` stage (see the module docstring)."""
    workdir = pathlib.Path(workdir)
    hc = config.hmm
    started = time.time()
    records = [r for r in read_manifest(workdir / layout.clean(layout.TRAIN_LABELLED)) if r.get("text")]
    lm_words = set()
    for split in hc.lm_splits:
        path = workdir / layout.clean(split)
        if path.exists() and split != layout.TRAIN_UNLABELLED:
            lm_words.update(w for r in read_manifest(path) for w in r.get("text", "").split())
    words = lm_words | {w for r in records for w in r["text"].split()}
    lexicon = lexicon_lib.build_lexicon(
        words, lexicon_lib.espeak_g2p() if hc.g2p else None, max_prons=hc.max_prons, external=_lexicon_file(hc)
    )
    index, count = pipeline.processes()
    if index == 0:
        lexicon_lib.write_lang(workdir / "lang", lexicon)

    excluded: dict[str, str] = {}
    transcripts = {}
    for r in records:
        missing = [w for w in r["text"].split() if w not in lexicon.prons]
        if missing:
            excluded[r["id"]] = "no pronunciation: " + " ".join(missing)
        else:
            transcripts[r["id"]] = [lexicon.word_ids[w] for w in r["text"].split()]
    records = [r for r in records if r["id"] in transcripts]
    feats = load_features(records)
    for utt, f in feats.items():
        min_frames = 3 * len(transcripts[utt])  # at least one 3-state phone per word
        if len(f) < min_frames:
            excluded[utt] = f"too short: {len(f)} frames"
    feats = {u: f for u, f in feats.items() if u not in excluded}
    _say(
        "align: %d utterances, %d frames; features in %.1f s",
        len(feats),
        sum(len(f) for f in feats.values()),
        time.time() - started,
    )

    workers = max(1, int(config.get("workers", 1) or 1))
    mono = context_lib.Monophone(lexicon.phone_ids)
    exchange = workdir / "align" / ".exchange"  # multi-host: alignments pass between processes here
    with realign_lib.Realigner(
        feats, {u: transcripts[u] for u in feats}, lexicon, hc.silence_prob, _costs(hc), workers, exchange
    ) as aligner:
        aligner.build_graphs(mono)
        # Flat start: frames spread evenly along one path of each utterance's graph.
        flat = {}
        for utt, senones in aligner.flat_start(seed=3).items():
            if senones is None:
                excluded[utt] = "too short for its phone sequence"
            else:
                flat[utt] = senones
        aligner.drop([u for u in aligner.utts if u not in flat])
        am = gmm_lib.init_flat(mono.num_pdfs, [feats[u] for u in flat])
        mono_alignments = _train(
            aligner, feats, am, flat, hc.mono_iters, hc.mono_realign_every, hc.mono_gaussians, hc, excluded, "monophone"
        )
        mono_seconds = time.time() - started

        # Senone tree from the monophone alignments.
        phone_names = {lexicon.phone_ids[p]: p for p in phone_set.PHONES}
        stats = tree_lib.accumulate_stats([(_tree_contexts(a), feats[u]) for u, a in mono_alignments.items()])
        tree, means, variances = tree_lib.build_tree(
            stats, phone_names, phone_set.tree_questions(), hc.num_senones, hc.tree_min_count, hc.tree_min_gain
        )
        _say("align: senone tree with %d leaves from %d triphone states", tree.num_pdfs, len(stats.counts))
        aligner.build_graphs(tree)
        tri_am = gmm_lib.init_from_gaussians(means, variances)
        tri_alignments = _realign(aligner, tri_am, hc, excluded, "triphone init")
        tri_alignments = _train(
            aligner,
            feats,
            tri_am,
            tri_alignments,
            hc.tri_iters,
            hc.tri_realign_every,
            hc.tri_gaussians,
            hc,
            excluded,
            "triphone",
        )
        aligner.finish_exchange()
    if count > 1:
        logging.info(
            "align: process %d of %d aligned %d of %d utterances", index, count, aligner.aligned_here, len(feats)
        )
    if index != 0:  # process 0 writes the outputs
        return {"process": index, "aligned": aligner.aligned_here}

    # Outputs.
    out = workdir / "align"
    counts = np.zeros(tree.num_pdfs, np.float64)
    for a in tri_alignments.values():
        counts += np.bincount(a.senones, minlength=tree.num_pdfs)
    priors = (counts + 1.0) / (counts.sum() + tree.num_pdfs)  # add-one: no senone has prior 0
    wd.write_npz(out / "senones.npz", {u: a.senones for u, a in tri_alignments.items()})
    wd.write_npz(out / "phones.npz", {u: a.phones for u, a in tri_alignments.items()})
    wd.write_npy(out / "priors.npy", priors)
    wd.write_npy(out / "senone_counts.npy", counts)
    wd.write_text(out / "tree.json", tree.to_json())
    wd.write_bytes(out / "tri_gmm.pkl", gmm_lib.to_bytes(tri_am))
    wd.write_bytes(out / "tri_gmm.kaldi", gmm_lib.kaldi_binary(tri_am))
    wd.write_json(out / "index.json", {u: len(a.senones) for u, a in tri_alignments.items()})
    wd.write_json(out / "excluded.json", excluded)
    for utt, reason in sorted(excluded.items()):
        logging.warning("align: excluded %s: %s", utt, reason)

    accuracy = boundary_accuracy(records, tri_alignments, phone_names, hc.boundary_tolerance_s)
    summary = {
        "num_senones": tree.num_pdfs,
        "num_gaussians": tri_am.num_gauss,
        "aligned_utterances": len(tri_alignments),
        "aligned_frames": int(counts.sum()),
        "excluded_utterances": len(excluded),
        "lexicon_words": len(lexicon.prons),
        "oov_g2p_words": len(lexicon.oov_g2p),
        "no_pronunciation_words": len(lexicon.no_pron),
        "boundary_accuracy": accuracy["accuracy"],
        "boundaries_compared": accuracy["compared"],
        "monophone_seconds": round(mono_seconds, 1),
        "seconds": round(time.time() - started, 1),
    }
    wd.write_json(out / "summary.json", summary)
    logging.info("align: %s", json.dumps(summary))
    return summary


def boundary_accuracy(records, alignments, phone_names, tolerance_s) -> dict:
    """Share of phone boundaries within `tolerance_s` of the TTS timings (see boundaries;
    stops start at their closure, found in the clean audio)."""
    within = compared = 0
    for r in records:
        a = alignments.get(r["id"])
        if a is None or not r.get("tts_phonemes"):
            continue
        segments = [(first, end, phone_names[w[len(w) // 2]]) for first, end, w in a.segments]
        reference = boundaries.reference_phones(r["tts_phonemes"], read_audio(r["audio"]))
        w, c = boundaries.boundary_counts(reference, boundaries.aligned_phones(segments), tolerance_s)
        within += w
        compared += c
    return {"accuracy": within / compared if compared else None, "compared": compared}


def graph(config, workdir: pathlib.Path) -> dict:
    """The `graph` stage (see the module docstring)."""
    workdir = pathlib.Path(workdir)
    hc = config.hmm
    started = time.time()
    lexicon = lexicon_lib.read_lang(workdir / "lang")
    tree = tree_lib.SenoneTree.from_json((workdir / "align" / "tree.json").read_text())
    # <unk> is pronounced SPN. If no aligned frame trained SPN its senones kept the flat
    # start's global Gaussian, which explains any mismatched audio better than speech
    # does: every noisy utterance would decode as a lone <unk>. So <unk> enters G only
    # when SPN was trained.
    spn = lexicon.phone_ids[phone_set.SPOKEN_NOISE]
    with np.load(workdir / "align" / "phones.npz") as aligned:
        spn_frames = int(sum(np.count_nonzero(aligned[u] == spn) for u in aligned.files))
    g2p = lexicon_lib.espeak_g2p() if hc.g2p else None
    out = workdir / "graph"
    sentences, unk, dropped, left_out = [], 0, 0, []
    if hc.get("lm_arpa"):
        # The user's LM decodes: its words are the vocabulary (those that can be pronounced).
        text = pathlib.Path(hc.lm_arpa).expanduser().read_text(encoding="utf-8")
        vocabulary = graph_lib.arpa_words(text)
        lexicon = lexicon_lib.with_words(lexicon, vocabulary, g2p, hc.max_prons, _lexicon_file(hc), keep=vocabulary)
        allowed = set(lexicon.prons) - (set() if spn_frames else {lexicon_lib.UNK})
        arpa, left_out = graph_lib.restrict_arpa(text, allowed)
        if left_out:
            logging.warning(
                "graph: %d words of hmm.lm_arpa have no pronunciation (or are <unk>, and SPN has no training "
                "frames); their n-grams are left out: %s",
                len(left_out),
                " ".join(left_out[:50]),
            )
    else:
        extra = external_lib.read_lm_text(hc.get("lm_text", ()))
        lexicon = lexicon_lib.with_words(lexicon, {w for s in extra for w in s}, g2p, hc.max_prons, _lexicon_file(hc))
        transcripts = [
            r.get("text", "").split()
            for split in hc.lm_splits
            if split != layout.TRAIN_UNLABELLED  # its transcripts stand in for audio nobody transcribed
            for r in read_manifest(workdir / layout.clean(split))
        ]
        for sentence in transcripts + extra:
            words = [w if w in lexicon.prons else lexicon_lib.UNK for w in sentence]
            if lexicon_lib.UNK in words and not spn_frames:
                dropped += 1
                continue
            unk += words.count(lexicon_lib.UNK)
            if words:
                sentences.append(words)
        if dropped:
            logging.warning("graph: %d LM sentences with <unk> left out: SPN has no training frames", dropped)
        arpa = graph_lib.train_lm_arpa(sentences, hc.lm_order)
    wd.write_text(out / "lm.arpa", arpa)
    wd.write_text(out / "words.txt", "".join(f"{w} {i}\n" for w, i in lexicon.word_ids.items()))
    wd.write_text(
        out / "lexicon.txt",
        "".join(f"{w} {' '.join(p)}\n" for w in sorted(lexicon.prons) for p in lexicon.prons[w]),
    )
    grammar = graph_lib.grammar_fst(out / "lm.arpa", out / "words.txt")
    hclg = graph_lib.build_hclg(lexicon, grammar, tree, _costs(hc), hc.silence_prob)
    graph_lib.write_fst(out / "HCLG.fst", hclg)
    summary = {
        "lm": str(hc.lm_arpa) if hc.get("lm_arpa") else "trained",
        "vocabulary": len(lexicon.prons) - 1,  # without <unk>
        "lm_sentences": len(sentences),
        "lm_unk_tokens": unk,
        "lm_sentences_dropped_for_unk": dropped,
        "lm_words_left_out": len(left_out),
        "lm_order": hc.lm_order,
        "hclg_states": int(hclg.num_states),
        "hclg_arcs": graph_lib.fst_size(hclg)["arcs"],
        "graph_seconds": round(time.time() - started, 1),
    }
    wd.write_json(out / "summary.json", summary)
    logging.info("graph: %s", json.dumps(summary))
    return summary
