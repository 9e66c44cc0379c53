"""A dense layer whose weight gradient XLA's CPU backend runs on its fast matmul path.

Autodiff of rows @ kernel takes the weight gradient x^T dy as a dot contracting the row
dimension of both operands. XLA's CPU backend gives that form to Eigen, not to its YNNPACK
matmul, and for the output layer it also copies the [rows, senones] cotangent transposed.
`dense` has a hand-written VJP that materialises x^T behind an optimization barrier, so the
weight gradient is a plain matmul. On 2 AVX2 cores (bench/train_step, A/B in one process):
the TDNN's output layer 43 -> 69 GFLOP/s (its step 2 % faster), the LSTM's input
projections 4-6 % of its step, the conformer's dense layers 1-4 %. `Dense` has nn.Dense's
parameters, so checkpoints are unchanged.
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


@jax.custom_vjp
def dense(x, kernel, bias):
    """x [..., in] @ kernel [in, out] + bias [out], in x's dtype."""
    return jnp.dot(x, kernel) + bias


def _dense_fwd(x, kernel, bias):
    return dense(x, kernel, bias), (x, kernel)


def _dense_bwd(residuals, dy):
    x, kernel = residuals
    rows, dy_rows = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    dx = jax.lax.dot_general(dy_rows, kernel, (((1,), (1,)), ((), ())))
    dkernel = jnp.dot(jax.lax.optimization_barrier(rows.T), dy_rows, preferred_element_type=jnp.float32)
    dbias = jnp.sum(dy_rows.astype(jnp.float32), axis=0)
    return dx.reshape(x.shape).astype(x.dtype), dkernel.astype(kernel.dtype), dbias.astype(kernel.dtype)


dense.defvjp(_dense_fwd, _dense_bwd)


def dense_params(module: nn.Module, inputs: int, features: int, bias_init: Callable = nn.initializers.zeros):
    """Declares nn.Dense's parameters in `module`'s scope: kernel [inputs, features]
    lecun-normal and bias [features] from bias_init, both float32."""
    kernel = module.param("kernel", nn.initializers.lecun_normal(), (inputs, features), jnp.float32)
    return kernel, module.param("bias", bias_init, (features,), jnp.float32)


class DenseParams(nn.Module):
    """A named scope holding dense_params(features) for a caller that applies them itself."""

    features: int

    @nn.compact
    def __call__(self, inputs: int):
        return dense_params(self, inputs, self.features)


class Dense(nn.Module):
    """nn.Dense(features) through `dense`: the same parameters (kernel [in, features]
    lecun-normal, bias from bias_init, float32), so the same tree and initial values under
    the same name, and the same result, in the input's dtype."""

    features: int
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x):
        kernel, bias = dense_params(self, x.shape[-1], self.features, self.bias_init)
        return dense(x, kernel.astype(x.dtype), bias.astype(x.dtype))
