"""Training-step throughput of the acoustic models: JAX vs PyTorch, and MFU.

Prints ONE JSON object: per model (`lstm` 3x768, `tdnn` 6x1024 feed-forward with +-5
frames spliced at the input, `conformer` 6 x 256-dim), `frames_per_s` of a full
training step (forward, frame CE, backward, Adam with clipping), `mfu` (model FLOPs/s
over the FLOP/s of a large matmul in the compute dtype, measured in this process) and
`vs_torch` (JAX frames/s / PyTorch frames/s for the same model, loss and optimizer,
measured in alternating rounds in this process; null with a reason when torch is absent).

Model FLOPs are counted analytically: 3x the forward matmul/conv/attention FLOPs
(forward + two backward products), elementwise work excluded, as MFU is usually defined.

  python bench/train_step.py [--rounds 3] [--steps 3] [--models lstm,tdnn,conformer]
  python bench/train_step.py --dtype bfloat16 --batch-scale 16 --steps 20   # on a GPU

On a GPU both frameworks run there: JAX with tsasr's mixed precision (bf16 compute, f32
params and optimizer, `--dtype bfloat16`), torch with `torch.autocast` to the same dtype;
in float32 both may use TF32 matmuls (XLA's default on GPU; torch is told to allow it).
A GPU step is timed as the mean of `--steps` back-to-back steps (dispatch is asynchronous,
as in training); a CPU step as the fastest single step. `--batch-scale` multiplies the
batch sizes below, since the CPU sizes leave a GPU mostly idle.

Like `python -m tsasr.run`, the benchmark first sets glibc's malloc to keep and reuse freed
memory (tsasr.train.malloc; TSASR_MALLOC_TUNING=0 turns it off). It applies to torch too,
which runs in the same process.

`torch_peak_matmul_flops_per_s` (the same 2048^2 f32 matmul in torch) and
`matmul_vs_torch` put vs_torch in context: on a CPU where XLA's matmul kernels are slower
than torch's, no model can reach vs_torch = 1 by its own code alone. XLA CPU options
(e.g. XNNPACK/oneDNN dot fusions) are taken from the environment's XLA_FLAGS and recorded
in the JSON.

A benchmark, never a test: numbers depend on the machine and its load.
"""

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from tsasr.models import build_model
from tsasr.recipes.asr import objectives
from tsasr.train import malloc, optim, sharding, state as state_lib, step as step_lib

FEATURE_DIM = 64
SENONES = 2000
MODELS = {
    "lstm": dict(size=dict(hidden=768, num_layers=3), batch=16, frames=64),
    "tdnn": dict(size=dict(hidden=1024, num_layers=6, input_context=(5, 5)), batch=32, frames=64),
    "conformer": dict(
        size=dict(dim=256, num_layers=6, num_heads=4, ff_multiplier=4, conv_kernel=15), batch=8, frames=128
    ),
}


def forward_flops(name, size, batch, frames):
    """Matmul/conv/attention FLOPs of one forward pass over batch x frames."""
    n = batch * frames
    if name == "lstm":
        h, inputs, total = size["hidden"], FEATURE_DIM, 0
        for _ in range(size["num_layers"]):
            total += 2 * n * (inputs + h) * 4 * h
            inputs = h
        return total + 2 * n * h * SENONES
    if name == "tdnn":
        h = size["hidden"]
        inputs = FEATURE_DIM * (sum(size["input_context"]) + 1)
        total = 2 * n * inputs * h + 2 * n * h * h * (size["num_layers"] - 1)
        return total + 2 * n * h * SENONES
    d, ff = size["dim"], size["dim"] * size["ff_multiplier"]
    per_layer = (
        2 * 2 * n * d * ff * 2  # Two feed-forward modules, two matmuls each.
        + 2 * n * d * 4 * d  # Q, K, V, output projections.
        + 2 * 2 * batch * frames * frames * d  # Scores and weighted values.
        + 2 * n * d * 2 * d
        + 2 * n * d * d  # Conv module pointwise.
        + 2 * n * d * size["conv_kernel"]
    )  # Depthwise convolution.
    return 2 * n * FEATURE_DIM * d + size["num_layers"] * per_layer + 2 * n * d * SENONES


def on_gpu():
    return jax.default_backend() == "gpu"


def matmul_size():
    return 8192 if on_gpu() else 2048


def matmul_peak(dtype, repeats=5):
    """FLOP/s of a large matmul in `dtype` on this machine, now (random operands)."""
    size = matmul_size()
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def torch_matmul_peak(torch, dtype, device, repeats=5):
    """FLOP/s of the same matmul in torch."""
    size = matmul_size()
    a = torch.randn((size, size), dtype=getattr(torch, dtype), device=device)
    torch.mm(a, a)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, a)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def synthetic_batch(batch, frames, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "features": rng.standard_normal((batch, frames, FEATURE_DIM)).astype(np.float32),
        "feature_paddings": np.zeros((batch, frames), np.float32),
        "senones": rng.integers(0, SENONES, (batch, frames)).astype(np.int32),
    }


class JaxRunner:
    """The real tsasr train step (jitted, donated state), on all local devices."""

    def __init__(self, name, spec, dtype):
        self.model = build_model(dict(name=name, num_senones=SENONES, **spec["size"]))
        mesh = sharding.data_mesh()
        tx, schedule = optim.make_optimizer(optim.default_config(), 1000)
        params = jax.jit(self.model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8, FEATURE_DIM)), jnp.zeros((1, 8)))
        self.state = jax.device_put(state_lib.create(params["params"], tx), sharding.replicated(mesh))
        self.batch = sharding.global_batch(synthetic_batch(spec["batch"], spec["frames"]), mesh)
        self.rng = jax.random.PRNGKey(1)
        step = step_lib.make_train_step(
            objectives.make_loss_fn(self.model, 1, step_lib.compute_dtype(dtype)), tx, schedule
        )
        self.step = step_lib.jit_train_step(step, mesh).lower(self.state, self.batch, self.rng).compile()
        self.run(2)

    def run(self, steps):
        for _ in range(steps):
            self.state, measurements = self.step(self.state, self.batch, self.rng)
        jax.block_until_ready(measurements["loss"])


def torch_runner(name, spec, dtype, device):
    """The same model, loss and optimizer in PyTorch; returns run(steps)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    size = spec["size"]

    class Splice(nn.Module):
        def __init__(self, left, right):
            super().__init__()
            self.left, self.right = left, right

        def forward(self, x):  # [batch, frames, dim] -> [batch, frames, context * dim]
            frames = x.shape[1]
            padded = nn.functional.pad(x, (0, 0, self.left, self.right))
            return torch.cat([padded[:, o : o + frames] for o in range(self.left + self.right + 1)], dim=-1)

    class Lstm(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(FEATURE_DIM, size["hidden"], size["num_layers"], batch_first=True)
            self.output = nn.Linear(size["hidden"], SENONES)

        def forward(self, x):
            return self.output(self.lstm(x)[0])

    class ConvModule(nn.Module):
        def __init__(self, d, kernel):
            super().__init__()
            self.norm, self.pointwise = nn.LayerNorm(d), nn.Linear(d, 2 * d)
            self.depthwise = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
            self.norm2, self.out = nn.LayerNorm(d), nn.Linear(d, d)

        def forward(self, x):
            y = nn.functional.glu(self.pointwise(self.norm(x)), dim=-1)
            y = self.depthwise(y.transpose(1, 2)).transpose(1, 2)
            return self.out(nn.functional.silu(self.norm2(y)))

    class Block(nn.Module):
        def __init__(self, d, heads, ff, kernel):
            super().__init__()
            make_ff = lambda: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, ff), nn.SiLU(), nn.Linear(ff, d))
            self.ff_in, self.ff_out = make_ff(), make_ff()
            self.attention_norm = nn.LayerNorm(d)
            self.attention = nn.MultiheadAttention(d, heads, batch_first=True)
            self.conv, self.norm = ConvModule(d, kernel), nn.LayerNorm(d)

        def forward(self, x):
            x = x + 0.5 * self.ff_in(x)
            y = self.attention_norm(x)
            x = x + self.attention(y, y, y, need_weights=False)[0]
            x = x + self.conv(x)
            return self.norm(x + 0.5 * self.ff_out(x))

    if name == "lstm":
        model = Lstm()
    elif name == "tdnn":
        layers, inputs = [Splice(*size["input_context"])], FEATURE_DIM * (sum(size["input_context"]) + 1)
        for _ in range(size["num_layers"]):
            layers += [nn.Linear(inputs, size["hidden"]), nn.ReLU(), nn.LayerNorm(size["hidden"])]
            inputs = size["hidden"]
        model = nn.Sequential(*layers, nn.Linear(inputs, SENONES))
    else:
        d = size["dim"]
        model = nn.Sequential(
            nn.Linear(FEATURE_DIM, d),
            *[
                Block(d, size["num_heads"], d * size["ff_multiplier"], size["conv_kernel"])
                for _ in range(size["num_layers"])
            ],
            nn.Linear(d, SENONES),
        )
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = synthetic_batch(spec["batch"], spec["frames"])
    features = torch.from_numpy(batch["features"]).to(device)
    senones = torch.from_numpy(batch["senones"]).long().to(device)
    autocast = torch.autocast(device, dtype=getattr(torch, dtype), enabled=dtype != "float32")

    def run(steps):
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                logits = model(features)
            loss = nn.functional.cross_entropy(logits.float().reshape(-1, SENONES), senones.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    run(2)
    return run


def step_seconds(run, steps):
    """Seconds per step: on a GPU the mean of `steps` back-to-back steps; on a CPU the
    fastest of `steps` single steps, the least disturbed by other load."""
    if on_gpu():
        start = time.perf_counter()
        run(steps)
        return (time.perf_counter() - start) / steps
    best = float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        run(1)
        best = min(best, time.perf_counter() - start)
    return best


def main():
    tuned = malloc.tune()  # as tsasr.run does, before JAX starts its threads
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--steps", type=int, default=3, help="steps per round: the fastest single one counts (CPU), their mean (GPU)"
    )
    parser.add_argument("--models", default="lstm,tdnn,conformer")
    parser.add_argument("--dtype", default="float32", choices=sorted(step_lib.COMPUTE_DTYPES))
    parser.add_argument("--batch-scale", type=int, default=1, help="multiplies every model's batch size")
    args = parser.parse_args()
    device = "cuda" if on_gpu() else "cpu"
    try:
        import torch

        torch.set_num_threads(os.cpu_count())
        if device == "cuda" and not torch.cuda.is_available():
            torch, torch_reason = None, "JAX runs on a GPU that this torch build cannot use"
        else:
            torch_reason = None
            torch.backends.cuda.matmul.allow_tf32 = True  # XLA's default precision on GPU.
    except ImportError:
        torch, torch_reason = None, "torch is not installed (pip install torch==2.13.0)"

    peak = matmul_peak(args.dtype)
    torch_peak = torch_matmul_peak(torch, args.dtype, device) if torch else None
    result = {
        "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
        "backend": jax.default_backend(),
        "versions": {"jax": jax.__version__, "torch": torch.__version__ if torch else None},
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "malloc_tuned": tuned,
        "dtype": args.dtype,
        "batch_scale": args.batch_scale,
        "senones": SENONES,
        "peak_matmul_size": matmul_size(),
        "peak_matmul_flops_per_s": peak,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
    }
    for name in args.models.split(","):
        spec = {**MODELS[name], "batch": MODELS[name]["batch"] * args.batch_scale}
        frames = spec["batch"] * spec["frames"]
        jax_runner = JaxRunner(name, spec, args.dtype)
        run_torch = torch_runner(name, spec, args.dtype, device) if torch else None
        jax_time = torch_time = float("inf")
        for _ in range(args.rounds):
            # Alternate JAX, torch and the matmul peak so that all three see the same
            # background load, and keep each one's best: the machine may be shared.
            jax_time = min(jax_time, step_seconds(jax_runner.run, args.steps))
            if run_torch:
                torch_time = min(torch_time, step_seconds(run_torch, args.steps))
            peak = max(peak, matmul_peak(args.dtype))
            if torch:
                torch_peak = max(torch_peak, torch_matmul_peak(torch, args.dtype, device))
        jax_fps = frames / jax_time
        model_flops = 3 * forward_flops(name, spec["size"], spec["batch"], spec["frames"])
        entry = {
            "size": spec["size"],
            "batch": spec["batch"],
            "frames": spec["frames"],
            "frames_per_s": jax_fps,
            "model_flops_per_s": model_flops / jax_time,
            "model_gflops_per_step": model_flops / 1e9,
        }
        if run_torch:
            torch_fps = frames / torch_time
            entry.update(torch_frames_per_s=torch_fps, vs_torch=jax_fps / torch_fps)
        else:
            entry.update(vs_torch=None, vs_torch_reason=torch_reason)
        result[name] = entry
        del jax_runner, run_torch
    # MFU against the best peak seen over the whole run.
    result["peak_matmul_flops_per_s"] = peak
    if torch:
        result.update(torch_peak_matmul_flops_per_s=torch_peak, matmul_vs_torch=peak / torch_peak)
    for name in args.models.split(","):
        result[name]["mfu"] = result[name]["model_flops_per_s"] / peak
    print(json.dumps(result))


if __name__ == "__main__":
    main()
