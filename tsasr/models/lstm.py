"""Unidirectional LSTM stack acoustic model (the paper's model family).

Speed on CPU is the point of the custom layer here. A generic `nn.RNN(LSTMCell)` runs
one [batch, in+hidden] x [in+hidden, 4*hidden] matmul per frame inside a scan, and its
autodiff accumulates dW per frame inside the reverse scan. This layer
  1. hoists the input projection x.W_x for all frames out of the scan: one big matmul
     (models.dense, whose weight gradient runs on XLA's fast CPU matmul path);
  2. scans only the recurrent product (plus the gate nonlinearities), feature-major:
     z_t = W_h^T h_t with the state h_t as [hidden, batch], so that the batch is the
     short minor dimension. XLA's CPU matmul runs this [4h, h] x [h, batch] product
     about 1.7x faster than the batch-major [batch, h] x [h, 4h] one at batch 16 (56
     against 33 GFLOP/s on 2 AVX2 cores, hidden 768), and the reverse scan's W_h dz_t
     60 against 42. Each step transposes its own [batch, 4h] slice of the input
     projections and its [4h, batch] gate gradient (small, in cache), so the layer's
     inputs and outputs stay batch-major with no big transposes;
  3. has a hand-written VJP whose reverse scan only propagates dh and dc; the weight
     gradients dW_h = sum_t h_{t-1} dz_t and dW_x are then single big matmuls.
The reverse scan is not unrolled: unrolled 8x, XLA's CPU code for it ran 1.4x slower
(153 against 110 ms at hidden 768, batch 16, 64 frames). bench/train_step lstm: 28 %
faster step than the batch-major scan.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from tsasr.models import subsampling
from tsasr.models.dense import Dense


@dataclasses.dataclass(frozen=True)
class LstmConfig:
    num_senones: int
    hidden: int = 768  # LSTM cells per layer.
    num_layers: int = 3
    subsampling: int = 1  # Frame stacking factor before the first layer: 1, 2 or 3.
    unroll: int = 2  # Frames per forward scan iteration; trades compile time for speed.


def _cell(z, c_prev):
    """Gate nonlinearities; z [4*hidden, batch], gates in order (i, f, g, o) like PyTorch."""
    i, f, g, o = jnp.split(z, 4, axis=0)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c_prev + i * g
    h = o * jnp.tanh(c)
    return h, c, jnp.concatenate([i, f, g, o], axis=0)


def _forward(xw, w_h, unroll):
    """Runs the recurrence. xw: [frames, batch, 4*hidden]; returns, feature-major and in
    float32, hs and cs [frames, hidden, batch] and the gates [frames, 4*hidden, batch]."""
    _, batch, four_hidden = xw.shape
    zeros = jnp.zeros((four_hidden // 4, batch), jnp.float32)
    w_h_t = w_h.T  # Transposed once, outside the loop.

    def step(carry, xw_t):
        h, c = carry
        z = xw_t.T.astype(jnp.float32) + jnp.dot(w_h_t, h.astype(w_h.dtype), preferred_element_type=jnp.float32)
        h, c, gates = _cell(z, c)
        return (h, c), (h, c, gates)

    _, (hs, cs, gates) = jax.lax.scan(step, (zeros, zeros), xw, unroll=unroll)
    return hs, cs, gates


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def lstm_recurrence(xw, w_h, unroll=1):
    """h_t for all frames of an LSTM with zero initial state.

    Args:
      xw: [frames, batch, 4*hidden] input projections x_t.W_x + b, gates (i, f, g, o).
      w_h: [hidden, 4*hidden] recurrent weights.
      unroll: forward scan unroll factor.

    Returns:
      [frames, batch, hidden] hidden states, in xw's dtype.
    """
    return jnp.swapaxes(_forward(xw, w_h, unroll)[0], 1, 2).astype(xw.dtype)


def _recurrence_fwd(xw, w_h, unroll):
    hs, cs, gates = _forward(xw, w_h, unroll)
    return jnp.swapaxes(hs, 1, 2).astype(xw.dtype), (hs, cs, gates, w_h)


def _recurrence_bwd(unroll, residuals, d_hs):
    del unroll  # See the module docstring: the reverse scan runs rolled.
    hs, cs, gates, w_h = residuals
    xw_dtype = d_hs.dtype  # The output, hence its cotangent, has xw's dtype.
    zeros = jnp.zeros_like(hs[0])
    c_prevs = jnp.concatenate([zeros[None], cs[:-1]], axis=0)

    def step(carry, inputs):
        dh_next, dc_next = carry
        d_h_t, c_t, c_prev, gates_t = inputs
        i, f, g, o = jnp.split(gates_t, 4, axis=0)
        dh = d_h_t.T.astype(jnp.float32) + dh_next
        tanh_c = jnp.tanh(c_t)
        dc = dc_next + dh * o * (1.0 - tanh_c**2)
        dz = jnp.concatenate(
            [
                dc * g * i * (1.0 - i),
                dc * c_prev * f * (1.0 - f),
                dc * i * (1.0 - g**2),
                dh * tanh_c * o * (1.0 - o),
            ],
            axis=0,
        )
        dh_prev = jnp.dot(w_h, dz.astype(w_h.dtype), preferred_element_type=jnp.float32)
        return (dh_prev, dc * f), dz.T

    _, dz = jax.lax.scan(step, (zeros, zeros), (d_hs, cs, c_prevs, gates), reverse=True)
    h_prevs = jnp.concatenate([zeros[None], hs[:-1]], axis=0)
    d_w_h = jnp.einsum(
        "thb,tbg->hg", h_prevs.astype(w_h.dtype), dz.astype(w_h.dtype), preferred_element_type=jnp.float32
    )
    return dz.astype(xw_dtype), d_w_h.astype(w_h.dtype)


lstm_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


class LstmLayer(nn.Module):
    """One LSTM layer over [batch, frames, features] -> [batch, frames, hidden]."""

    hidden: int
    unroll: int = 2

    @nn.compact
    def __call__(self, x):
        # Bias of the forget gate starts at 1 so early training does not forget everything.
        def bias_init(key, shape, dtype=jnp.float32):
            del key
            return jnp.zeros(shape, dtype).at[self.hidden : 2 * self.hidden].set(1.0)

        xw = Dense(4 * self.hidden, bias_init=bias_init, name="input")(x)
        w_h = self.param("recurrent", nn.initializers.orthogonal(), (self.hidden, 4 * self.hidden), jnp.float32).astype(
            xw.dtype
        )
        hs = lstm_recurrence(jnp.swapaxes(xw, 0, 1), w_h, self.unroll)
        return jnp.swapaxes(hs, 0, 1)


class Lstm(nn.Module):
    """LSTM stack -> per-frame senone logits."""

    config: LstmConfig

    @nn.compact
    def __call__(self, features, paddings, train: bool = False):
        """features [batch, frames, dim], paddings [batch, frames] (1.0 = pad) ->
        (logits [batch, frames', senones], paddings [batch, frames'])."""
        del train  # No dropout: the model is deterministic.
        x, paddings = subsampling.stack_frames(features, paddings, self.config.subsampling)
        mask = (1.0 - paddings)[..., None].astype(x.dtype)
        # Zeroed pads make a causal model's real frames independent of trailing padding.
        x = x * mask
        for i in range(self.config.num_layers):
            x = LstmLayer(self.config.hidden, self.config.unroll, name=f"lstm_{i}")(x)
        logits = nn.Dense(self.config.num_senones, name="output")(x)
        return logits, paddings
