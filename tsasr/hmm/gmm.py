"""Diagonal-covariance GMM emission models for the HMM states, with kaldi-hmm-gmm.

Kaldi's train_mono.sh / train_deltas.sh compressed: flat start (every senone is the
global Gaussian), then rounds of Viterbi alignment (tsasr.hmm.align) and one EM update
per pass, splitting Gaussians by occupancy up to a target. kaldi-hmm-gmm holds the
Gaussians and does the maximum-likelihood update and mixing-up; the HMM structure and
transition costs live in the graphs (tsasr.hmm.graph), not in a Kaldi TransitionModel,
because kaldi-hmm-gmm's FST arguments are not type-compatible with the kaldifst wheel.

Must not read manifests or audio; it sees features and per-frame senone ids only.
"""

from __future__ import annotations

import heapq
import pickle
from typing import Mapping

import numpy as np

from tsasr.kaldi import kaldi_hmm_gmm as khg


def to_bytes(am: khg.AmDiagGmm) -> bytes:
    return pickle.dumps(am)


def from_bytes(data: bytes) -> khg.AmDiagGmm:
    return pickle.loads(data)  # our own file, written by to_bytes


def kaldi_binary(am: khg.AmDiagGmm) -> bytes:
    """The Gaussians in Kaldi's binary AmDiagGmm format (readable by gmm-copy)."""
    return b"\0B" + np.asarray(am.__getstate__()[0], np.int8).tobytes()


def single_gaussian(mean: np.ndarray, var: np.ndarray) -> khg.DiagGmm:
    gmm = khg.DiagGmm(nmix=1, dim=len(mean))
    gmm.set_weights(np.ones(1, np.float32))
    gmm.set_means(mean[None, :].astype(np.float32))
    gmm.set_invvars((1.0 / var)[None, :].astype(np.float32))
    gmm.compute_gconsts()
    return gmm


def init_flat(num_pdfs: int, feats) -> khg.AmDiagGmm:
    """Flat start: every senone is the global Gaussian of the training features."""
    stacked = np.concatenate([f for f in feats if len(f)])
    am = khg.AmDiagGmm()
    gmm = single_gaussian(stacked.mean(0), np.maximum(stacked.var(0), 1e-3))
    for _ in range(num_pdfs):
        am.add_pdf(gmm)
    return am


def init_from_gaussians(means: np.ndarray, variances: np.ndarray) -> khg.AmDiagGmm:
    """One Gaussian per senone, e.g. from the senone tree's leaf statistics."""
    am = khg.AmDiagGmm()
    for mean, var in zip(means, variances):
        am.add_pdf(single_gaussian(mean, np.maximum(var, 1e-3)))
    return am


def em_update(
    am: khg.AmDiagGmm,
    feats: Mapping[str, np.ndarray],
    senones: Mapping[str, np.ndarray],
    mixup: int,
    min_gaussian_occupancy: float = 3.0,
    exchange=None,
) -> float:
    """One maximum-likelihood update from hard alignments, then Gaussian splitting up to
    `mixup` components in total. Returns the average log-likelihood per frame before it.

    Component posteriors and their statistics are computed in numpy, all frames of a
    senone at once. The accumulator only takes data frames (its per-Gaussian getters
    return copies), so each Gaussian's statistics enter as two moment-matched frames,
    mean +- standard deviation with half the occupancy each: the same count, sum and sum
    of squares, hence the same Kaldi update, as feeding it frame by frame.

    Multi-host, with an `exchange` (a tsasr.hmm.realign.Realigner: `share(count)`, the
    indices this process computes, and `gather(name, value)`, every process's values):
    every process holds all features and alignments, computes the statistics of its share
    of the senones, and gets everyone's; all feed them to the accumulator in senone order,
    so every process makes the update of one process, bit for bit.
    """
    utts = [u for u in senones if len(senones[u])]
    pdfs = np.concatenate([np.asarray(senones[u], np.int64) for u in utts]) if utts else np.zeros(0, np.int64)
    x = np.concatenate([feats[u] for u in utts]).astype(np.float64) if utts else None
    scorer = GmmScorer(am)
    accs = khg.AccumAmDiagGmm()
    accs.init(model=am, flags=khg.GmmUpdateFlags.kGmmAll)
    order = np.argsort(pdfs, kind="stable")
    present, starts = np.unique(pdfs[order], return_index=True)
    ends = np.r_[starts[1:], len(order)]
    mine = exchange.share(len(present)) if exchange is not None else range(len(present))
    stats = {}  # senone -> (its frames' log-likelihood, [(gaussian, occupancy, mean, std)])
    for k in mine:
        pdf = int(present[k])
        rows = x[order[starts[k] : ends[k]]]
        comp = scorer.component_log_likelihoods(rows, pdf)
        peak = comp.max(1, keepdims=True)
        post = np.exp(comp - peak)
        total = post.sum(1, keepdims=True)
        post /= total
        occupancy = post.sum(0)
        means = (post.T @ rows) / np.maximum(occupancy, 1e-300)[:, None]
        stds = np.sqrt(
            np.maximum((post.T @ (rows * rows)) / np.maximum(occupancy, 1e-300)[:, None] - means * means, 0.0)
        )
        gaussians = [(g, float(occupancy[g]), means[g], stds[g]) for g in np.flatnonzero(occupancy > 0).tolist()]
        stats[pdf] = (float(np.sum(np.log(total) + peak)), gaussians)
    if exchange is not None:
        for part in exchange.gather("em", stats):
            stats.update(part)
    log_like = 0.0
    for pdf in present.tolist():
        pdf_log_like, gaussians = stats[pdf]
        log_like += pdf_log_like
        for gauss, occupancy, mean, std in gaussians:
            for sign in (1.0, -1.0):
                accs.accumulate_for_gaussian(
                    am=am,
                    data=(mean + sign * std).astype(np.float32),
                    gmm_index=pdf,
                    gauss_index=gauss,
                    weight=occupancy / 2,
                )
    options = khg.MleDiagGmmOptions()
    options.min_gaussian_occupancy = min_gaussian_occupancy
    khg.mle_am_diag_gmm_update(config=options, amdiag_gmm_acc=accs, flags=khg.str_to_gmm_flags("mvw"), am_gmm=am)
    if mixup > am.num_gauss:
        occupancy = np.array([np.sum(accs.get_acc(i).occupancy) for i in range(accs.num_accs)])
        split_by_count(am, occupancy, target_components=mixup, seed=mixup)
    return log_like / max(len(pdfs), 1)


def split_targets(
    occupancy: np.ndarray, target_components: int, power: float = 0.2, min_count: float = 20.0
) -> np.ndarray:
    """Gaussians per senone, Kaldi's GetSplitTargets: starting from one each, repeatedly
    give one more to the senone with the largest occupancy^power per Gaussian, never
    leaving fewer than `min_count` frames per Gaussian."""
    score = np.power(np.maximum(occupancy, 0.0), power)
    targets = np.ones(len(occupancy), np.int64)
    heap = [(-s, pdf) for pdf, s in enumerate(score.tolist()) if s > 0]
    heapq.heapify(heap)
    total = len(occupancy)
    while total < target_components and heap:
        _, pdf = heapq.heappop(heap)
        if (targets[pdf] + 1) * min_count >= occupancy[pdf]:
            continue  # too few frames for another Gaussian: never split again
        targets[pdf] += 1
        total += 1
        heapq.heappush(heap, (-score[pdf] / targets[pdf], pdf))
    return targets


def split_by_count(
    am: khg.AmDiagGmm,
    occupancy: np.ndarray,
    target_components: int,
    seed: int,
    perturb_factor: float = 0.01,
    power: float = 0.2,
    min_count: float = 20.0,
) -> None:
    """Kaldi's AmDiagGmm::SplitByCount with a seeded perturbation (Kaldi draws it from an
    RNG nobody can seed, so two runs would train different models). Each senone grows to
    its split target by halving its heaviest Gaussian into two whose means move
    +- perturb_factor standard deviations along a random direction."""
    targets = split_targets(occupancy, target_components, power, min_count)
    for pdf in np.flatnonzero(targets > [am.num_gauss_in_pdf(p) for p in range(am.num_pdfs)]):
        gmm = am.get_pdf(int(pdf))  # a reference into the model
        weights = np.asarray(gmm.weights, np.float64)
        inv_vars = np.asarray(gmm.inv_vars, np.float64)
        means = np.asarray(gmm.means_invvars, np.float64) / inv_vars
        rng = np.random.default_rng([seed, int(pdf)])
        while len(weights) < targets[pdf]:
            heaviest = int(np.argmax(weights))
            shift = perturb_factor * rng.standard_normal(means.shape[1]) / np.sqrt(inv_vars[heaviest])
            weights[heaviest] /= 2
            weights = np.append(weights, weights[heaviest])
            means = np.vstack([means, means[heaviest] + shift])
            means[heaviest] -= shift
            inv_vars = np.vstack([inv_vars, inv_vars[heaviest]])
        gmm.resize(nmix=len(weights), dim=means.shape[1])
        gmm.set_weights(weights.astype(np.float32))
        gmm.set_invvars_and_means(inv_vars=inv_vars.astype(np.float32), means=means.astype(np.float32))
        gmm.compute_gconsts()


class GmmScorer:
    """log p(x_t | senone) for every frame and senone, [frames, senones], in numpy.

    The Gaussians are copied out of the model once. Kaldi's gconst already holds log
    weight - 0.5 (D log 2pi + sum log var + mu' V^-1 mu), so a component scores
    gconst + x'(V^-1 mu) - 0.5 x'V^-1 x: one float32 product of [x, x*x] with a
    [2 dim, components] matrix. Components sit in slots [slot, senone] (padded with
    -inf up to the largest mixture), so the log-sum-exp over a senone's components runs
    over contiguous rows. Scoring only some senones (an alignment graph's) costs in
    proportion to how many.
    """

    def __init__(self, am: khg.AmDiagGmm, frames_per_block: int = 256):
        num_pdfs = am.num_pdfs
        sizes = [am.get_pdf(pdf).num_gauss for pdf in range(num_pdfs)]
        self.width = max(sizes)
        self.dim = am.dim
        self.weights = np.zeros((2 * self.dim, self.width, num_pdfs), np.float32)
        self.gconsts = np.full((self.width, num_pdfs), -np.inf, np.float32)
        for pdf, size in enumerate(sizes):
            gmm = am.get_pdf(pdf)
            self.weights[: self.dim, :size, pdf] = np.asarray(gmm.means_invvars).T
            self.weights[self.dim :, :size, pdf] = -0.5 * np.asarray(gmm.inv_vars).T
            self.gconsts[:size, pdf] = np.asarray(gmm.gconsts)
        self.sizes = np.asarray(sizes)
        self.frames_per_block = frames_per_block

    def __call__(self, feats: np.ndarray, pdfs: np.ndarray | None = None) -> np.ndarray:
        """[frames, senones] log-likelihoods, or [frames, len(pdfs)] for those senones."""
        weights, gconsts = self.weights, self.gconsts
        if pdfs is not None:
            weights, gconsts = weights[:, :, pdfs], gconsts[:, pdfs]
        num = weights.shape[2]
        weights = weights.reshape(2 * self.dim, -1)
        gconsts = gconsts.reshape(-1)
        x = np.asarray(feats, np.float32)
        out = np.empty((len(x), num), np.float32)
        for first in range(0, len(x), self.frames_per_block):
            block = x[first : first + self.frames_per_block]
            comp = (np.concatenate([block, block * block], 1) @ weights + gconsts).reshape(len(block), self.width, num)
            peak = comp.max(1)
            comp -= peak[:, None, :]
            np.exp(comp, out=comp)
            out[first : first + len(block)] = np.log(comp.sum(1)) + peak
        return out

    def component_log_likelihoods(self, feats: np.ndarray, pdf: int) -> np.ndarray:
        """[frames, components of `pdf`] log weight + log N(x; component), in float64."""
        size = self.sizes[pdf]
        x = np.asarray(feats, np.float64)
        weights = self.weights[:, :size, pdf].astype(np.float64)
        return np.concatenate([x, x * x], 1) @ weights + self.gconsts[:size, pdf]


def pdf_log_likelihoods(am: khg.AmDiagGmm, feats: np.ndarray) -> np.ndarray:
    """GmmScorer for a single utterance."""
    return GmmScorer(am)(feats)
