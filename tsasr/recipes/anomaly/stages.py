"""The anomaly recipe's stages.

    machines (data)      the built-in set written in the DCASE 2020 Task 2 layout (or the real
                         data read in place), log-mel features per type -> features/<type>.npz
    ae_baseline (train)  the official dense autoencoder, one per machine type (members)
    id_classifier (train) the self-supervised machine-ID classifier, one per type
    group_made (train)   Group MADE, one per type
    score (evaluate)     anomaly scores of train and test clips, the ensemble, AUC / pAUC per ID
                         and type with bootstrap intervals, ROC plots, results.json rows

Each training stage trains one model per machine type in one vmapped step (tsasr.train.loop's
members, named by type): a batch row holds one training clip of every type side by side.
"""

from __future__ import annotations

import functools
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from tsasr import workdir as wd
from tsasr.data import batching
from tsasr.evaluate import report, results
from tsasr.pipeline import Stage
from tsasr.recipes.anomaly import data as data_lib
from tsasr.recipes.anomaly import features as features_lib
from tsasr.recipes.anomaly import losses, metrics, models
from tsasr.train import checkpoint, loop
from tsasr.train.config import network_train_config

log = logging.getLogger(__name__)
SYSTEMS = ("ae_baseline", "id_classifier", "group_made")
ALL_SYSTEMS = SYSTEMS + ("ensemble",)
KEYS = {"features": batching.FRAME, "labels": batching.CLIP}


# ------------------------------------------------------------------------------------- data


def source_root(config, workdir) -> pathlib.Path:
    if config.data.source == "builtin":
        return pathlib.Path(workdir) / "machines"
    if config.data.source == "dcase":
        if not config.data.dcase_dir:
            raise ValueError("data.source='dcase' needs data.dcase_dir (the folder holding fan/, pump/, ...)")
        return pathlib.Path(config.data.dcase_dir)
    raise ValueError(f"data.source must be 'builtin' or 'dcase'; got {config.data.source!r}")


def make_machines(config, workdir):
    """Writes the built-in set (data.source='builtin'), reads the layout, and stores each type's
    log-mel features: train_x / test_x [clips, frames, 64] (zero-padded), *_frames, *_id (the
    machine ID), test_label (1 = anomaly), *_names, and the type's per-band mean / std over its
    training frames."""
    d = config.data
    root = source_root(config, workdir)
    if d.source == "builtin":
        data_lib.generate(
            root, config.seed, d.types, d.ids, d.train_clips, d.test_clips, d.seconds, d.anomaly_strength, d.snr_db
        )
    clips = data_lib.read_layout(root, d.types)
    summary = {}
    for machine_type in d.types:
        arrays = {}
        for split in ("train", "test"):
            chosen = [c for c in clips if c["type"] == machine_type and c["split"] == split]
            feats = [features_lib.log_mel(data_lib.read_clip(c["path"])) for c in chosen]
            frames = np.array([f.shape[0] for f in feats])
            x = np.zeros((len(feats), frames.max(), features_lib.N_MELS), np.float32)
            for i, f in enumerate(feats):
                x[i, : f.shape[0]] = f
            arrays.update(
                {
                    f"{split}_x": x,
                    f"{split}_frames": frames,
                    f"{split}_id": np.array([c["machine_id"] for c in chosen]),
                    f"{split}_label": np.array([c["label"] for c in chosen]),
                    f"{split}_names": np.array([c["name"] for c in chosen]),
                }
            )
        if np.any(arrays["test_label"] < 0):
            raise ValueError(
                f"{root / machine_type / 'test'}: clips without normal/anomaly labels (an evaluation-set "
                "layout); scoring needs the development layout's labelled test clips"
            )
        real = np.concatenate([arrays["train_x"][i, :n] for i, n in enumerate(arrays["train_frames"])])
        arrays["mean"], arrays["std"] = real.mean(0), real.std(0) + 1e-3
        wd.write_npz(pathlib.Path(workdir) / "features" / f"{machine_type}.npz", arrays)
        summary[machine_type] = {
            "train": len(arrays["train_x"]),
            "test": len(arrays["test_x"]),
            "anomalies": int(arrays["test_label"].sum()),
        }
    return summary


@functools.cache
def _load_type(path: str, mtime: float) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def load_type(workdir, machine_type) -> dict:
    path = pathlib.Path(workdir) / "features" / f"{machine_type}.npz"
    return _load_type(str(path), path.stat().st_mtime)


def id_index(sets: dict) -> dict:
    """{type: sorted machine IDs of its training clips}."""
    return {t: sorted(set(s["train_id"].tolist())) for t, s in sets.items()}


# ------------------------------------------------------------------------------------ models


def build_model(config, system, sets=None):
    if system == "ae_baseline":
        c = config.ae_baseline
        return models.DenseAE(models.AEConfig(c.hidden, c.bottleneck, c.layers))
    if system == "group_made":
        c = config.group_made
        return models.GroupMADE(models.MADEConfig(c.groups, c.hidden, c.layers))
    c = config.id_classifier
    classes = max_ids(config) * (2 if c.warp_bands > 0 else 1)
    return models.IdClassifier(models.ClassifierConfig(classes, c.window, c.hop, c.width, c.expansion))


def max_ids(config) -> int:
    return int(config.id_classifier.max_ids)


def member_inputs(config, sets, check_ids: bool = True) -> dict:
    ids = id_index(sets)
    types = tuple(config.data.types)
    for t in types:
        if check_ids and len(ids[t]) > max_ids(config):
            raise ValueError(f"{t} has {len(ids[t])} machine IDs; raise id_classifier.max_ids (now {max_ids(config)})")
    return {
        "member": np.arange(len(types), dtype=np.int32),
        "mean": np.stack([sets[t]["mean"] for t in types]).astype(np.float32),
        "std": np.stack([sets[t]["std"] for t in types]).astype(np.float32),
        "num_ids": np.array([len(ids[t]) for t in types], np.int32),
    }


def _loss(config, system, model):
    if system == "ae_baseline":
        return losses.make_ae_loss(model)
    if system == "group_made":
        return losses.make_made_loss(model)
    return losses.make_classifier_loss(model, max_ids(config), config.id_classifier.warp_bands)


def bundles(config, sets) -> list[dict]:
    """Training examples: row i holds training clip i (cycled for types with fewer clips) of every
    type, cut to the shortest clip, bands side by side; `labels` the clips' ID indices."""
    types = tuple(config.data.types)
    ids = id_index(sets)
    frames = min(int(sets[t]["train_frames"].min()) for t in types)
    count = max(len(sets[t]["train_x"]) for t in types)
    examples = []
    for i in range(count):
        rows = [(t, i % len(sets[t]["train_x"])) for t in types]
        examples.append(
            {
                "id": f"bundle{i:06d}",
                "features": np.concatenate([sets[t]["train_x"][j, :frames] for t, j in rows], -1),
                "labels": np.array([ids[t].index(int(sets[t]["train_id"][j])) for t, j in rows], np.int32),
            }
        )
    return examples


def train_system(system, config, workdir):
    sets = {t: load_type(workdir, t) for t in config.data.types}
    section = config[system]
    examples = bundles(config, sets)
    frames = examples[0]["features"].shape[0]
    batcher = batching.Batcher(
        examples, batching.BatchingConfig(min(section.batch_size, len(examples)), (frames,), config.seed, keys=KEYS)
    )
    train = network_train_config(config, section)
    train.feature_dim = features_lib.N_MELS
    model = build_model(config, system)
    members = loop.Members(tuple(config.data.types), member_inputs(config, sets, system == "id_classifier"))
    state = loop.train(
        train, model, _loss(config, system, model), batcher, str(pathlib.Path(workdir) / system), members=members
    )
    summary = {"steps": int(np.ravel(jax.device_get(state.step))[0]), "bundles": len(examples)}
    if system == "ae_baseline":
        population = {}
        for m, t in enumerate(config.data.types):
            params = loop.member_slice(state.params, m)
            x, paddings = _padded(sets[t]["train_x"], sets[t]["train_frames"])
            per_clip = max(x.shape[1] - features_lib.CONTEXT + 1, 1)
            keep = np.random.default_rng(config.seed).permutation(len(x))[: -(-section.population_vectors // per_clip)]
            _, variables = model.apply(
                {"params": params}, x[np.sort(keep)], paddings[np.sort(keep)], collect=True, mutable=["population"]
            )
            flat = traverse_util.flatten_dict(jax.device_get(variables["population"]), sep="/")
            population.update({f"{t}/{k}": np.asarray(v) for k, v in flat.items()})
        wd.write_npz(pathlib.Path(workdir) / system / "population.npz", population)
    return summary


def _padded(x, frames):
    paddings = (np.arange(x.shape[1])[None, :] >= frames[:, None]).astype(np.float32)
    return x, paddings


def load_system(config, workdir, system, sets):
    model = build_model(config, system)
    count = len(config.data.types)

    def init(rng):
        return model.init({"params": rng, "dropout": rng}, jnp.zeros((1, 12, features_lib.N_MELS)), jnp.zeros((1, 12)))[
            "params"
        ]

    abstract = jax.eval_shape(lambda: jax.vmap(init)(loop.member_keys(jax.random.PRNGKey(0), count)))
    params = checkpoint.load_params(str(pathlib.Path(workdir) / system / "checkpoints"), abstract)
    population = None
    if system == "ae_baseline":
        with np.load(pathlib.Path(workdir) / system / "population.npz") as f:
            population = {k: f[k] for k in f.files}
    return model, params, population


# ------------------------------------------------------------------------------------ scores


@functools.partial(jax.jit, static_argnames=("model", "system", "max_ids"))
def _score_batch(model, system, max_ids, variables, x, paddings, labels, mean, std, num_ids):
    """Per-clip anomaly scores of one fixed-shape batch."""
    if system == "ae_baseline":
        out, vector_paddings = model.apply(variables, x, paddings)
        per = losses.squared_error(out, features_lib.stack_frames(x))
    elif system == "group_made":
        x = (x - mean) / std
        out, vector_paddings = model.apply(variables, x, paddings)
        dim = out.shape[-1] // 2
        per = losses.gaussian_nll(features_lib.stack_frames(x), out[..., :dim], out[..., dim:])
    else:
        x = (x - mean) / std
        logits, vector_paddings = model.apply(variables, x, paddings)
        logits = losses.mask_missing_ids(logits, num_ids, max_ids)
        per = losses.id_nll(logits, jnp.broadcast_to(labels[:, None], logits.shape[:2]))
    weights = 1.0 - vector_paddings
    return jnp.sum(per * weights, -1) / jnp.maximum(jnp.sum(weights, -1), 1.0)


def clip_scores(config, model, system, variables, x, frames, labels, mean, std, num_ids):
    size = config.score.batch_size
    x, paddings = _padded(x, frames)
    out = []
    for start in range(0, len(x), size):
        chunk = slice(start, start + size)
        n = len(x[chunk])
        pad = lambda a: np.concatenate([a, np.repeat(a[:1], size - n, 0)]) if n < size else a
        scores = _score_batch(
            model,
            system,
            max_ids(config),
            variables,
            pad(x[chunk]),
            pad(paddings[chunk]),
            pad(labels[chunk]),
            mean,
            std,
            num_ids,
        )
        out.append(np.asarray(scores)[:n])
    return np.concatenate(out).astype(np.float64)


def score(config, workdir):
    workdir = pathlib.Path(workdir)
    types = tuple(config.data.types)
    sets = {t: load_type(workdir, t) for t in types}
    ids = id_index(sets)
    inputs = member_inputs(config, sets)
    scores = {s: {} for s in ALL_SYSTEMS}  # system -> type -> {"train": [...], "test": [...]}
    for system in SYSTEMS:
        model, params, population = load_system(config, workdir, system, sets)
        for m, t in enumerate(types):
            variables = {"params": loop.member_slice(params, m)}
            if population is not None:
                variables["population"] = traverse_util.unflatten_dict(
                    {tuple(k.split("/")[1:]): v for k, v in population.items() if k.split("/")[0] == t}
                )
            s = sets[t]
            scores[system][t] = {
                split: clip_scores(
                    config,
                    model,
                    system,
                    variables,
                    s[f"{split}_x"],
                    s[f"{split}_frames"],
                    np.array([ids[t].index(i) if i in ids[t] else 0 for i in s[f"{split}_id"]], np.int32),
                    inputs["mean"][m],
                    inputs["std"][m],
                    inputs["num_ids"][m],
                )
                for split in ("train", "test")
            }
    for t in types:
        scores["ensemble"][t] = ensemble_scores(
            {s: scores[s][t] for s in config.ensemble.systems}, sets[t]["train_id"], sets[t]["test_id"]
        )
    arrays = {f"{s}/{t}/{split}": v for s in ALL_SYSTEMS for t in types for split, v in scores[s][t].items()}
    wd.write_npz(workdir / "scores" / "scores.npz", arrays)
    table = {}
    for system in ALL_SYSTEMS:
        values, ci, per_id, boots = {"auc": {}, "pauc": {}}, {"auc": {}, "pauc": {}}, {}, {"auc": [], "pauc": []}
        for t in types:
            s = sets[t]
            clips = {
                f"id_{int(i):02d}": (s["test_label"][s["test_id"] == i], scores[system][t]["test"][s["test_id"] == i])
                for i in np.unique(s["test_id"])
            }
            r = metrics.per_type(clips, config.score.max_fpr, config.score.replications, config.seed)
            for metric in ("auc", "pauc"):
                values[metric][t], ci[metric][t] = r[metric], r[f"{metric}_ci"]
                boots[metric].append(r[f"{metric}_boot"])
            per_id[t] = r["per_id"]
        for metric in ("auc", "pauc"):
            values[metric]["mean"] = float(np.mean([values[metric][t] for t in types]))
            mean_boot = np.mean(boots[metric], 0)
            ci[metric]["mean"] = [float(np.percentile(mean_boot, 2.5)), float(np.percentile(mean_boot, 97.5))]
        results.update_results(workdir, system, values, {"ci": ci, "per_id": per_id})
        table[system] = {"values": values, "ci": ci, "per_id": per_id}
    plots = plot_rocs(workdir, types, sets, scores)
    wd.write_text(workdir / "scores" / "anomaly.md", markdown(table, types, plots, config))
    wd.write_json(workdir / "scores" / "table.json", table)
    beats = {t: table["ensemble"]["values"]["auc"][t] > table["ae_baseline"]["values"]["auc"][t] for t in types}
    return {"auc": {s: table[s]["values"]["auc"]["mean"] for s in ALL_SYSTEMS}, "ensemble_beats_ae_auc": beats}


def ensemble_scores(member_scores: dict, train_ids, test_ids) -> dict:
    """Each system's scores standardised per machine ID by the mean and standard deviation of
    that ID's training (normal) clips, then averaged over the systems."""
    out = {"train": np.zeros(len(train_ids)), "test": np.zeros(len(test_ids))}
    for split_scores in member_scores.values():
        for machine_id in np.unique(train_ids):
            reference = split_scores["train"][train_ids == machine_id]
            mean, std = reference.mean(), reference.std() + 1e-9
            for split, ids in (("train", train_ids), ("test", test_ids)):
                out[split][ids == machine_id] += (split_scores[split][ids == machine_id] - mean) / std
    return {k: v / len(member_scores) for k, v in out.items()}


def plot_rocs(workdir, types, sets, scores) -> list[str]:
    plt = report.pyplot()

    names = []
    for t in types:
        s = sets[t]
        machine_ids = np.unique(s["test_id"])
        fig, axes = plt.subplots(1, len(machine_ids), figsize=(3.2 * len(machine_ids), 3.2), squeeze=False)
        for ax, machine_id in zip(axes[0], machine_ids):
            pick = s["test_id"] == machine_id
            for system in ALL_SYSTEMS:
                fpr, tpr = metrics.roc(s["test_label"][pick], scores[system][t]["test"][pick])
                ax.plot(
                    fpr,
                    tpr,
                    label=f"{system} {100 * metrics.auc(s['test_label'][pick], scores[system][t]['test'][pick]):.0f}",
                )
            ax.plot([0, 1], [0, 1], ":", color="grey")
            ax.axvline(0.1, color="grey", lw=0.5)
            ax.set_title(f"{t} id_{int(machine_id):02d}")
            ax.set_xlabel("false positive rate")
            ax.legend(fontsize=6, loc="lower right")
        axes[0][0].set_ylabel("true positive rate")
        fig.tight_layout()
        name = f"roc_{t}.png"
        report.save_figure(fig, pathlib.Path(workdir) / "plots" / name)
        names.append(name)
    return names


def markdown(table, types, plots, config) -> str:
    lines = [
        "## Anomalous sound detection: per machine ID",
        "",
        f"AUC / pAUC (%, pAUC over FPR <= {config.score.max_fpr:g}, McClish-standardised as sklearn's) "
        "of each test machine ID.",
        "",
    ]
    header = "| type | id | " + " | ".join(ALL_SYSTEMS) + " |"
    lines += [header, "|---|---|" + "---:|" * len(ALL_SYSTEMS)]
    for t in types:
        for machine_id in sorted(table["ae_baseline"]["per_id"][t]):
            cells = [
                f"{table[s]['per_id'][t][machine_id]['auc']:.1f} / {table[s]['per_id'][t][machine_id]['pauc']:.1f}"
                for s in ALL_SYSTEMS
            ]
            lines.append(f"| {t} | {machine_id} | " + " | ".join(cells) + " |")
    better = [t for t in types if table["ensemble"]["values"]["auc"][t] > table["ae_baseline"]["values"]["auc"][t]]
    lines += [
        "",
        f"The ensemble ({' + '.join(config.ensemble.systems)}) beats the AE baseline's AUC on "
        f"{len(better)} of {len(types)} machine types" + (f" ({', '.join(better)})." if better else "."),
        "",
        "ROC curves per machine ID (legend: AUC %):",
        "",
    ]
    lines += [f"![{p}](plots/{p})" for p in plots]
    return "\n".join(lines) + "\n"


def recipe_stages(config):
    train_kw = dict(deps=("machines",), kind="train", all_processes=True)
    return (
        Stage("machines", make_machines, ("seed", "data"), outputs=("machines", "features")),
        *(Stage(s, functools.partial(train_system, s), ("seed", s), outputs=(s,), **train_kw) for s in SYSTEMS),
        Stage(
            "score",
            score,
            ("seed", "score", "ensemble", "ae_baseline", "group_made", "id_classifier"),
            deps=("machines",) + SYSTEMS,
            outputs=("scores",),
            kind="evaluate",
            systems=ALL_SYSTEMS,
        ),
    )
