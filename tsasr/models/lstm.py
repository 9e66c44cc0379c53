"""Unidirectional LSTM stack acoustic model (the paper's model family).

Speed on CPU is the point of the custom layer here. A generic `nn.RNN(LSTMCell)` runs
one [batch, in+hidden] x [in+hidden, 4*hidden] matmul per frame inside a scan, and its
autodiff accumulates dW per frame inside the reverse scan. This layer
  1. hoists the input projection x.W_x for all frames out of the scan: one big matmul;
  2. scans only h.W_h (plus the gate nonlinearities);
  3. has a hand-written VJP whose reverse scan only propagates dh and dc; the weight
     gradients dW_h = sum_t h_{t-1}^T dz_t and dW_x are then single big matmuls.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from tsasr.models import subsampling


@dataclasses.dataclass(frozen=True)
class LstmConfig:
    num_senones: int
    hidden: int = 768  # LSTM cells per layer.
    num_layers: int = 3
    subsampling: int = 1  # Frame stacking factor before the first layer: 1, 2 or 3.
    unroll: int = 8  # Frames per scan iteration; trades compile time for speed.


def _cell(z, c_prev):
    """Gate nonlinearities; z [batch, 4*hidden] in order (i, f, g, o) like PyTorch."""
    i, f, g, o = jnp.split(z, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c_prev + i * g
    h = o * jnp.tanh(c)
    return h, c, jnp.concatenate([i, f, g, o], axis=-1)


def _forward(xw, w_h, unroll):
    """Runs the recurrence. xw: [frames, batch, 4*hidden]; returns hs, cs, gates."""
    _, batch, four_hidden = xw.shape
    hidden = four_hidden // 4
    zeros = jnp.zeros((batch, hidden), jnp.float32)

    def step(carry, xw_t):
        h, c = carry
        z = xw_t.astype(jnp.float32) + jnp.dot(h.astype(w_h.dtype), w_h, preferred_element_type=jnp.float32)
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
      unroll: scan unroll factor.

    Returns:
      [frames, batch, hidden] hidden states, in xw's dtype.
    """
    return _forward(xw, w_h, unroll)[0].astype(xw.dtype)


def _recurrence_fwd(xw, w_h, unroll):
    hs, cs, gates = _forward(xw, w_h, unroll)
    return hs.astype(xw.dtype), (hs, cs, gates, w_h)


def _recurrence_bwd(unroll, residuals, d_hs):
    hs, cs, gates, w_h = residuals
    xw_dtype = d_hs.dtype  # The output, hence its cotangent, has xw's dtype.
    zeros = jnp.zeros_like(hs[0])
    c_prevs = jnp.concatenate([zeros[None], cs[:-1]], axis=0)
    h_prevs = jnp.concatenate([zeros[None], hs[:-1]], axis=0)
    w_h_t = w_h.T

    def step(carry, inputs):
        dh_next, dc_next = carry
        d_h_t, c_t, c_prev, gates_t = inputs
        i, f, g, o = jnp.split(gates_t, 4, axis=-1)
        dh = d_h_t.astype(jnp.float32) + dh_next
        tanh_c = jnp.tanh(c_t)
        dc = dc_next + dh * o * (1.0 - tanh_c**2)
        dz = jnp.concatenate(
            [
                dc * g * i * (1.0 - i),
                dc * c_prev * f * (1.0 - f),
                dc * i * (1.0 - g**2),
                dh * tanh_c * o * (1.0 - o),
            ],
            axis=-1,
        )
        dh_prev = jnp.dot(dz.astype(w_h.dtype), w_h_t, preferred_element_type=jnp.float32)
        return (dh_prev, dc * f), dz

    _, dz = jax.lax.scan(step, (zeros, zeros), (d_hs, cs, c_prevs, gates), reverse=True, unroll=unroll)
    d_w_h = jnp.einsum(
        "tbh,tbg->hg", h_prevs.astype(w_h.dtype), dz.astype(w_h.dtype), preferred_element_type=jnp.float32
    )
    return dz.astype(xw_dtype), d_w_h.astype(w_h.dtype)


lstm_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


class LstmLayer(nn.Module):
    """One LSTM layer over [batch, frames, features] -> [batch, frames, hidden]."""

    hidden: int
    unroll: int = 8

    @nn.compact
    def __call__(self, x):
        # Bias of the forget gate starts at 1 so early training does not forget everything.
        def bias_init(key, shape, dtype=jnp.float32):
            del key
            return jnp.zeros(shape, dtype).at[self.hidden : 2 * self.hidden].set(1.0)

        xw = nn.Dense(4 * self.hidden, bias_init=bias_init, name="input")(x)
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
