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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tsasr import workdir as wd
from tsasr.data import batching
from tsasr.data import layout
from tsasr.hmm import den_graph
from tsasr.hmm import tree as tree_lib
from tsasr.losses import fsa as fsa_lib
from tsasr.losses import lfmmi
from tsasr.recipes.asr import acoustic
from tsasr.recipes.asr import teacher as teacher_stage
from tsasr.train import loop

NUM_FIELDS = ("src", "dst", "label", "log_weight", "start", "final")
log = logging.getLogger(__name__)


def phone_sequence(senones: np.ndarray, phones: np.ndarray, states_of: np.ndarray | None = None) -> tuple:
    """(phone ids, first frame of each) of one alignment; `states_of` (den_graph.senone_states)
    splits a phone said twice in a row into its two instances."""
    starts = den_graph.phone_starts(phones, None if states_of is None else states_of[senones])
    return phones[np.asarray(starts)].tolist(), starts


def numerators(
    ids: list[str], senones, phones, tolerance: int, states_of=None, lm: den_graph.PhoneLm | None = None
) -> dict:
    """{utterance: (numerator fsa, allowed)}. With the denominator's phone `lm`, each numerator
    starts with the log-probability of its phone sequence, so its paths weigh exactly what
    they weigh in the denominator (Kaldi composes numerators with the normalisation FST):
    the objective is then the log posterior of the reference, <= 0. A constant per
    utterance, it changes no gradient."""
    table = {}
    for u in ids:
        sequence, starts = phone_sequence(senones[u], phones[u], states_of)
        fsa, allowed = fsa_lib.alignment_numerator(senones[u], starts, tolerance)
        if lm is not None:
            fsa = dataclasses.replace(fsa, start=fsa.start + den_graph.sequence_log_prob(lm, sequence))
        table[u] = (fsa, allowed)
    return table


def denominator(
    train_ids: list[str], senones, phones, tree: tree_lib.SenoneTree, cfg, states_of=None
) -> tuple[den_graph.PhoneLm, fsa_lib.Fsa]:
    """The phone LM of the training alignments and the denominator graph expanded from it."""
    sequences = [phone_sequence(senones[u], phones[u], states_of)[0] for u in train_ids]
    return den_graph.denominator_graph(
        sequences, tree, order=cfg.den_order, num_extra_histories=cfg.den_extra_histories
    )


def with_numerators(batches, table: dict[str, tuple], process_index: int = 0):
    """Adds the numerators of each batch's rows, padded to the bucket: `num_<field>` arrays
    [batch, ...] and `num_allowed` [batch, frames, states]. Filler rows get a one-state
    numerator that no frame reaches (the loss skips them)."""
    filler = fsa_lib.alignment_numerator(np.zeros(1, np.int64), [0], 0)
    for batch in batches:
        length = batch["features"].shape[1]
        rows = batch["features"].shape[0]
        ids = list(batch["ids"][process_index * rows : (process_index + 1) * rows])
        stacked, allowed = fsa_lib.stack_numerators(
            [table.get(u, filler) for u in ids], length, num_states=length + 1, num_arcs=2 * length + 2
        )
        for name in NUM_FIELDS:
            batch[f"num_{name}"] = np.asarray(getattr(stacked, name))
        batch["num_allowed"] = allowed
        yield batch


def make_loss_fn(model, den: fsa_lib.Fsa, log_priors: np.ndarray, cfg):
    leak = jnp.asarray(fsa_lib.initial_log_probs(den), jnp.float32)
    den = lfmmi.DenominatorGraph.compile(den)
    log_priors = jnp.asarray(log_priors, jnp.float32)

    def loss_fn(params, batch, rng, train=True):
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
        return loss, {"frame_accuracy": accuracy}, m["frames"]

    return loss_fn


def train_sequence(config, workdir: pathlib.Path, name: str, init: str, records: list[dict]) -> dict:
    """LF-MMI training of the system `init` on `records` (noisy copies use their clean alignment)."""
    cfg = config.sequence
    workdir = pathlib.Path(workdir)
    senones = np.load(workdir / "align" / "senones.npz")
    phones = np.load(workdir / "align" / "phones.npz")
    aligned = [r for r in records if r.get("clean_id", r["id"]) in senones.files]
    key = {r["id"]: r.get("clean_id", r["id"]) for r in aligned}
    model, params, norm = acoustic.load_system(workdir, init)
    del params  # the loop restores them from the init checkpoint (and resumes its own)
    features = acoustic.normalise(acoustic.compute_features(aligned, f"{name}: features"), norm)
    tree = tree_lib.SenoneTree.from_json((workdir / "align" / "tree.json").read_text())
    states_of = den_graph.senone_states(tree)
    lm, den = denominator(sorted(set(key.values())), senones, phones, tree, cfg, states_of)
    by_clean = numerators(sorted(set(key.values())), senones, phones, cfg.tolerance, states_of, lm)
    table = {u: by_clean[c] for u, c in key.items()}
    # The CE stage's held-out utterances (same hash) are held out here too: the LF-MMI loss on
    # them every eval_every steps, from the CE model on, picks the state that is the model.
    held = (
        {u for u, c in key.items() if teacher_stage.heldout(c, cfg.heldout_percent)} if cfg.train.eval_every else set()
    )
    examples = [{"id": u, "features": features[u], "senones": senones[c]} for u, c in key.items() if u not in held]
    heldout = [{"id": u, "features": features[u], "senones": senones[key[u]]} for u in sorted(held)]
    log_priors = np.log(np.maximum(np.load(workdir / "align" / "priors.npy"), config.decode.prior_floor))
    out = workdir / name
    wd.write_json(out / "model.json", json.loads((workdir / init / "model.json").read_text()))
    wd.write_json(out / "norm.json", norm)
    train_cfg = ml_collections.ConfigDict(cfg.train.to_dict())
    train_cfg.seed = int(config.seed)
    train_cfg.feature_dim = len(norm["mean"])
    train_cfg.init_checkpoint = loop.best_checkpoint(str(workdir / init))
    batcher = batching.Batcher(
        examples,
        teacher_stage.batching_config(config, cfg),
        jax.process_index(),
        jax.process_count(),
    )
    train_cfg.num_steps = loop.resolve_num_steps(train_cfg, batcher.batches_per_epoch, name)
    dev_batches = None
    if heldout:
        dev = batching.Batcher(heldout, teacher_stage.batching_config(config, cfg, drop_remainder=False))
        dev_batches = lambda: with_numerators(dev.epoch(), table)  # noqa: E731 (every host evaluates all)
    loop.train(
        train_cfg,
        model,
        make_loss_fn(model, den, log_priors, cfg),
        lambda start: with_numerators(batcher(start), table, jax.process_index()),
        str(out),
        dev_batches=dev_batches,
    )
    summary = {
        "utterances": len(examples),
        "heldout_utterances": len(heldout),
        "init": init,
        "den_states": den.num_states,
        "den_arcs": den.num_arcs,
        "steps": int(train_cfg.num_steps),
        "epochs": round(train_cfg.num_steps / batcher.batches_per_epoch, 2),
    }
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
