"""The wakeword recipe's config: every field commented."""

import ml_collections

from tsasr.train import loop

SYSTEMS = ("filler_lfbe", "monophone_lfbe", "monophone_dft")


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.recipe = "wakeword"  # tsasr/recipes/wakeword
    c.name = "wakeword"  # experiment name
    c.seed = 0  # every draw of the run (speakers, texts, noise, rooms, init, batches)
    c.workers = 2  # processes synthesising speech and noise

    c.corpus = co = ml_collections.ConfigDict()
    co.num_speakers = 120  # espeak-ng speakers (accent x voice variant, own pitch and rate), split by speaker
    co.split_fractions = ml_collections.ConfigDict({"train": 0.6, "dev": 0.15, "test": 0.25})  # speakers per split
    co.pitch_range = (30, 70)  # espeak pitch drawn per speaker, inclusive
    co.rate_range = (140, 210)  # words per minute drawn per speaker, inclusive
    co.positives = ml_collections.ConfigDict({"train": 400, "dev": 120, "test": 150})  # utterances with the wake word
    co.alone_fraction = 0.3  # share of positives that are the wake word alone (else wake word + request)
    co.background = ml_collections.ConfigDict({"train": 400})  # training sentences without the wake word
    co.streams = ml_collections.ConfigDict({"train": 0, "dev": 12, "test": 30})  # negative streams (false alarms)
    co.stream_sentences = 25  # sentences per negative stream, joined by 0.3-1.5 s pauses
    co.confusable_fraction = 0.25  # share of sentences without the wake word that hold a confusable word
    co.noise_clips = ml_collections.ConfigDict({"music": 3, "stationary": 3, "tv": 1})  # clips per noise split
    co.noise_seconds = 20.0  # length of each noise clip
    co.user_manifest = ""  # JSONL of a user's recordings (id, audio, wake_start, wake_end): scored as condition 'user'

    c.noisy = nz = ml_collections.ConfigDict()  # the noisy condition (data_prep.noisify's mix)
    nz.num_noises = (1, 2)  # noise sources per item, inclusive
    nz.kind_weights = ml_collections.ConfigDict({"music": 0.45, "tv": 0.35, "stationary": 0.2})  # weight of each kind
    nz.relative_level_db = (-6.0, 6.0)  # level of each noise relative to the others, at the source
    nz.snr_db = (0.0, 15.0)  # speech-to-noise ratio of the reverberant mix, uniform
    nz.max_order = 2  # image-source order of the early reflections
    nz.rooms = ml_collections.ConfigDict(
        {  # rooms (metres, seconds)
            "length": (3.0, 8.0),
            "width": (2.5, 6.0),
            "height": (2.4, 3.2),
            "rt60": (0.15, 0.5),
            "talker_distance": (0.5, 2.5),
            "margin": 0.3,
        }
    )
    nz.user = False  # also score a noisy copy of the user's recordings

    c.spotter = sp = ml_collections.ConfigDict()  # stage 1
    sp.systems = SYSTEMS  # <background>_<front end> trained and scored: background monophone|filler, front end lfbe|dft
    sp.states_per_phone = 1  # wake-word HMM states per phone (equal parts of the phone's time span)
    sp.net = ml_collections.ConfigDict(
        {
            "bottleneck": 24,  # DFT system's bottleneck (learned filterbank); LFBE's is widened to the same parameters
            "window": (-12, -8, -4, -2, 0, 2, 4),  # time-delayed window (frame offsets); max = latency in frames
            "hidden": 64,  # units of the ReLU and highway layers
            "highway_layers": 2,  # highway layers
        }
    )
    sp.batch_size = 16  # items per training batch
    sp.buckets = (128, 256, 512)  # padded lengths (frames)
    sp.train = loop.default_config()  # tsasr.train options (steps, optimizer, checkpoints)
    sp.train.num_steps = 1000
    sp.train.checkpoint_every = 250
    sp.train.log_every = 100
    sp.train.progress_bar = False
    sp.train.optimizer.learning_rate = 3e-3
    sp.train.optimizer.warmup_steps = 50

    c.stage2 = s2 = ml_collections.ConfigDict()  # the second-stage classifier
    s2.systems = ("monophone_lfbe", "monophone_dft")  # stage-1 systems given a stage 2 (rows <system>_stage2)
    s2.first_stage_frr = 1.0  # % of dev positives stage 1 may reject: sets its loose threshold θ1 on dev
    s2.peak_frames = 20  # frames after an alarm searched for the score's peak (stage 2's extra latency)
    s2.c = 1.0  # inverse L2 strength of the logistic regression

    c.evaluate = ev = ml_collections.ConfigDict()  # metrics (fixed before any run; never tuned on test)
    ev.debounce = 50  # frames after an alarm in which no other alarm fires
    ev.tolerance = 0.5  # seconds after a wake word's end in which its detection still counts
    ev.target_fa_per_hour = 5.0  # operating point of frr_at_fa
    ev.target_frr = 5.0  # operating point (%) of fa_per_hour_at_frr
    ev.fa_max = 20.0  # det_area: mean FRR (%) over FA/h in [0, fa_max]
    ev.replications = 200  # bootstrap resamples (positives and negative streams) for 95 % intervals
    return c


def tiny(c: ml_collections.ConfigDict) -> None:
    """A smoke run: a handful of speakers and items, a few training steps."""
    c.corpus.num_speakers = 9
    c.corpus.positives = ml_collections.ConfigDict({"train": 12, "dev": 6, "test": 6})
    c.corpus.background = ml_collections.ConfigDict({"train": 8})
    c.corpus.streams = ml_collections.ConfigDict({"train": 0, "dev": 2, "test": 2})
    c.corpus.stream_sentences = 3
    c.corpus.noise_clips = ml_collections.ConfigDict({"music": 1, "stationary": 1, "tv": 0})
    c.corpus.noise_seconds = 5.0
    c.spotter.train.num_steps = 6
    c.spotter.train.checkpoint_every = 3
    c.spotter.train.log_every = 3
    c.spotter.train.optimizer.warmup_steps = 0
    c.spotter.batch_size = 4
    c.evaluate.replications = 10
