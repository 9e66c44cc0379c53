"""How large a WER improvement a workdir's test sets can show: the paired-bootstrap spread of the
relative WER change between two decoded systems, per test condition.

For each pair (reference a, system b) decoded in WORKDIR/decode/ and each condition, utterances are
drawn with replacement (--replications draws, both systems scored on the same draw) and the
relative change 100 * (WER_b / WER_a - 1) computed on every draw. Printed per pair and condition:
the change, its 95 % interval, the share of draws where b improves, and `detectable_change`:
the improvement that a one-sided test at p >= 0.95 detects half the time on a test set of this
size (1.645 standard deviations of the change). Where the run's config carries the paper's
change for that pair and condition (`paper.table`, as experiments/top20_T2.py sets it) it adds
`paper` and `test_set_scale_to_detect_paper`: how many times the test set would have to grow
for the paper's change to be that detectable half the time (the spread shrinks as
1 / sqrt(utterances)).

    python bench/wer_power.py WORKDIR [--replications 10000]
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

import ml_collections

from tsasr.decode import scoring
from tsasr.recipes.asr import evaluate

# (reference, system) pairs: each improvement of Table 2 on the system it was made from.
PAIRS = (
    ("teacher_ce", "teacher_seq"),
    ("teacher_ce", "student_ce"),
    ("teacher_seq", "student_ce_from_teacher_seq"),
    ("teacher_seq", "student_seq"),
)
ONE_SIDED_95 = 1.645


def references(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> dict[str, dict[str, list[str]]]:
    """condition -> utterance -> reference words, of the run's test conditions."""
    sets = evaluate.test_sets(workdir, evaluate.conditions(config))
    return {c: {r["id"]: r["text"].split() for r in records} for c, (_, records) in sets.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--replications", type=int, default=10000)
    args = parser.parse_args()
    workdir = pathlib.Path(args.workdir)
    config = json.loads((workdir / "config.json").read_text())
    table = config.get("paper", {}).get("table", {})
    out = {}
    for condition, refs in references(workdir, ml_collections.ConfigDict(config)).items():
        for a, b in PAIRS:
            hyps = [workdir / "decode" / s / f"{condition}.json" for s in (a, b)]
            if not all(h.exists() for h in hyps):
                continue
            hyp_a, hyp_b = (json.loads(h.read_text()) for h in hyps)
            change = scoring.relative_changes(refs, hyp_a, hyp_b, replications=args.replications)
            if change is None:
                continue
            detectable = ONE_SIDED_95 * float(change.std())
            wers = [scoring.wer(refs, h)["wer"] for h in (hyp_a, hyp_b)]
            row = out.setdefault(condition, {})[f"{b}_vs_{a}"] = {
                "relative_change": round(100.0 * (wers[1] / wers[0] - 1.0), 2),
                "ci95": [round(float(x), 2) for x in np.percentile(change, [2.5, 97.5])],
                "share_of_draws_improving": round(float((change < 0).mean()), 4),
                "detectable_change": round(-detectable, 2),
            }
            paper = table.get(a, {}).get(b, {}).get(condition)
            if paper:
                row["paper"] = paper
                row["test_set_scale_to_detect_paper"] = round((detectable / abs(paper)) ** 2, 2)
        out.setdefault(condition, {})["utterances"] = len(refs)
        out[condition]["words"] = int(sum(len(r) for r in refs.values()))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
