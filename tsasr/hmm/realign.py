"""Realignment of the training set with a GMM, sharded over worker processes.

Every labelled utterance keeps its alignment graph for the whole bootstrap, and is
realigned several times with the current GMM. Graphs are kaldifst objects that cannot
be pickled, so each worker process builds and keeps the graphs of its own shard
(utterance i of the sorted list belongs to worker i mod workers) and answers realignment
requests for it; only the model goes out and only the alignments come back. Each
utterance is aligned on its own, so the result is the same for any number of workers.

Workers come from a forkserver (never a fork of a process that may hold JAX threads) and
run their small per-utterance matrix products on one BLAS thread each: OpenBLAS threads
cost more than they give on [frames, 78] x [78, a few hundred] products.

Multi-host: with an `exchange` directory on the shared workdir, each process of the run keeps
the utterances of its share (utterance i of the sorted list belongs to process i mod P),
with its own workers, and the results of flat start and realignment pass between processes
through files there (written atomically, then a barrier), so every process holds every
alignment, the same as one process would.

Must not train models: the GMM update stays in the calling process (tsasr.hmm.gmm).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import pathlib
import re
import traceback
from typing import Mapping, Sequence

import numpy as np

from tsasr import pipeline
from tsasr import workdir as wd
from tsasr.hmm import align as align_lib
from tsasr.hmm import gmm as gmm_lib
from tsasr.hmm import graph as graph_lib
from tsasr.hmm import lexicon as lexicon_lib
from tsasr.kaldi import kaldifst


class Realigner:
    """Alignment graphs and Viterbi realignment of a fixed set of utterances.

    Args:
      feats: utterance -> [frames, dim] features.
      transcripts: utterance -> word ids.
      lexicon, silence_prob: for L (without disambiguation symbols).
      costs: HMM transition costs of the graphs.
      workers: processes; 1 runs everything in this process.
      exchange: multi-host: a directory on the shared workdir through which the processes
        of the run (each with its share of the utterances) pass their results; every
        process must make the same calls.
    """

    def __init__(
        self,
        feats: Mapping[str, np.ndarray],
        transcripts: Mapping[str, Sequence[int]],
        lexicon: lexicon_lib.Lexicon,
        silence_prob: float,
        costs: graph_lib.HmmCosts,
        workers: int = 1,
        exchange: pathlib.Path | None = None,
    ):
        self.utts = sorted(feats)
        self.exchange = exchange if exchange is not None and pipeline.processes()[1] > 1 else None
        self._calls = 0
        mine = [self.utts[i] for i in pipeline.share(len(self.utts))] if self.exchange else self.utts
        self.aligned_here = len(mine)
        self.workers = max(1, min(int(workers), len(mine)))
        shards = [mine[k :: self.workers] for k in range(self.workers)]
        jobs = [
            dict(
                feats={u: feats[u] for u in shard},
                transcripts={u: list(transcripts[u]) for u in shard},
                lexicon=lexicon,
                silence_prob=silence_prob,
                costs=costs,
            )
            for shard in shards
        ]
        if self.workers == 1:
            self._local = _Shard(**jobs[0])
            self._conns = []
            return
        self._local = None
        ctx = multiprocessing.get_context("forkserver")
        self._conns, self._procs = [], []
        for job in jobs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child, job), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def _call(self, method: str, *args) -> dict:
        if self._local is not None:
            with single_threaded_blas():
                merged = getattr(self._local, method)(*args)
        else:
            for conn in self._conns:
                conn.send((method, args))
            merged = {}
            for conn in self._conns:
                status, value = conn.recv()
                if status == "error":
                    raise RuntimeError(f"realign worker failed:\n{value}")
                merged.update(value)
        if self.exchange is not None and method in ("flat_start", "realign"):
            merged = self._exchange(method, merged)
        return {u: merged[u] for u in self.utts if u in merged}

    def _exchange(self, method: str, mine: dict) -> dict:
        """Every process's results of this call: each writes its own, all wait, all read."""
        merged = {}
        for part in self.gather(method, mine):
            merged.update(part)
        if pipeline.processes()[0] == 0:  # every process has read the previous call's files: it reached this barrier
            for path in self.exchange.glob(f"{self._calls - 1:04d}-*.pkl"):
                path.unlink(missing_ok=True)
        return merged

    def share(self, count: int) -> range:
        """Which of `count` items this process computes (all of them without an exchange)."""
        return pipeline.share(count) if self.exchange is not None else range(count)

    def gather(self, name: str, value) -> list:
        """Every process's `value` through the exchange directory (tsasr.pipeline.gather), in
        process order; [value] without one. For the caller's GMM update (gmm.em_update) too."""
        if self.exchange is None:
            return [value]
        self._calls += 1
        return pipeline.gather(self.exchange, f"{self._calls:04d}-{name}", value)

    def finish_exchange(self) -> None:
        """Multi-host: waits until every process has read the last results, then process 0
        removes the exchange directory."""
        if self.exchange is None:
            return
        pipeline.barrier("realign: last results read")
        if pipeline.processes()[0] == 0:
            wd.rmtree(self.exchange)

    def build_graphs(self, context) -> None:
        """(Re)builds every kept utterance's alignment graph for `context` (monophone or tree)."""
        self._call("build_graphs", context)

    def flat_start(self, seed: int = 3) -> dict[str, np.ndarray | None]:
        """Senones of frames spread evenly along one path of each graph; None where the
        utterance is too short for its phone sequence."""
        return self._call("flat_start", seed)

    def realign(
        self, am, acoustic_scale: float, beam: float, retry_beam: float
    ) -> dict[str, align_lib.Alignment | None]:
        """Viterbi alignment of every kept utterance with GMM `am`; None on beam failure."""
        return self._call("realign", gmm_lib.to_bytes(am), acoustic_scale, beam, retry_beam)

    def drop(self, utts) -> None:
        """Forgets these utterances (excluded ones): later calls skip them."""
        dropped = set(utts)
        self.utts = [u for u in self.utts if u not in dropped]
        self._call("drop", sorted(dropped))

    def close(self) -> None:
        for conn in self._conns:
            conn.send(("stop", ()))
            conn.close()
        for proc in getattr(self, "_procs", []):
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        self._conns = []

    def __enter__(self) -> "Realigner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Shard:
    """One worker's utterances, their features and graphs."""

    def __init__(self, feats, transcripts, lexicon, silence_prob, costs):
        self.feats = feats
        self.transcripts = transcripts
        self.l_fst = lexicon_lib.lexicon_fst(lexicon, silence_prob, disambig=False)
        self.costs = costs
        self.graphs: dict[str, graph_lib.AlignmentGraph] = {}

    def build_graphs(self, context) -> dict:
        self.graphs = {
            u: graph_lib.alignment_graph(self.l_fst, self.transcripts[u], context, self.costs) for u in self.transcripts
        }
        return {}

    def flat_start(self, seed) -> dict:
        flat = {}
        for utt, graph in self.graphs.items():
            frames = len(self.feats[utt])
            ok, path = kaldifst.equal_align(ifst=graph.fst, length=frames, rand_seed=seed, num_retries=10)
            if ok:
                ok, labels, _, _ = kaldifst.get_linear_symbol_sequence(path)
            flat[utt] = (
                graph.pdfs[np.asarray(labels, np.int64) - 1].astype(np.int32) if ok and len(labels) == frames else None
            )
        return flat

    def realign(self, am_bytes, acoustic_scale, beam, retry_beam) -> dict:
        scorer = gmm_lib.GmmScorer(gmm_lib.from_bytes(am_bytes))
        return {
            utt: align_lib.viterbi(graph, scorer(self.feats[utt], graph.pdfs), acoustic_scale, beam, retry_beam)
            for utt, graph in self.graphs.items()
        }

    def drop(self, utts) -> dict:
        for utt in utts:
            self.graphs.pop(utt, None)
            self.transcripts.pop(utt, None)
            self.feats.pop(utt, None)
        return {}


def _serve(conn, job) -> None:
    _set_blas_threads(1)
    shard = _Shard(**job)
    while True:
        method, args = conn.recv()
        if method == "stop":
            return
        try:
            conn.send(("ok", getattr(shard, method)(*args)))
        except Exception:  # pylint: disable=broad-except
            conn.send(("error", traceback.format_exc()))


def _openblas():
    """numpy's OpenBLAS and its thread-count functions (get, set), or None."""
    with open("/proc/self/maps", encoding="utf-8") as f:
        paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", f.read())))
    for path in paths:
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                getter = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                setter = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                if getter is not None and setter is not None:
                    return getter, setter
    return None


def _set_blas_threads(n: int) -> int | None:
    """Sets numpy's OpenBLAS thread count; returns the previous one (None if unknown)."""
    try:
        functions = _openblas()
    except OSError:
        return None
    if functions is None:
        return None
    getter, setter = functions
    previous = int(getter())
    setter(ctypes.c_int(n))
    return previous


@contextlib.contextmanager
def single_threaded_blas():
    previous = _set_blas_threads(1)
    try:
        yield
    finally:
        if previous is not None:
            _set_blas_threads(previous)
