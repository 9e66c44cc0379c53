"""The asr recipe's chain of stages (tsasr.pipeline.Stage), for a given config.

Data preparation -> alignment and graph -> training stages, each followed by its evaluation
stage (decode_<system>: decode and score, keyed by the decoding config and the trained
stage's key). No training stage depends on an evaluation stage, so changing a decoding
field reruns only evaluation; the one decoding field training reads (decode.prior_floor,
the prior floor of the LF-MMI chain output) is named as such in the sequence stages' keys.
With a sweep (config.sweep), the recipe runs up to `label`, then trains every grid point in
one stage and decodes them in another.
"""

from __future__ import annotations

import importlib
import pathlib

import ml_collections

from data_prep import rirs_noises
from tsasr.data import fingerprint, layout
from tsasr.pipeline import Stage
from tsasr.recipes.asr import grid as grid_lib


def _lazy(module: str, function: str, **kwargs):
    """A stage function imported when the stage runs: asking a recipe for its stages (the
    runner's --until choices, tsasr.launch) loads no JAX and no Kaldi wheel. `kwargs` go to
    the function after (config, workdir)."""

    def run(config, workdir):
        return getattr(importlib.import_module(module), function)(config, workdir, **kwargs)

    run.__name__ = f"{module}.{function}"
    return run


def _decode(system: str, reference: str | None, deps: tuple[str, ...]) -> Stage:
    def run(config, workdir):
        evaluate = importlib.import_module("tsasr.recipes.asr.evaluate")
        return evaluate.decode_stage(system, reference)(config, workdir)

    run.__name__ = f"decode_{system}"
    teachers = () if system.startswith("teacher") or system == "gmm" else ("decode_teacher_ce", "decode_teacher_seq")
    return Stage(
        f"decode_{system}",
        run,
        ("decode",),
        deps=tuple(dict.fromkeys((system, "graph", "noisify", *deps, *teachers))),  # p vs both teachers
        outputs=(f"decode/{system}",),
        all_processes=True,  # every process loads the checkpoint and decodes its share; 0 writes
        kind="evaluate",
        systems=(system,),
    )


_ASR = "tsasr.recipes.asr"
SEQUENCE_KEYS = ("seed", "sequence", "decode.prior_floor")
# A field the sequence section gained: at 0 (LF-MMI alone) a sequence stage keeps its key.
SEQUENCE_NEUTRAL = (("sequence.kld_regularize", 0.0),)


def _train(
    name: str,
    function: str,
    config_keys: tuple[str, ...],
    deps: tuple[str, ...],
    version: int,
    outputs: tuple[str, ...] = (),
    neutral: tuple[tuple[str, object], ...] = (),
) -> Stage:
    """A training stage of the recipe: run on every process, owning WORKDIR/<name> (and `outputs`)."""
    module, function = function.rsplit(".", 1)
    return Stage(
        name,
        _lazy(f"{_ASR}.{module}", function),
        config_keys,
        deps=deps,
        outputs=(name, *outputs),
        all_processes=True,
        version=version,
        kind="train",
        neutral=neutral,
    )


def _user_corpus(config) -> dict:
    """Fingerprints of the user's manifests (and their audio), or of the LibriSpeech subsets."""
    if config.corpus.source == "librispeech":
        root = pathlib.Path(config.corpus.librispeech.dir).expanduser()
        names = sorted({s.strip() for split in layout.SPLITS for s in config.corpus.librispeech[split].split(",")})
        return {name: fingerprint.directory(root / name) for name in names if name}
    if config.corpus.source != "manifest":
        return {}
    return {split: fingerprint.manifest(path) for split, path in config.corpus.manifests.items() if path}


# hmm fields only the graph (and the GMM's evaluation) read: changing the LM retrains nothing.
GRAPH_ONLY_HMM_FIELDS = ("lm_order", "lm_text", "lm_arpa", "gmm_baseline")


def _user_lexicon(config) -> dict:
    """The content of the user's lexicon file (hmm.lexicon), read by `align` and `graph`."""
    return {"lexicon": fingerprint.file(config.hmm.lexicon)} if config.hmm.get("lexicon") else {}


def _user_lm(config) -> dict:
    """The contents of the lexicon, ARPA LM and LM text files the graph is built from."""
    found = _user_lexicon(config)
    if config.hmm.get("lm_arpa"):
        found["lm_arpa"] = fingerprint.file(config.hmm.lm_arpa)
    for i, path in enumerate(config.hmm.get("lm_text", ())):
        found[f"lm_text/{i}"] = fingerprint.file(path)
    return found


def _user_noise(config) -> dict:
    return {"musan": fingerprint.directory(config.noise.musan_dir)} if config.noise.source == "musan" else {}


def _user_test_conditions(config) -> dict:
    """Fingerprints of real test recordings and of the room responses (noisify.rirs_dir) drawn from."""
    found = {name: fingerprint.manifest(path) for name, path in config.noisify.test_manifests.items() if path}
    if config.noisify.rirs_dir:
        root = rirs_noises.root_of(config.noisify.rirs_dir)
        for subset in config.noisify.rirs_subsets:
            found[f"rirs/{subset}"] = fingerprint.directory(root / rirs_noises.SUBSETS.get(subset, subset))
    return found


def second_student_name(config) -> str:
    """The system of Table 2's second CE student (labelled by student.second_teacher), or ''."""
    second = config.student.get("second_teacher", "")
    return f"student_ce_from_{second}" if second and second != config.student.teacher else ""


def second_student(config) -> tuple[Stage, ...]:
    """Table 2's other CE student: the same student recipe on student.second_teacher's labels
    (the paper trains one on the CE teacher's labels and one on the sequence-trained
    teacher's). Its own label stage and directory; nothing else depends on it."""
    name = second_student_name(config)
    if not name:
        return ()
    teacher = config.student.second_teacher
    labels = f"labels_{teacher}"
    label_keys = ("student.second_teacher", "student.label_top_k", "student.label_shards", "student.online")
    return (
        Stage(
            f"label_{teacher}",
            _lazy(f"{_ASR}.label", "run", teacher=teacher, labels=labels),
            label_keys,
            deps=("teacher_ce", "teacher_seq"),
            outputs=(labels,),
            all_processes=True,
            version=2,
        ),
        Stage(
            name,
            _lazy(f"{_ASR}.student", "run", name=name, teacher=teacher, labels=labels),
            ("seed", "student"),
            deps=(f"label_{teacher}", "noisify", "teacher_seq"),
            outputs=(name,),
            all_processes=True,
            version=2,
            kind="train",
        ),
        _decode(name, teacher, (f"decode_{teacher}",)),
    )


def recipe_stages(config: ml_collections.ConfigDict) -> tuple[Stage, ...]:
    """Every stage of the recipe in order (a sweep's stages replace the students')."""
    student_reference = config.student.teacher
    data = (
        Stage(
            "corpus",
            _lazy("data_prep.corpus", "run"),
            ("seed", "corpus"),
            outputs=("corpus",),
            version=2,
            all_processes=True,  # each process synthesises (or checks) its share of the chunks; 0 writes
            inputs=_user_corpus,
        ),
        Stage(
            "noise",
            _lazy("data_prep.noise", "run"),
            ("seed", "noise"),
            outputs=("noise",),
            all_processes=True,  # each process synthesises its share of the clips; 0 writes
            inputs=_user_noise,
        ),
        Stage(
            "noisify",
            _lazy("data_prep.noisify", "run"),
            ("seed", "noisify", "corpus.min_duration", "corpus.alphabet", "corpus.on_bad_input", "corpus.min_level_db"),
            deps=("corpus", "noise"),
            outputs=("noisy",),
            all_processes=True,  # each process mixes its share of every condition's chunks; 0 writes
            version=3,  # copies of sources below 16 kHz kept to their band (2: RIR tails, noise gains on responses)
            inputs=_user_test_conditions,
        ),
        Stage(
            "align",
            _lazy("tsasr.hmm.stages", "align"),
            tuple(f"hmm.{field}" for field in config.hmm if field not in GRAPH_ONLY_HMM_FIELDS),
            deps=("corpus",),
            outputs=("lang", "align"),
            all_processes=True,  # each process aligns its share of the utterances; 0 writes
            version=2,
            inputs=_user_lexicon,
        ),
        Stage(
            "graph",
            _lazy("tsasr.hmm.stages", "graph"),
            ("hmm",),
            deps=("align",),
            outputs=("graph",),
            version=2,
            inputs=_user_lm,
        ),
        Stage(
            "gmm",
            _lazy(f"{_ASR}.evaluate", "gmm"),
            ("hmm.gmm_baseline", "decode"),
            deps=("align", "graph", "noisify"),
            outputs=("decode/gmm",),
            all_processes=True,  # each process scores and decodes its share of the utterances; 0 writes
            version=3,  # an evaluation stage; bootstrap intervals for the GMM too
            kind="evaluate",
            systems=("gmm",),
        ),
    )
    data += (
        Stage(
            "oov",
            _lazy(f"{_ASR}.evaluate", "oov"),
            ("decode.conditions",),
            deps=("graph", "noisify"),
            kind="evaluate",
        ),
    )
    # Training stages' versions went up (CE 2, LF-MMI 3) when decoding moved to the decode_ stages.
    teacher = (
        # records/<stage>: the training set streamed with teacher.input='stream' (absent otherwise)
        _train("teacher_ce", "teacher.run", ("seed", "teacher"), ("align", "noisify"), 2, ("records/teacher_ce",)),
        _decode("teacher_ce", "gmm", ("gmm",)),
        _train("teacher_seq", "sequence.run_teacher", SEQUENCE_KEYS, ("teacher_ce",), 3, neutral=SEQUENCE_NEUTRAL),
        _decode("teacher_seq", "teacher_ce", ("decode_teacher_ce",)),
        Stage(
            "label",
            _lazy(f"{_ASR}.label", "run"),
            ("student.teacher", "student.label_top_k", "student.label_shards", "student.online"),
            deps=("teacher_ce", "teacher_seq"),
            outputs=("labels",),
            all_processes=True,
            version=2,  # CPU top-k: equal logits by lower id, as jax.lax.top_k (argpartition's order before)
        ),
    )
    if "sweep" in config:
        members = grid_lib.parse_grid(config.sweep.points)
        return (
            data
            + teacher
            + (
                _train("sweep", "sweep.run", ("seed", "student", "sweep"), ("label", "noisify"), 2),
                Stage(
                    "decode_sweep",
                    _lazy(f"{_ASR}.sweep", "decode"),
                    ("decode",),
                    deps=("sweep", "graph", "noisify", "decode_teacher_seq"),
                    outputs=tuple(f"decode/{m.system}" for m in members),
                    all_processes=True,  # every process decodes its share of each member's test sets; 0 writes
                    kind="evaluate",
                    systems=tuple(m.system for m in members),
                ),
            )
        )
    students = (
        _train(
            "student_ce",
            "student.run",
            ("seed", "student", *(("noisify",) if config.student.get("noisify") == "onthefly" else ())),
            ("label", "noisify", "teacher_seq"),
            2,
        ),
        _decode("student_ce", student_reference, (f"decode_{student_reference}",)),
        *second_student(config),
        _train(
            "student_seq",
            "sequence.run_student",
            SEQUENCE_KEYS,
            ("student_ce", "teacher_seq"),
            3,
            neutral=SEQUENCE_NEUTRAL,
        ),
        _decode("student_seq", "teacher_seq", ("decode_teacher_seq",)),
        _train(
            "multicondition_ce",
            "teacher.run_multicondition",
            ("seed", "baselines", "teacher"),
            ("align", "noisify", "teacher_ce"),
            2,
            ("records/multicondition_ce",),
        ),
        _decode("multicondition_ce", "teacher_ce", ("decode_teacher_ce",)),
        _train(
            "multicondition_seq",
            "sequence.run_multicondition",
            ("seed", "baselines") + SEQUENCE_KEYS[1:],
            ("multicondition_ce", "teacher_seq"),
            3,
            neutral=SEQUENCE_NEUTRAL,
        ),
        _decode("multicondition_seq", "teacher_seq", ("decode_teacher_seq",)),
    )
    return data + teacher + students
