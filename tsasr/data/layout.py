"""Where a speech corpus lives in a run's workdir: the one place that spells its paths.

Data preparation writes, and the speech recipes read, JSONL manifests at these paths
(relative to the workdir):

    corpus/<split>.jsonl         the clean speech, one manifest per split
    noisy/<split>.jsonl          its noisy parallel copies (each entry names its `clean_id`)
    noisy/test_<condition>.jsonl the simulated (or user-supplied) noisy test conditions

A stage's own outputs live in a directory named after the stage (or the system it trains);
evaluation outputs of a system live under decode/<system>/.
"""

from __future__ import annotations

CORPUS = "corpus"  # the clean speech: data_prep.corpus or a user's manifests
NOISE = "noise"  # noise clips for mixing: data_prep.noise
NOISY = "noisy"  # noisy parallel copies and the noisy test conditions: data_prep.noisify
DECODE = "decode"  # hypotheses of every evaluated system, decode/<system>/<condition>.json

TRAIN_LABELLED, TRAIN_UNLABELLED, DEV, TEST = "train_labelled", "train_unlabelled", "dev", "test"
SPLITS = (TRAIN_LABELLED, TRAIN_UNLABELLED, DEV, TEST)
TRAIN_SPLITS = (TRAIN_LABELLED, TRAIN_UNLABELLED)  # the student's parallel data

# Test condition -> manifest; the same ids' `text` are the references.
CONDITIONS = {
    "clean": f"{CORPUS}/{TEST}.jsonl",
    "noisy": f"{NOISY}/test_noisy.jsonl",
    "rerecorded": f"{NOISY}/test_rerecorded.jsonl",
}


def extra_tests(spec: str) -> dict[str, str]:
    """config.corpus.extra_tests, 'name=source,name2=source2', as {name: source}: more clean
    test sets, each scored as its own condition `name` from corpus/test_<name>.jsonl (e.g.
    LibriSpeech's test-other beside test-clean). `source` is a manifest (corpus.source=
    'manifest') or LibriSpeech subsets joined by '+' (corpus.source='librispeech')."""
    out = {}
    for item in filter(None, (part.strip() for part in (spec or "").split(","))):
        name, sep, source = (x.strip() for x in item.partition("="))
        if not sep or not name.isidentifier() or not source:
            raise ValueError(f"corpus.extra_tests: {item!r} is not 'name=source' (name a word, e.g. other=test-other)")
        if name in CONDITIONS or name in out:
            raise ValueError(f"corpus.extra_tests: the condition name {name!r} is taken")
        out[name] = source
    return out


def condition(name: str) -> str:
    """The manifest of test condition `name`: one of CONDITIONS, or an extra clean test set."""
    return CONDITIONS.get(name, f"{CORPUS}/{TEST}_{name}.jsonl")


def clean(split: str) -> str:
    """The clean manifest of `split`, relative to the workdir."""
    return f"{CORPUS}/{split}.jsonl"


def noisy(split: str) -> str:
    """The noisy parallel manifest of `split`, relative to the workdir."""
    return f"{NOISY}/{split}.jsonl"


def decoded(system: str) -> str:
    """The directory of `system`'s hypotheses, relative to the workdir."""
    return f"{DECODE}/{system}"
