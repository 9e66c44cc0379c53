"""LF-MMI cost against the acoustic model: prints one JSON object.

den_vs_model = (denominator forward-backward seconds per frame)
               / (acoustic model forward+backward seconds per frame),
on a denominator graph of realistic size: a 4-gram phone LM (1,000 extra 4-gram
histories) over 40 phones estimated from synthetic phone sequences (a sparse Markov
source, ~10 successors per phone), expanded with 3-state HMMs and a synthetic triphone
-> senone mapping of ~1,200 senones (the tree is not trained here). The model is a
6 x 1024 ReLU feed-forward net on 64-dim features with as many outputs as senones.
seq_frames_per_s is the throughput of the whole LF-MMI loss (numerator with tolerance
+ denominator, forward and backward) on the model's outputs. Each timing is the median
of `--repeats` runs after compilation.

  python bench/lfmmi.py [--batch 16] [--frames 150] [--repeats 5]
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from tsasr.hmm import den_graph
from tsasr.losses import fsa as fsa_lib
from tsasr.losses import lfmmi

NUM_PHONES = 40


def synthetic_phone_sequences(rng, num_utterances):
    successors = [rng.choice(np.arange(1, NUM_PHONES + 1), 10, replace=False) for _ in range(NUM_PHONES + 1)]
    sequences = []
    for _ in range(num_utterances):
        sequence = [int(rng.integers(1, NUM_PHONES + 1))]
        for _ in range(int(rng.integers(20, 60)) - 1):
            sequence.append(int(successors[sequence[-1]][min(int(rng.geometric(0.3)) - 1, 9)]))
        sequences.append(sequence)
    return sequences


def synthetic_senone(left, centre, right, state):
    # 10 senones per (phone, state) root, picked by a fixed hash of the context.
    return (centre * 3 + state) * 10 + (left * 7 + right * 13) % 10 - 30


def timed(fn, *args, repeats):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - begin)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sequences = synthetic_phone_sequences(rng, 3000)
    topology = den_graph.HmmTopology(num_states=lambda phone: 3)
    _, den = den_graph.denominator_graph(
        sequences, senone_of=synthetic_senone, topology=topology, order=4, num_extra_histories=1000
    )
    leak = fsa_lib.initial_log_probs(den)
    graph = lfmmi.DenominatorGraph.compile(den)  # once, on the host, as sequence training does
    num_senones = int(den.label.max()) + 1
    batch, frames = args.batch, args.frames

    # Acoustic model: 6 x 1024 ReLU layers, 64-dim input, num_senones outputs.
    sizes = [64] + [1024] * 6 + [num_senones]
    keys = jax.random.split(jax.random.PRNGKey(0), len(sizes))
    params = [(jax.random.normal(k, (a, b)) / np.sqrt(a), jnp.zeros(b)) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]
    features = jax.random.normal(keys[-1], (batch, frames, 64))
    paddings = jnp.zeros((batch, frames))

    def model(params, features):
        h = features
        for w, b in params[:-1]:
            h = jax.nn.relu(h @ w + b)
        w, b = params[-1]
        return h @ w + b

    model_step = jax.jit(jax.grad(lambda p, f: jnp.sum(model(p, f) ** 2) * 1e-6))
    outputs = model(params, features)
    den_step = jax.jit(jax.grad(lambda y: jnp.sum(lfmmi.den_log_partition(y, paddings, graph, leak, 0.1))))

    # Numerators: each utterance's alignment, a random phone/state walk with tolerance 1.
    numerators = []
    for _ in range(batch):
        senones, starts, t = [], [], 0
        while t < frames:
            starts.append(t)
            phone = int(rng.integers(1, NUM_PHONES + 1))
            for state in range(3):
                senones += [synthetic_senone(0, phone, 0, state)] * int(rng.integers(1, 5))
            t = len(senones)
        numerators.append(fsa_lib.alignment_numerator(senones[:frames], starts, tolerance=1))
    num, allowed = fsa_lib.stack_numerators(numerators, frames)
    loss_step = jax.jit(
        jax.grad(
            lambda y: lfmmi.lfmmi_loss(y, paddings, num, graph, numerator_allowed=allowed, den_leak_log_probs=leak)[0]
        )
    )

    model_s = timed(model_step, params, features, repeats=args.repeats)
    den_s = timed(den_step, outputs, repeats=args.repeats)
    loss_s = timed(loss_step, outputs, repeats=args.repeats)
    total_frames = batch * frames
    print(
        json.dumps(
            {
                "den_vs_model": round(den_s / model_s, 3),
                "seq_frames_per_s": round(total_frames / loss_s, 1),
                "den_fb_us_per_frame": round(1e6 * den_s / total_frames, 2),
                "model_fb_us_per_frame": round(1e6 * model_s / total_frames, 2),
                "lfmmi_loss_us_per_frame": round(1e6 * loss_s / total_frames, 2),
                "den_states": den.num_states,
                "den_arcs": den.num_arcs,
                "den_gathered_arcs": int(graph.fwd_dst.shape[0]),
                "den_source_classes": graph.num_classes,
                "senones": num_senones,
                "batch": batch,
                "frames": frames,
                "backend": jax.default_backend(),
                "devices": len(jax.devices()),
            }
        )
    )


if __name__ == "__main__":
    main()
