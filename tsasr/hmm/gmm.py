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

import pickle
from typing import Mapping

import kaldi_hmm_gmm as khg
import numpy as np


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


def em_update(am: khg.AmDiagGmm, feats: Mapping[str, np.ndarray],
              senones: Mapping[str, np.ndarray], mixup: int,
              min_gaussian_occupancy: float = 3.0) -> float:
  """One maximum-likelihood update from hard alignments, then Gaussian splitting up to
  `mixup` components in total. Returns the average log-likelihood per frame before it."""
  accs = khg.AccumAmDiagGmm()
  accs.init(model=am, flags=khg.GmmUpdateFlags.kGmmAll)
  log_like, frames = 0.0, 0
  for utt, pdfs in senones.items():
    x = feats[utt]
    for t, pdf in enumerate(pdfs.tolist()):
      log_like += accs.accumulate_for_gmm(model=am, data=x[t], gmm_index=pdf, weight=1.0)
    frames += len(pdfs)
  options = khg.MleDiagGmmOptions()
  options.min_gaussian_occupancy = min_gaussian_occupancy
  khg.mle_am_diag_gmm_update(config=options, amdiag_gmm_acc=accs,
                             flags=khg.str_to_gmm_flags("mvw"), am_gmm=am)
  if mixup > am.num_gauss:
    occupancy = np.array([np.sum(accs.get_acc(i).occupancy) for i in range(accs.num_accs)],
                         np.float32)
    am.split_by_count(state_occs=occupancy[:, None], target_components=mixup,
                      perturb_factor=0.01, power=0.2, min_count=20.0)
  return log_like / max(frames, 1)


class GmmScorer:
  """log p(x_t | senone) for every frame and senone, [frames, senones], in numpy.

  The Gaussians are copied out of the model once, so scoring many utterances costs one
  matrix product each. Kaldi's gconst already holds log weight - 0.5 (D log 2pi +
  sum log var + mu' V^-1 mu), so a component scores gconst + x'(V^-1 mu) - 0.5 x'V^-1 x.
  """

  def __init__(self, am: khg.AmDiagGmm):
    gconsts, means_invvars, invvars, owner = [], [], [], []
    for pdf in range(am.num_pdfs):
      gmm = am.get_pdf(pdf)
      gconsts.append(np.asarray(gmm.gconsts, np.float64))
      means_invvars.append(np.asarray(gmm.means_invvars, np.float64))
      invvars.append(np.asarray(gmm.inv_vars, np.float64))
      owner.append(np.full(len(gconsts[-1]), pdf))
    self.gconsts = np.concatenate(gconsts)
    self.means_invvars = np.concatenate(means_invvars).T.copy()
    self.invvars = np.concatenate(invvars).T.copy()
    owner = np.concatenate(owner)
    self.starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    self.sizes = np.diff(np.r_[self.starts, len(owner)])

  def __call__(self, feats: np.ndarray) -> np.ndarray:
    x = np.asarray(feats, np.float64)
    comp = self.gconsts[None, :] + x @ self.means_invvars - 0.5 * (x * x) @ self.invvars
    peak = np.maximum.reduceat(comp, self.starts, axis=1)
    summed = np.add.reduceat(np.exp(comp - np.repeat(peak, self.sizes, axis=1)),
                             self.starts, axis=1)
    return (peak + np.log(summed)).astype(np.float32)


def pdf_log_likelihoods(am: khg.AmDiagGmm, feats: np.ndarray) -> np.ndarray:
  """GmmScorer for a single utterance."""
  return GmmScorer(am)(feats)
