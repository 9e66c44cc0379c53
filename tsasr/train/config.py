"""Training and optimizer configs, apart from the code that uses them.

Experiment files build their configs at import time; keeping these free of JAX and optax
imports keeps `python -m tsasr.run` and config loading fast.
"""

import ml_collections


def optimizer_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "adam"  # 'adam' or 'adamw' (decoupled weight decay).
    config.learning_rate = 1e-3  # Peak learning rate, reached after warmup.
    config.warmup_steps = 0  # Linear warmup from 0 to the peak.
    config.decay = "cosine"  # 'cosine', 'exponential' or 'constant' after warmup.
    config.final_fraction = 0.0  # Cosine: learning rate at the last step / peak.
    config.decay_rate = 0.5  # Exponential: factor per `decay_steps`.
    config.decay_steps = 1000  # Exponential: steps per factor of `decay_rate`.
    config.weight_decay = 0.0  # AdamW only.
    config.clip_norm = 5.0  # Global gradient-norm clipping; 0 disables.
    config.b1 = 0.9
    config.b2 = 0.999
    config.eps = 1e-8
    return config


def train_config() -> ml_collections.ConfigDict:
    """Training options; locked, so a misspelt field fails with its name."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # Parameter init and per-step dropout keys derive from it.
    config.num_steps = 1000  # Total updates (the schedule spans them).
    config.feature_dim = 64  # Input features per frame (LFBE bins).
    config.compute_dtype = "float32"  # 'bfloat16' for mixed precision on GPU/TPU.
    config.soft_top_k = 0  # Soft-target CE: keep the teacher's top k' ids; 0 = all.
    config.soft_temperature = 1.0  # Soft-target CE: teacher temperature T.
    config.checkpoint_every = 100  # Steps between checkpoints; 0 = only at the end.
    config.max_checkpoints = 3  # Checkpoints kept in the workdir.
    config.init_checkpoint = ""  # Checkpoint dir whose params start a fresh run.
    config.log_every = 10  # Steps between metrics lines.
    config.progress_bar = True  # tqdm bar with frames/s on process 0.
    config.prefetch = 2  # Batches prepared ahead on a background thread.
    config.optimizer = optimizer_config()
    config.lock()
    return config


def ce_config() -> ml_collections.ConfigDict:
    """Frame-level training of an acoustic model; sized for the built-in corpus on 2 cores."""
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(
        {  # tsasr.models: name and sizes (num_senones comes from the tree)
            "name": "tdnn",
            "hidden": 256,
            "num_layers": 4,
            "input_context": (3, 3),
            "dilations": (0, 1, 2, 0),
            "subsampling": 1,
        }
    )
    c.batch_size = 16  # utterances per global batch
    c.bucket_boundaries = (256, 512)  # padded lengths in frames (each is one compilation)
    c.heldout_percent = 5  # share of training utterances held out for frame accuracy
    c.train = train_config()  # steps, optimizer, checkpoints, precision (tsasr/train/loop.py)
    c.train.num_steps = 200  # ~4.5 epochs of the default corpus's labelled data
    c.train.checkpoint_every = 100
    c.train.log_every = 10
    c.train.optimizer.learning_rate = 2e-3
    c.train.optimizer.warmup_steps = 20
    return c


def student_config() -> ml_collections.ConfigDict:
    """Soft labels from the teacher, and the student trained on them (tsasr/distill)."""
    c = ce_config()
    c.teacher = "teacher_ce"  # the trained stage that labels (its checkpoint is loaded read-only)
    c.label_top_k = 40  # k stored per frame: the largest k any student derives from these labels; 0 = all senones
    c.label_shards = 8  # soft-label shards (hosts label disjoint shards; a kill redoes unfinished ones)
    c.top_k = 20  # k' <= label_top_k teacher senones kept per frame for this student; 0 = all (dense)
    c.temperature = 2.0  # T: targets are softmax(teacher logits[:k'] / T)
    c.hard_weight = 0.0  # w: on labelled frames the target is (1 - w) * teacher + w * one-hot(alignment)
    c.online = False  # the teacher runs inside the student's step on the clean audio; no stored labels
    c.train.num_steps = 240  # ~2.5 epochs of the default corpus's noisy training data
    return c


def sequence_config() -> ml_collections.ConfigDict:
    """Lattice-free MMI fine-tuning of the CE teacher and student (tsasr/train/sequence.py)."""
    c = ml_collections.ConfigDict()
    # Phone n-gram order of the denominator graph. Kaldi uses 4, but on the built-in corpus's
    # ~20k training phones a 4-gram leaves the competing phone sequences almost no mass
    # (-0.15 nats/frame of LM score, of which the CE teacher already wins 0.137); the
    # trigram (-0.20) keeps more to discriminate against, at the same graph size (both are
    # one chain per seen triphone). A bigram expands every (left, phone, right): 59k states.
    c.den_order = 3
    c.den_extra_histories = 500  # histories kept beyond those of order < 3 (Kaldi chain's pruning; order 4+ only)
    c.tolerance = 5  # frames a phone boundary of the alignment may move in the numerator
    c.leaky_hmm_coefficient = 0.1  # Kaldi chain's --leaky-hmm-coefficient
    # Both regularisers are off: Kaldi's are for an unnormalised chain output with its own
    # xent head; ours is the normalised, scaled log posterior of the CE model. L2 on it pulls
    # every log posterior towards the log prior, i.e. flattens the model (5e-4: clean WER
    # 9.1 -> 10.5; its gradient is 0.5x the MMI gradient's norm), and the cross-entropy term
    # trains the same output towards numerator occupancies smeared by the scale and the
    # tolerance (0.1: 2x the MMI gradient's norm; clean WER +0.3 test, +0.9 dev).
    c.l2_regularize = 0.0  # L2 on the chain output (Kaldi's --l2-regularize)
    c.xent_regularize = 0.0  # cross-entropy of the same logits towards the numerator occupancies
    c.acoustic_scale = 0.1  # chain output = scale * (log posterior - log prior): the decoder's score
    c.batch_size = 16  # utterances per global batch
    c.bucket_boundaries = (256, 512)  # padded lengths in frames
    c.train = train_config()  # steps, optimizer, checkpoints (fine-tuning: small learning rate)
    c.train.num_steps = 40
    c.train.checkpoint_every = 20
    c.train.log_every = 10
    c.train.optimizer.learning_rate = 1e-4
    c.train.optimizer.warmup_steps = 5
    return c


def baselines_config() -> ml_collections.ConfigDict:
    """Systems beside the recipe, trained only when switched on."""
    c = ml_collections.ConfigDict()
    c.multicondition = False  # the teacher's recipe (CE + LF-MMI) on the noisy labelled data, no distillation
    return c
