"""A synthetic, learnable senone task and a tiny training CLI on it.

The senone of frame t is a fixed function of the features around t (argmax of a random
projection of frames t-1..t+1), so any of the models can learn it and a falling loss
means the trainer works. Used by the tests (several spawn the CLI: resume after
SIGKILL, multi-process runs) and as a smoke run that needs no corpus:

  python -m tsasr.train.synthetic --workdir /tmp/syn --model lstm --steps 50
"""

import argparse
import json
import os
import signal

import jax
import numpy as np

from tsasr.data import batching
from tsasr.models import build_model
from tsasr.train import loop
from tsasr.train import sharding
from tsasr.train import step as step_lib

# What a synthetic example carries: all frame-level.
BATCH_KEYS = {key: batching.FRAME for key in ("features", "senones", "soft_ids", "soft_logits")}


def synthetic_examples(
    num_utterances: int,
    seed: int = 0,
    feature_dim: int = 16,
    num_senones: int = 8,
    min_frames: int = 20,
    max_frames: int = 60,
    soft_k: int = 0,
):
    """Examples with `id`, `features` [frames, dim] and `senones` [frames] (and, when
    soft_k > 0, `soft_ids` / `soft_logits` [frames, soft_k] sorted by logit)."""
    rng = np.random.default_rng(seed)
    projection = np.random.default_rng(1234).standard_normal((3 * feature_dim, num_senones))
    examples = []
    for i in range(num_utterances):
        frames = int(rng.integers(min_frames, max_frames + 1))
        features = rng.standard_normal((frames, feature_dim)).astype(np.float32)
        padded = np.pad(features, ((1, 1), (0, 0)))
        context = np.concatenate([padded[:-2], padded[1:-1], padded[2:]], axis=1)
        scores = context @ projection
        example = {"id": f"utt{i:05d}", "features": features, "senones": np.argmax(scores, axis=1).astype(np.int32)}
        if soft_k:
            order = np.argsort(-scores, axis=1)[:, :soft_k]
            example["soft_ids"] = order.astype(np.int32)
            example["soft_logits"] = np.take_along_axis(scores, order, 1).astype(np.float16)
        examples.append(example)
    return examples


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--model", default="lstm", choices=["lstm", "tdnn", "conformer"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sigkill-at-step", type=int, default=-1, help="kill this process with SIGKILL after dispatching this step"
    )
    parser.add_argument("--init-checkpoint", default="", help="start from this checkpoint directory's params")
    parser.add_argument("--coordinator", default="", help="host:port for multi-process")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    args = parser.parse_args(argv)

    if args.num_processes > 1:
        sharding.initialize_distributed(args.coordinator, args.num_processes, args.process_id)

    feature_dim, num_senones = 16, 8
    examples = synthetic_examples(args.utterances, args.seed, feature_dim, num_senones)
    batcher = batching.Batcher(
        examples,
        batching.BatchingConfig(batch_size=args.batch_size, bucket_boundaries=(64,), seed=args.seed, keys=BATCH_KEYS),
        jax.process_index(),
        jax.process_count(),
    )
    sizes = {
        "lstm": dict(hidden=32, num_layers=2, unroll=2),
        "tdnn": dict(hidden=32, num_layers=2, dilations=(1, 0)),
        "conformer": dict(dim=32, num_layers=1, num_heads=2, conv_kernel=5),
    }
    model = build_model(dict(name=args.model, num_senones=num_senones, **sizes[args.model]))
    config = loop.default_config()
    config.seed = args.seed
    config.num_steps = args.steps
    config.feature_dim = feature_dim
    config.checkpoint_every = args.checkpoint_every
    config.init_checkpoint = args.init_checkpoint
    config.log_every = 1
    config.progress_bar = False
    config.optimizer.learning_rate = 1e-2
    config.optimizer.warmup_steps = 5

    def after_step(step):
        if step == args.sigkill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    loss_fn = step_lib.make_frame_ce_loss(model, "senones")
    state = loop.train(config, model, loss_fn, batcher, args.workdir, after_step=after_step)
    if jax.process_index() == 0:
        params = jax.device_get(state.params)
        flat = {
            jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
        }
        np.savez(os.path.join(args.workdir, "final_params.npz"), **flat)
        with open(os.path.join(args.workdir, "done.json"), "w") as f:
            json.dump({"steps": args.steps, "devices": jax.device_count(), "processes": jax.process_count()}, f)


if __name__ == "__main__":
    main()
