"""The senone decision tree: triphone HMM states tied by phonetic questions, in numpy.

Statistics are one Gaussian's sufficient statistics (count, sum, sum of squares) per
(left phone, centre phone, right phone, HMM state) seen in the monophone alignments.
Every (centre phone, HMM state) is a root; a leaf is split by the question about the
left or right phone (from tsasr.hmm.phones.tree_questions) that most increases the
single-Gaussian log-likelihood, best split first over the whole forest, until the target
number of leaves, until no split leaves both sides `min_count` frames, or until the best
gain falls below `min_gain`. Leaves are the senones, numbered depth-first per root.

Serialised as readable JSON; must not know about GMMs, FSTs or files beyond that.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
from typing import Sequence

import numpy as np

from tsasr.hmm import context as context_lib

LEFT, RIGHT = 0, 2  # window positions the questions ask about
_VAR_FLOOR = 1e-2


@dataclasses.dataclass
class TreeStats:
    """Gaussian statistics per triphone state: keys [n, 4] = (left, centre, right, state)."""

    keys: np.ndarray
    counts: np.ndarray  # [n]
    sums: np.ndarray  # [n, dim]
    squares: np.ndarray  # [n, dim]


def accumulate_stats(items: Sequence[tuple[np.ndarray, np.ndarray]]) -> TreeStats:
    """Stats from (contexts [frames, 4], features [frames, dim]) per utterance."""
    contexts = np.concatenate([c for c, _ in items]).astype(np.int64)
    feats = np.concatenate([f for _, f in items]).astype(np.float64)
    keys, inverse = np.unique(contexts, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse, minlength=len(keys)).astype(np.float64)
    sums = np.zeros((len(keys), feats.shape[1]))
    squares = np.zeros_like(sums)
    np.add.at(sums, inverse, feats)
    np.add.at(squares, inverse, feats * feats)
    return TreeStats(keys=keys, counts=counts, sums=sums, squares=squares)


def gaussian_log_likelihood(count, sums, squares):
    """Log-likelihood of the data under its own ML diagonal Gaussian; broadcasts over
    leading dims: count [...], sums/squares [..., dim] -> [...]."""
    count = np.maximum(count, 1e-10)
    mean = sums / count[..., None]
    var = np.maximum(squares / count[..., None] - mean * mean, _VAR_FLOOR)
    dim = sums.shape[-1]
    return -0.5 * count * (np.log(var).sum(-1) + dim * (1.0 + np.log(2 * np.pi)))


@dataclasses.dataclass
class _Leaf:
    entries: np.ndarray  # indexes into TreeStats rows
    node: dict  # the JSON node this leaf fills in when finalised


class SenoneTree:
    """Triphone context dependency: (left, centre, right) window and state -> senone."""

    context_width = 3
    central_position = 1

    def __init__(self, roots: dict[tuple[int, int], dict], phone_names: dict[int, str]):
        self.roots = roots
        self.phone_names = phone_names
        self._states = {p: context_lib.num_states(n) for p, n in phone_names.items()}
        self.num_pdfs = sum(1 for _ in self._leaves())
        self._cache: dict[tuple, int] = {}

    def _leaves(self):
        stack = list(self.roots.values())
        while stack:
            node = stack.pop()
            if "senone" in node:
                yield node
            else:
                stack += [node["yes"], node["no"]]

    def num_states(self, phone: int) -> int:
        return self._states[phone]

    def pdf(self, window: Sequence[int], state: int) -> int:
        key = (tuple(window), state)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        node = self.roots[(window[1], state)]
        while "senone" not in node:
            position = LEFT if node["position"] == "left" else RIGHT
            node = node["yes"] if window[position] in node["phone_ids"] else node["no"]
        self._cache[key] = node["senone"]
        return node["senone"]

    def to_json(self) -> str:
        def strip(node):
            if "senone" in node:
                return {"senone": node["senone"], "count": node["count"]}
            return {
                "position": node["position"],
                "question": node["question"],
                "phones": [self.phone_names[p] for p in sorted(node["phone_ids"])],
                "yes": strip(node["yes"]),
                "no": strip(node["no"]),
            }

        return json.dumps(
            {
                "context_width": 3,
                "central_position": 1,
                "num_senones": self.num_pdfs,
                "phones": {str(p): n for p, n in sorted(self.phone_names.items())},
                "roots": [
                    {"phone": self.phone_names[c], "state": s, "tree": strip(node)}
                    for (c, s), node in sorted(self.roots.items())
                ],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> "SenoneTree":
        data = json.loads(text)
        phone_names = {int(p): n for p, n in data["phones"].items()}
        ids = {n: p for p, n in phone_names.items()}

        def load(node):
            if "senone" in node:
                return {"senone": node["senone"], "count": node["count"]}
            return {
                "position": node["position"],
                "question": node["question"],
                "phone_ids": frozenset(ids[p] for p in node["phones"]),
                "yes": load(node["yes"]),
                "no": load(node["no"]),
            }

        roots = {(ids[r["phone"]], r["state"]): load(r["tree"]) for r in data["roots"]}
        return cls(roots, phone_names)


def build_tree(
    stats: TreeStats,
    phone_names: dict[int, str],
    questions: dict[str, frozenset[str]],
    num_leaves: int,
    min_count: float,
    min_gain: float = 0.0,
) -> tuple[SenoneTree, np.ndarray, np.ndarray]:
    """Greedy likelihood-gain tree over all (centre phone, state) roots.

    Returns the tree and per-senone Gaussian means and variances [senones, dim] (the
    initial triphone GMM); senones without data get the pooled statistics of their root,
    or of all data when the root itself was never seen.
    """
    ids = {n: p for p, n in phone_names.items()}
    question_names = list(questions)
    max_phone = max(phone_names) + 1
    member = np.zeros((len(question_names), max_phone), bool)
    for q, name in enumerate(question_names):
        member[q, [ids[p] for p in questions[name] if p in ids]] = True
    packed = np.concatenate([stats.counts[:, None], stats.sums, stats.squares], axis=1)
    dim = stats.sums.shape[1]

    def best_split(entries):
        rows = packed[entries]
        total = rows.sum(0)
        parent = gaussian_log_likelihood(total[0], total[1 : 1 + dim], total[1 + dim :])
        best = (-np.inf, None, None)
        for position in (LEFT, RIGHT):
            yes_mask = member[:, stats.keys[entries, position]]  # [questions, entries]
            yes = yes_mask.astype(np.float64) @ rows
            no = total[None, :] - yes
            ok = (yes[:, 0] >= min_count) & (no[:, 0] >= min_count)
            if not ok.any():
                continue
            gain = (
                gaussian_log_likelihood(yes[:, 0], yes[:, 1 : 1 + dim], yes[:, 1 + dim :])
                + gaussian_log_likelihood(no[:, 0], no[:, 1 : 1 + dim], no[:, 1 + dim :])
                - parent
            )
            gain = np.where(ok, gain, -np.inf)
            q = int(np.argmax(gain))
            if gain[q] > best[0]:
                best = (float(gain[q]), position, q)
        return best

    roots: dict[tuple[int, int], dict] = {}
    leaves: list[_Leaf] = []
    for p, name in sorted(phone_names.items()):
        for s in range(context_lib.num_states(name)):
            entries = np.flatnonzero((stats.keys[:, 1] == p) & (stats.keys[:, 3] == s))
            roots[(p, s)] = {}
            leaves.append(_Leaf(entries, roots[(p, s)]))
    heap = []
    for i, leaf in enumerate(leaves):
        gain, position, q = best_split(leaf.entries) if len(leaf.entries) > 1 else (-np.inf, None, None)
        if position is not None:
            heapq.heappush(heap, (-gain, i, position, q))
    num_current = len(leaves)
    while heap and num_current < num_leaves:
        neg_gain, i, position, q = heapq.heappop(heap)
        if -neg_gain <= min_gain:
            break
        leaf = leaves[i]
        yes_mask = member[q, stats.keys[leaf.entries, position]]
        node = leaf.node
        node.update(
            position="left" if position == LEFT else "right",
            question=question_names[q],
            phone_ids=frozenset(np.flatnonzero(member[q]).tolist()),
            yes={},
            no={},
        )
        for child_entries, child_node in ((leaf.entries[yes_mask], node["yes"]), (leaf.entries[~yes_mask], node["no"])):
            leaves.append(_Leaf(child_entries, child_node))
            j = len(leaves) - 1
            if len(child_entries) > 1:
                gain, pos, qq = best_split(child_entries)
                if pos is not None:
                    heapq.heappush(heap, (-gain, j, pos, qq))
        leaf.entries = None  # now an internal node
        num_current += 1

    # Number the leaves depth-first, root by root, and give each its Gaussian.
    total = packed.sum(0)
    means, variances = [], []

    def finalise(node, entries, root_total):
        if "position" in node:
            mask = member[
                question_names.index(node["question"]),
                stats.keys[entries, LEFT if node["position"] == "left" else RIGHT],
            ]
            finalise(node["yes"], entries[mask], root_total)
            finalise(node["no"], entries[~mask], root_total)
            return
        rows = packed[entries].sum(0) if len(entries) else np.zeros_like(total)
        if rows[0] < 1.0:
            rows = root_total if root_total[0] >= 1.0 else total
        node.update(senone=len(means), count=float(packed[entries, 0].sum()) if len(entries) else 0.0)
        mean = rows[1 : 1 + dim] / rows[0]
        means.append(mean)
        variances.append(np.maximum(rows[1 + dim :] / rows[0] - mean * mean, _VAR_FLOOR))

    for (p, s), node in sorted(roots.items()):
        entries = np.flatnonzero((stats.keys[:, 1] == p) & (stats.keys[:, 3] == s))
        finalise(node, entries, packed[entries].sum(0) if len(entries) else total)
    return SenoneTree(roots, phone_names), np.array(means), np.array(variances)
