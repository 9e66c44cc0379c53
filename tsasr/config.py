"""Experiment configs: the base recipe, the --tiny shrink, loading experiment files, overrides.

An experiment is a `.py` file whose `get_config()` returns a locked ConfigDict, usually
`base_config()` with a few fields changed. Every field has a comment saying what it is.
Command-line overrides (`--config.noisify.snr_db=0,10`) must name an existing field; a typo
fails with the closest names.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import pathlib
import types

import ml_collections

from tsasr.hmm import config as hmm_config
from tsasr.train import config as train_config


def base_config() -> ml_collections.ConfigDict:
    """The paper's recipe on the built-in corpus (DESIGN.md), sized for a 2-core CPU."""
    c = ml_collections.ConfigDict()
    c.name = "base"  # experiment name; the default workdir is runs/<name>
    c.seed = 0  # one seed for every random draw of the run (corpus, mixes, init, shuffling)
    c.workers = (
        0  # processes for data preparation, alignment and decoding; 0 = one per core (outputs never depend on it)
    )

    c.corpus = corpus = ml_collections.ConfigDict()
    corpus.source = "builtin"  # 'builtin' (espeak-ng voice-assistant corpus) or 'manifest' (your own)
    corpus.hours = 1.0  # built-in: total hours of speech over all four splits (scale to 100+ for real runs)
    corpus.num_speakers = 80  # built-in: synthetic speakers (accent x voice variant x pitch x rate), split disjointly
    corpus.split_fractions = ml_collections.ConfigDict(  # built-in: share of speakers and audio per split
        {"train_labelled": 0.35, "train_unlabelled": 0.45, "dev": 0.08, "test": 0.12}
    )
    corpus.pitch_range = (25, 75)  # built-in: espeak pitch (0-99) drawn per speaker
    corpus.rate_range = (140, 200)  # built-in: speaking rate in words per minute drawn per speaker
    corpus.manifests = ml_collections.ConfigDict(  # source='manifest': JSONL per split (id, audio, text, speaker)
        {"train_labelled": "", "train_unlabelled": "", "dev": "", "test": ""}
    )
    corpus.min_duration = 0.3  # seconds; shorter files are bad input
    corpus.alphabet = "[a-z' ]"  # characters allowed in transcripts (after lower-casing)
    corpus.on_bad_input = "skip"  # 'skip' (named in the log, counted in the summary) or 'stop'

    c.noise = noise = ml_collections.ConfigDict()
    noise.source = "builtin"  # 'builtin' (synthesised media noise) or 'musan' (a MUSAN-layout directory)
    noise.train_minutes = 12.0  # built-in: minutes of training noise
    noise.test_minutes = 4.0  # built-in: minutes of held-out test noise (disjoint clips and TV voices)
    noise.clip_seconds = 20.0  # built-in: length of each noise clip
    noise.kind_weights = (
        ml_collections.ConfigDict(  # built-in: share of each noise kind (media dominate, as in the paper)
            {"music": 0.45, "tv": 0.35, "stationary": 0.2}
        )
    )
    noise.musan_dir = ""  # source='musan': directory with music/, noise/, speech/
    noise.musan_test_percent = 20  # source='musan': share of files held out for test noise

    c.noisify = nz = ml_collections.ConfigDict()
    nz.num_noises = (1, 3)  # noise sources per utterance, inclusive range
    nz.kind_weights = ml_collections.ConfigDict(  # probability weight of each noise kind when drawing
        {"music": 0.45, "tv": 0.35, "stationary": 0.2, "noise": 0.2, "speech": 0.35}
    )
    nz.relative_level_db = (-6.0, 6.0)  # level of each noise source relative to the others, at the source
    nz.snr_db = (0.0, 20.0)  # speech-to-noise ratio of the reverberant mix, uniform
    nz.max_order = 3  # image-source order of the early reflections (the late tail is stochastic, see data_prep/rir.py)
    nz.rooms = ml_collections.ConfigDict(
        {  # training and simulated-noisy-test rooms (metres, seconds)
            "length": (3.0, 8.0),
            "width": (2.5, 6.0),
            "height": (2.4, 3.2),
            "rt60": (0.15, 0.6),
            "talker_distance": (0.5, 2.5),
            "margin": 0.3,
        }
    )
    nz.rerecorded_rooms = ml_collections.ConfigDict(
        {  # re-recorded test rooms: disjoint from training ranges
            "length": (8.5, 12.0),
            "width": (6.5, 9.0),
            "height": (3.3, 4.0),
            "rt60": (0.65, 0.9),
            "talker_distance": (1.0, 3.0),
            "margin": 0.3,
        }
    )
    nz.rerecorded_snr_db = (0.0, 20.0)  # re-recorded test: speech-to-media ratio
    nz.loudspeaker = ml_collections.ConfigDict(
        {  # re-recorded test: playback through a small loudspeaker
            "low_hz": (120.0, 250.0),
            "high_hz": (5000.0, 7200.0),
            "drive": (1.0, 2.5),
        }
    )
    nz.mic_self_noise_db = (30.0, 45.0)  # re-recorded test: speech-to-microphone-self-noise ratio
    nz.test_manifests = ml_collections.ConfigDict(  # real recordings for a test condition instead of simulation
        {"noisy": "", "rerecorded": ""}
    )

    c.hmm = hmm_config.hmm_config()  # lexicon, GMM-HMM bootstrap, senone tree, LM (tsasr/hmm/config.py)
    c.decode = hmm_config.decode_config()  # WFST decoding and scoring (tsasr/hmm/config.py)

    c.teacher = train_config.ce_config()  # teacher frame-level CE on clean labelled data (tsasr/train/teacher.py)
    c.student = train_config.student_config()  # soft labels and the student (tsasr/distill)
    c.sequence = train_config.sequence_config()  # LF-MMI for teacher and student (tsasr/train/sequence.py)
    c.baselines = train_config.baselines_config()  # systems beside the recipe (off by default)
    c.until = ""  # last stage to run ('' = all); the command line's --until wins
    return c


def tiny(config: ml_collections.ConfigDict) -> None:
    """Shrinks a config in place so the whole chain runs in about two minutes (tests, smoke runs)."""
    config.corpus.hours = 0.05
    config.corpus.num_speakers = 12
    config.noise.train_minutes = 1.0
    config.noise.test_minutes = 0.5
    config.noise.clip_seconds = 10.0
    config.hmm.update(hmm_config.hmm_config_tiny())
    config.decode.update(hmm_config.decode_config_tiny())
    config.teacher.model.update({"hidden": 128, "num_layers": 3, "dilations": (0, 1, 0)})
    config.teacher.batch_size = 8
    config.teacher.train.num_steps = 60
    config.teacher.train.checkpoint_every = 30
    config.teacher.train.log_every = 10
    config.student.model.update(config.teacher.model.to_dict())
    config.student.batch_size = 8
    config.student.label_shards = 2
    config.student.train.num_steps = 60
    config.student.train.checkpoint_every = 30
    config.student.train.log_every = 10
    config.sequence.batch_size = 8
    config.sequence.den_order = 3
    config.sequence.train.num_steps = 6
    config.sequence.train.checkpoint_every = 6
    config.sequence.train.log_every = 3
    for section in (config.teacher, config.student, config.sequence):
        section.bucket_boundaries = (256,)  # one compiled step per stage
    config.decode.beam = 11.0
    config.decode.max_active = 2000
    config.decode.bootstrap_replications = 200


def load_experiment(path: str | pathlib.Path) -> types.ModuleType:
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"experiment file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"tsasr_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"{path}: an experiment file must define get_config()")
    return module


def experiment_config(
    path: str | pathlib.Path, *, tiny_run: bool = False, overrides: list[str] = ()
) -> ml_collections.ConfigDict:
    """Loads an experiment's config, shrinks it for --tiny, applies overrides, and locks it."""
    module = load_experiment(path)
    config = module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    config.unlock()
    if config.get("name", "base") == "base":
        config.name = pathlib.Path(path).stem
    config.lock()
    if tiny_run:
        tiny(config)
    for override in overrides:
        apply_override(config, override)
    return config


def _flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        keys.append(name)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_flat_keys(value, name + "."))
    return keys


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
    """Applies 'a.b=value' (the value parsed to the existing field's type)."""
    if "=" not in override:
        raise ValueError(f"override {override!r} must look like --config.section.field=value")
    dotted, raw = override.split("=", 1)
    dotted = dotted.removeprefix("--").removeprefix("config.")
    parts = dotted.split(".")
    node = config
    for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            close = difflib.get_close_matches(dotted, _flat_keys(config), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"unknown config field {dotted!r}{hint}")
        if i < len(parts) - 1:
            node = node[part]
    current = node[parts[-1]]
    node[parts[-1]] = _parse(raw, current, dotted)


def _parse(raw: str, current, name: str):
    if isinstance(current, bool):
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"config field {name} is a bool; got {raw!r}")
    if isinstance(current, str):
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"config field {name}: cannot parse {raw!r} as {type(current).__name__}") from err
    if isinstance(current, float) and isinstance(value, int):
        value = float(value)
    if isinstance(current, tuple) and isinstance(value, (list, tuple)):
        floats = bool(current) and isinstance(current[0], float)
        value = tuple(float(v) if floats and isinstance(v, int) else v for v in value)
    if current is not None and not isinstance(value, type(current)):
        raise ValueError(f"config field {name} is {type(current).__name__}; got {raw!r}")
    return value
