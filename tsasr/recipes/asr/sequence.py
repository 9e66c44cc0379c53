"""Training stages `teacher_seq` and `student_seq`: lattice-free MMI from the CE checkpoints.

Read top to bottom: denominator graph (a phone n-gram from the training alignments,
expanded with the HMM topology and the senone tree) -> numerators (each alignment with
+-tolerance frames at phone boundaries, weighted by the phone LM as in the denominator)
-> batches -> LF-MMI steps from the CE params. The network's chain output is the decoder's own score,
    y = acoustic_scale * (log softmax(logits) - log prior),
so sequence training optimises exactly what decoding uses (the prior floor is
decode.prior_floor, the only decoding field this stage reads). The teacher trains on clean
labelled audio; the student on the noisy copies of the same utterances (its input
domain) with the clean alignments. Utterances with no numerator path are skipped and
counted by the loss (tsasr.losses.lfmmi), never turned into NaN.

The loss adds `sequence.kld_regularize` x the cross-entropy of the network's posteriors
against those of the CE model it starts from, frozen, on the same frames: KL-divergence
regularisation towards the CE model (Yu et al., ICASSP 2013), a soft-target form of the frame
cross-entropy that Kaldi's chain recipes and F-smoothing (Su et al., ICASSP 2013) keep beside
the sequence objective. It holds the network near the frame classifier that 6 x the data (the
student) or the alignments (the teacher) made, while LF-MMI tunes it on the few hours with
transcripts. The held-out loss that picks the model is the same sum.

Each batch's numerators are built on the host from the batch's own rows (their `senones` and
`phones` alignments), so no table over the corpus is kept. With `input='memory'` a process holds
the features of the utterances in its own rows of the run's steps only (the held-out ones too);
with `input='stream'` the training utterances' audio and alignments are written once as
ArrayRecord shards (WORKDIR/<stage>/records/), each process reads its own, and LFBE is computed
in the step with the init system's normalisation: host memory O(batch).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tsasr import workdir as wd
from tsasr.data import batching
from tsasr.data import layout
from tsasr.data import loader as loader_lib
from tsasr.data import records as records_lib
from tsasr.hmm import den_graph
from tsasr.hmm import tree as tree_lib
from tsasr.losses import fsa as fsa_lib
from tsasr.losses import lfmmi
from tsasr.recipes.asr import acoustic
from tsasr.recipes.asr import teacher as teacher_stage
from tsasr.train import loop
from tsasr.train.config import network_train_config

NUM_FIELDS = ("src", "dst", "label", "log_weight", "start", "final")
# What a batch carries: the acoustic models' keys and the phone alignment [frames], from which
# (with `senones`) the batch's numerators are built on the host (`with_numerators`).
BATCH_KEYS = {**acoustic.BATCH_KEYS, "phones": batching.FRAME}
log = logging.getLogger(__name__)


def phone_sequence(senones: np.ndarray, phones: np.ndarray, states_of: np.ndarray | None = None) -> tuple:
    """(phone ids, first frame of each) of one alignment; `states_of` (den_graph.senone_states)
    splits a phone said twice in a row into its two instances."""
    starts = den_graph.phone_starts(phones, None if states_of is None else states_of[senones])
    return phones[np.asarray(starts)].tolist(), starts


def numerator(
    senones: np.ndarray, phones: np.ndarray, tolerance: int, states_of=None, lm: den_graph.PhoneLm | None = None
) -> tuple[fsa_lib.Fsa, np.ndarray]:
    """(numerator fsa, allowed) of one utterance from its alignment. With the denominator's phone
    `lm`, the numerator starts with the log-probability of its phone sequence, so its paths weigh
    exactly what they weigh in the denominator (Kaldi composes numerators with the normalisation
    FST): the objective is then the log posterior of the reference, <= 0. A constant per
    utterance, it changes no gradient."""
    sequence, starts = phone_sequence(senones, phones, states_of)
    fsa, allowed = fsa_lib.alignment_numerator(senones, starts, tolerance)
    if lm is not None:
        fsa = dataclasses.replace(fsa, start=fsa.start + den_graph.sequence_log_prob(lm, sequence))
    return fsa, allowed


def numerators(
    ids: list[str], senones, phones, tolerance: int, states_of=None, lm: den_graph.PhoneLm | None = None
) -> dict:
    """{utterance: `numerator`} of the utterances `ids`, their alignments looked up by id."""
    return {u: numerator(senones[u], phones[u], tolerance, states_of, lm) for u in ids}


def denominator(
    train_ids: list[str], senones, phones, tree: tree_lib.SenoneTree, cfg, states_of=None
) -> tuple[den_graph.PhoneLm, fsa_lib.Fsa]:
    """The phone LM of the training alignments and the denominator graph expanded from it."""
    sequences = [phone_sequence(senones[u], phones[u], states_of)[0] for u in train_ids]
    return den_graph.denominator_graph(
        sequences, tree, order=cfg.den_order, num_extra_histories=cfg.den_extra_histories
    )


def with_numerators(batches, tolerance: int, states_of=None, lm: den_graph.PhoneLm | None = None):
    """Adds the numerators of each batch's rows, built from the rows' own alignments (`senones` and
    `phones` [batch, frames], frames where `feature_paddings` is 0; `phones` is then dropped: the
    step does not read it), padded to the bucket: `num_<field>` arrays [batch, ...] and
    `num_allowed` [batch, frames, states]. A row with no frames (a filler row) gets a one-state
    numerator that no frame reaches (the loss skips it). Nothing is looked up by utterance id, so
    a batch from memory and one streamed from records get the same numerators for the same rows."""
    filler = fsa_lib.alignment_numerator(np.zeros(1, np.int64), [0], 0)
    for batch in batches:
        phones = batch.pop("phones")
        length = batch["feature_paddings"].shape[1]
        frames = np.count_nonzero(batch["feature_paddings"] == 0.0, axis=1)
        each = [
            numerator(batch["senones"][row, :n], phones[row, :n], tolerance, states_of, lm) if n else filler
            for row, n in enumerate(frames)
        ]
        stacked, allowed = fsa_lib.stack_numerators(each, length, num_states=length + 1, num_arcs=2 * length + 2)
        for name in NUM_FIELDS:
            batch[f"num_{name}"] = np.asarray(getattr(stacked, name))
        batch["num_allowed"] = allowed
        yield batch


def example(utt: str, features: np.ndarray, alignments: dict, clean_id: str) -> dict:
    """A training example: normalised `features` [frames, dim] and the clean alignment (`senones`,
    `phones` [frames]) of the utterance, a noisy copy's by its clean twin's id."""
    return {"id": utt, "features": features, **{k: a[clean_id] for k, a in alignments.items()}}


def frame_count_only(utt: str, frames: int) -> dict:
    """An example the Batcher plans with but this process never batches (another process's rows):
    its frame count, as the length of zero-width features and zero-stride targets (no memory)."""
    zeros = np.broadcast_to(np.int32(0), (frames,))
    return {"id": utt, "features": np.zeros((frames, 0), np.float32), "senones": zeros, "phones": zeros}


def in_memory(
    records: list[dict],
    held: set[str],
    key: dict[str, str],
    alignments: dict,
    norm: dict,
    batching_config: batching.BatchingConfig,
    num_steps_of: Callable[[int], int],
    name: str,
    process_index: int = 0,
    process_count: int = 1,
) -> tuple[batching.Batcher, list[dict], int]:
    """(Batcher of the training `records`, examples of the `held` ones sorted by id, steps) with
    features in host memory: only those of the utterances in this process's rows of the run's
    steps, and of the held-out ones (every process evaluates them all). `key`: each utterance's
    clean id; `num_steps_of(batches_per_epoch)`: the run's step count.

    The plan of the global batches comes first, from the frame counts of every training
    utterance (their alignments' lengths: the Batcher checks that they equal the features'). The
    utterances in no process's rows (each bucket's remainder, in every epoch the run reaches: fewer
    than batch_size a bucket) are computed by every process too: then a one-process run computes
    the very set it did before plans were shared out, in the same padded batches of
    acoustic.compute_features, whose LFBE's last bits depend on a batch's padded width."""
    frames = {r["id"]: len(alignments["senones"][key[r["id"]]]) for r in records if r["id"] not in held}
    plan = batching.Batcher(
        [frame_count_only(u, n) for u, n in frames.items()], batching_config, process_index, process_count
    )
    num_steps = num_steps_of(plan.batches_per_epoch)
    mine, anyone = plan.rows_of_steps(num_steps)
    needed = mine | (set(frames) - anyone) | held
    log.info(
        "%s: process %d of %d computes the features of %d of %d training utterances",
        name,
        process_index,
        process_count,
        len(needed - held),
        len(frames),
    )
    needed_records = [r for r in records if r["id"] in needed]
    features = acoustic.normalise(acoustic.compute_features(needed_records, f"{name}: features"), norm)
    examples = [
        example(u, features[u], alignments, key[u]) if u in features else frame_count_only(u, n)
        for u, n in frames.items()
    ]
    batcher = batching.Batcher(examples, batching_config, process_index, process_count)
    heldout = [example(u, features[u], alignments, key[u]) for u in sorted(held)]
    return batcher, heldout, num_steps


def write_records(directory: pathlib.Path, train: list[dict], key: dict[str, str], alignments: dict, num_shards: int):
    """The training records' audio and clean alignments (`senones`, `phones`: all a numerator is
    built from) as `num_shards` ArrayRecord shards in `directory`, unless a complete split of as
    many utterances and shards is there (a resumed run); returns its index."""
    examples = lambda: records_lib.manifest_examples(  # noqa: E731
        ({**r, "clean_id": key[r["id"]]} for r in train),
        lambda clean_id: {k: a[clean_id] for k, a in alignments.items()},
        by="clean_id",
    )
    return records_lib.write_split_once(directory, examples, len(train), num_shards)


def streamed(config, cfg, directory: pathlib.Path, name: str, train: list[dict], key, alignments) -> loader_lib.Loader:
    """The `train` records streamed from ArrayRecord shards in `directory`: written there first
    (`write_records`) by process 0 while the others wait, then each process reads its own shards."""
    write = lambda: write_records(directory, train, key, alignments, cfg.record_shards)  # noqa: E731
    return teacher_stage.records_loader(config, cfg, name, directory, write)


def make_loss_fn(model, den: fsa_lib.Fsa, log_priors: np.ndarray, cfg):
    """loss_fn(params, batch, rng, train, frozen=None): LF-MMI of the chain output, plus
    cfg.kld_regularize x kl_regularizer towards the posteriors of the `frozen` params (the CE
    model the stage starts from; the loop passes them to the step, never trains them)."""
    leak = jnp.asarray(fsa_lib.initial_log_probs(den), jnp.float32)
    den = lfmmi.DenominatorGraph.compile(den)
    log_priors = jnp.asarray(log_priors, jnp.float32)

    def loss_fn(params, batch, rng, train=True, frozen=None):
        logits, paddings = model.apply(
            {"params": params}, batch["features"], batch["feature_paddings"], train=train, rngs={"dropout": rng}
        )
        logits = logits.astype(jnp.float32)
        outputs = cfg.acoustic_scale * (jax.nn.log_softmax(logits, axis=-1) - log_priors)
        numerator = fsa_lib.Fsa(*(batch[f"num_{f}"] for f in NUM_FIELDS))
        loss, m = lfmmi.lfmmi_loss(
            outputs,
            paddings,
            numerator,
            den,
            numerator_allowed=batch["num_allowed"],
            den_leak_log_probs=leak,
            leaky_hmm_coefficient=cfg.leaky_hmm_coefficient,
            l2_regularize=cfg.l2_regularize,
            xent_logits=logits,
            xent_regularize=cfg.xent_regularize,
        )
        mask = 1.0 - paddings
        correct = (jnp.argmax(logits, -1) == batch["senones"]).astype(jnp.float32)
        accuracy = jnp.sum(correct * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        if frozen is None:
            return loss, {"frame_accuracy": accuracy}, m["frames"]
        init_logits, _ = model.apply({"params": frozen}, batch["features"], batch["feature_paddings"], train=False)
        kl = kl_regularizer(logits, init_logits, paddings)
        metrics = {"frame_accuracy": accuracy, "lfmmi_loss": loss, "kl_loss": kl}
        return loss + cfg.kld_regularize * kl, metrics, m["frames"]

    return loss_fn


def kl_regularizer(logits, init_logits, paddings):
    """Mean over real frames of the cross-entropy -sum_s p_init(s) log p(s) of softmax(logits)
    against softmax(init_logits), held fixed (lfmmi.xent_regularizer with those targets): the KL
    divergence from the init model's posteriors, up to their entropy, which has no gradient."""
    targets = jax.nn.softmax(init_logits.astype(jnp.float32), axis=-1)
    frames = jnp.maximum(jnp.sum(1.0 - paddings), 1.0)
    return jnp.sum(lfmmi.xent_regularizer(logits, targets, paddings)) / frames


def train_sequence(config, workdir: pathlib.Path, name: str, init: str, records: list[dict]) -> dict:
    """LF-MMI training of the system `init` on `records` (noisy copies use their clean alignment),
    regularised towards `init`'s posteriors by sequence.kld_regularize."""
    cfg = config.sequence
    if cfg.input not in teacher_stage.INPUTS:
        raise ValueError(f"{name}: sequence.input={cfg.input!r}, expected one of {teacher_stage.INPUTS}")
    workdir = pathlib.Path(workdir)
    alignments = {part: np.load(workdir / "align" / f"{part}.npz") for part in ("senones", "phones")}
    senones, phones = alignments["senones"], alignments["phones"]
    aligned = [r for r in records if r.get("clean_id", r["id"]) in senones.files]
    key = {r["id"]: r.get("clean_id", r["id"]) for r in aligned}
    model, params, norm = acoustic.load_system(workdir, init)
    # The loop restores the trained params from the init checkpoint (and resumes its own); these
    # stay the regulariser's fixed reference.
    frozen = params if cfg.kld_regularize else None
    tree = tree_lib.SenoneTree.from_json((workdir / "align" / "tree.json").read_text())
    states_of = den_graph.senone_states(tree)
    lm, den = denominator(sorted(set(key.values())), senones, phones, tree, cfg, states_of)
    add_numerators = functools.partial(with_numerators, tolerance=cfg.tolerance, states_of=states_of, lm=lm)
    # The CE stage's held-out utterances (same hash) are held out here too: the LF-MMI loss on
    # them every eval_every steps, from the CE model on, picks the state that is the model.
    held = (
        {u for u, c in key.items() if teacher_stage.heldout(c, cfg.heldout_percent)} if cfg.train.eval_every else set()
    )
    log_priors = np.log(np.maximum(np.load(workdir / "align" / "priors.npy"), config.decode.prior_floor))
    out = workdir / name
    wd.write_json(out / "model.json", json.loads((workdir / init / "model.json").read_text()))
    wd.write_json(out / "norm.json", norm)
    train_cfg = network_train_config(config, cfg)
    train_cfg.feature_dim = len(norm["mean"])
    train_cfg.init_checkpoint = loop.best_checkpoint(str(workdir / init))
    num_steps_of = functools.partial(loop.resolve_num_steps, train_cfg, name=name)
    batching_config = dataclasses.replace(teacher_stage.batching_config(config, cfg), keys=BATCH_KEYS)
    loss_fn = make_loss_fn(model, den, log_priors, cfg)
    if cfg.input == "stream":
        train = [r for r in aligned if r["id"] not in held]
        source = streamed(config, cfg, out / "records", name, train, key, alignments)
        train_cfg.num_steps = num_steps_of(source.batches_per_epoch)
        features = acoustic.compute_features([r for r in aligned if r["id"] in held], f"{name}: held-out features")
        features = acoustic.normalise(features, norm)
        heldout = [example(u, features[u], alignments, key[u]) for u in sorted(held)]
        batches_fn = lambda start: add_numerators(source(start))  # noqa: E731
        loss_fn = teacher_stage.on_audio_or_features(loss_fn, norm)  # LFBE of the streamed audio in the step
        utterances = int(source.index["records"])
    else:
        processes = jax.process_index(), jax.process_count()
        source, heldout, train_cfg.num_steps = in_memory(
            aligned, held, key, alignments, norm, batching_config, num_steps_of, name, *processes
        )
        utterances = len(source.examples)

        def batches_fn(start: int):
            # The run's steps only: a later batch may hold rows whose features were not computed.
            return add_numerators(itertools.islice(source(start), train_cfg.num_steps - start))

    dev_batches = None
    if heldout:
        dev = batching.Batcher(heldout, dataclasses.replace(batching_config, drop_remainder=False))
        dev_batches = lambda: add_numerators(dev.epoch())  # noqa: E731 (every host evaluates all)
    loop.train(train_cfg, model, loss_fn, batches_fn, str(out), dev_batches=dev_batches, frozen=frozen)
    summary = {
        "utterances": utterances,
        "heldout_utterances": len(heldout),
        "init": init,
        "den_states": den.num_states,
        "den_arcs": den.num_arcs,
        "steps": int(train_cfg.num_steps),
        "epochs": round(train_cfg.num_steps / source.batches_per_epoch, 2),
    }
    if frozen is not None:
        summary["kld_regularize"] = float(cfg.kld_regularize)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    training = [r for r in rows if "loss" in r]
    if training:
        summary["loss_first_last"] = [round(training[0]["loss"], 4), round(training[-1]["loss"], 4)]
    held = [r for r in rows if "dev_loss" in r]
    if held:  # the held-out LF-MMI loss of the CE model (step 0), of the last state, and the state kept
        best = json.loads((out / "best.json").read_text())
        summary["heldout_loss_first_last"] = [round(held[0]["dev_loss"], 4), round(held[-1]["dev_loss"], 4)]
        summary["best_step"] = best["step"]
        if best["step"] == 0:
            log.warning(
                "%s: sequence training did not lower the held-out LF-MMI loss (%s); the model is %s as it was",
                name,
                " -> ".join(f"{r['dev_loss']:.4f}" for r in held),
                init,
            )
    return summary


def run_teacher(config, workdir: pathlib.Path) -> dict:
    """Training stage `teacher_seq`: the CE teacher, sequence-trained on the clean labelled data."""
    records = acoustic.read(workdir, layout.clean(layout.TRAIN_LABELLED))
    return train_sequence(config, workdir, "teacher_seq", "teacher_ce", records)


def run_student(config, workdir: pathlib.Path) -> dict:
    """Training stage `student_seq`: the CE student, sequence-trained on the noisy labelled data."""
    records = acoustic.read(workdir, layout.noisy(layout.TRAIN_LABELLED))
    return train_sequence(config, workdir, "student_seq", "student_ce", records)


def run_multicondition(config, workdir: pathlib.Path) -> dict:
    """Training stage `multicondition_seq` (off unless baselines.multicondition is set)."""
    if not config.baselines.multicondition:
        return {"skipped": "baselines.multicondition is false"}
    records = acoustic.read(workdir, layout.noisy(layout.TRAIN_LABELLED))
    return train_sequence(config, workdir, "multicondition_seq", "multicondition_ce", records)
