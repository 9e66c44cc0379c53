"""Acoustic models: output shapes, subsampling, padding invariance, LSTM gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tsasr.models import build_model, lstm, subsample_targets, subsampled_length

TINY = {
    "lstm": dict(hidden=16, num_layers=2, unroll=1),
    "tdnn": dict(hidden=16, num_layers=3, dilations=(1, 0, 2)),
    "conformer": dict(dim=16, num_layers=2, num_heads=2, conv_kernel=5),
}


def make(name, subsampling=1):
    return build_model(dict(name=name, num_senones=10, subsampling=subsampling, **TINY[name]))


def inputs(frames=11, batch=2, dim=8, seed=0):
    features = jax.random.normal(jax.random.PRNGKey(seed), (batch, frames, dim))
    paddings = jnp.zeros((batch, frames)).at[1, 7:].set(1.0)
    return features, paddings


CASES = [("lstm", 1), ("lstm", 2), ("tdnn", 1), ("tdnn", 3), ("conformer", 1), ("conformer", 3)]


@pytest.mark.parametrize("name,subsampling", CASES)
def test_shapes_and_padding_invariance(name, subsampling):
    model = make(name, subsampling)
    features, paddings = inputs()
    # Real frames must not change when 6 frames of padding are appended, filled with
    # noise, and the existing pads of row 1 are overwritten: padding content is ignored.
    extra = jax.random.normal(jax.random.PRNGKey(7), (2, 6, 8))
    longer = jnp.concatenate([features, extra], axis=1).at[1, 7:11].set(100.0)
    longer_paddings = jnp.concatenate([paddings, jnp.ones((2, 6))], axis=1)

    @jax.jit  # One compilation per case: init and both applications together.
    def run(features, paddings, longer, longer_paddings):
        variables = model.init(jax.random.PRNGKey(1), features, paddings)
        return (model.apply(variables, features, paddings), model.apply(variables, longer, longer_paddings)[0])

    (logits, out_paddings), longer_logits = run(features, paddings, longer, longer_paddings)
    frames = subsampled_length(11, subsampling)
    assert logits.shape == (2, frames, 10)
    assert out_paddings.shape == (2, frames)
    # Output frame j is real iff input frame j * subsampling is; targets subsample alike.
    _, target_paddings = subsample_targets(jnp.zeros((2, 11), jnp.int32), paddings, subsampling)
    np.testing.assert_array_equal(out_paddings, target_paddings)
    assert np.all(np.isfinite(np.asarray(logits)))
    real = np.asarray(out_paddings) < 0.5
    assert real.sum() < real.size  # The case does exercise a padded row.
    np.testing.assert_allclose(
        np.asarray(longer_logits)[:, : logits.shape[1]][real], np.asarray(logits)[real], rtol=1e-5, atol=1e-5
    )


def test_lstm_custom_vjp_matches_autodiff():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    xw = jax.random.normal(keys[0], (9, 3, 4 * 5))
    w_h = 0.5 * jax.random.normal(keys[1], (5, 4 * 5))
    probe = jax.random.normal(keys[2], (9, 3, 5))
    custom = lambda xw, w_h: jnp.sum(probe * lstm.lstm_recurrence(xw, w_h, 4))
    plain = lambda xw, w_h: jnp.sum(probe * jnp.swapaxes(lstm._forward(xw, w_h, 1)[0], 1, 2))
    custom_value, custom_grads = jax.jit(jax.value_and_grad(custom, (0, 1)))(xw, w_h)
    plain_value, plain_grads = jax.jit(jax.value_and_grad(plain, (0, 1)))(xw, w_h)
    np.testing.assert_allclose(custom_value, plain_value, rtol=1e-6)
    for got, want in zip(custom_grads, plain_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_lstm_layer_matches_float64_reference():
    """LstmLayer (feature-major scan, custom VJP) against a numpy float64 LSTM in PyTorch's
    gate order (i, f, g, o), zero initial state, on its own initialised parameters."""
    x = np.random.default_rng(0).standard_normal((2, 7, 6)).astype(np.float32)
    layer = lstm.LstmLayer(hidden=5, unroll=2)
    variables = layer.init(jax.random.PRNGKey(3), x)
    got = np.asarray(jax.jit(layer.apply)(variables, x))
    params = jax.tree.map(lambda p: np.asarray(p, np.float64), variables["params"])
    w_x, b, w_h = params["input"]["kernel"], params["input"]["bias"], params["recurrent"]
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))
    h, c, want = np.zeros((2, 5)), np.zeros((2, 5)), []
    for t in range(7):
        i, f, g, o = np.split(x[:, t].astype(np.float64) @ w_x + b + h @ w_h, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        want.append(h)
    np.testing.assert_allclose(got, np.stack(want, axis=1), rtol=1e-5, atol=1e-6)


def test_dense_is_nn_dense_with_the_same_gradients():
    """models.Dense against flax's nn.Dense: same parameter tree and initial values, same
    result, and its hand-written VJP against nn.Dense's autodiff (inputs with a time axis)."""
    import flax.linen as nn

    from tsasr.models.dense import Dense

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 4))
    probe = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 3))
    ours, flax_dense = Dense(3, bias_init=nn.initializers.ones), nn.Dense(3, bias_init=nn.initializers.ones)
    params = ours.init(jax.random.PRNGKey(2), x)
    flax_params = flax_dense.init(jax.random.PRNGKey(2), x)
    jax.tree.map(np.testing.assert_array_equal, params, flax_params)
    custom = jax.value_and_grad(lambda p, x: jnp.sum(probe * ours.apply(p, x)), (0, 1))(params, x)
    plain = jax.value_and_grad(lambda p, x: jnp.sum(probe * flax_dense.apply(p, x)), (0, 1))(params, x)
    np.testing.assert_allclose(custom[0], plain[0], rtol=1e-6)
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6), custom[1], plain[1])


def test_build_model_names_bad_fields():
    with pytest.raises(ValueError, match="unknown field 'hiden'.*'lstm'"):
        build_model(dict(name="lstm", num_senones=3, hiden=4))
    with pytest.raises(ValueError, match="unknown model name 'rnn'"):
        build_model(dict(name="rnn", num_senones=3))
    with pytest.raises(ValueError, match="subsampling factor"):
        model = build_model(dict(name="tdnn", num_senones=3, subsampling=4))
        model.init(jax.random.PRNGKey(0), *inputs())


@pytest.mark.parametrize("width", [15, 4, 1])
def test_depthwise_conv_matches_xla_convolution_and_its_gradients(width):
    """conformer.depthwise_conv (shifted sums, hand-written VJP) against a float64 numpy
    correlation, and its gradients against autodiff of XLA's grouped convolution."""
    from tsasr.models import conformer

    rng = np.random.default_rng(width)
    x = rng.standard_normal((3, 20, 6)).astype(np.float32)
    kernel = rng.standard_normal((width, 6)).astype(np.float32)
    left = (width - 1) // 2
    padded = np.pad(x.astype(np.float64), ((0, 0), (left, width - 1 - left), (0, 0)))
    expected = sum(padded[:, i : i + 20] * kernel[i].astype(np.float64) for i in range(width))
    np.testing.assert_allclose(conformer.depthwise_conv(x, kernel), expected, rtol=1e-5, atol=1e-5)

    def xla(x, kernel):
        return jax.lax.conv_general_dilated(
            x, kernel[:, None], (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=6
        )

    cotangent = rng.standard_normal(x.shape).astype(np.float32)
    ours = jax.vjp(conformer.depthwise_conv, x, kernel)[1](cotangent)
    reference = jax.vjp(xla, x, kernel)[1](cotangent)
    for got, want in zip(ours, reference):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_conformer_depthwise_layer_is_nn_conv():
    """Same parameter tree, initial weights and output as the nn.Conv it replaced."""
    import flax.linen as nn

    from tsasr.models import conformer

    x = jax.random.normal(jax.random.PRNGKey(1), (2, 9, 8))
    ours = conformer.DepthwiseConv(8, 5)
    theirs = nn.Conv(8, (5,), padding="SAME", feature_group_count=8)
    params = ours.init(jax.random.PRNGKey(0), x)
    reference = theirs.init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, reference)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-5, atol=1e-5)


def test_tdnn_layer_equals_flax_dense_relu_layernorm_and_its_gradients():
    """tdnn.dense_relu_norm (hand-written VJP) against nn.Dense -> relu -> nn.LayerNorm with
    the same parameters: outputs and every gradient; the model's parameter tree and initial
    values are those of the flax modules it replaced."""
    import flax.linen as nn

    from tsasr.models import tdnn

    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 12)).astype(np.float32)
    x[:, 0] = 40.0  # some rows relu-dead on most units, some wide
    kernel, bias = rng.standard_normal((12, 9)).astype(np.float32), rng.standard_normal(9).astype(np.float32)
    scale, offset = rng.standard_normal(9).astype(np.float32), rng.standard_normal(9).astype(np.float32)
    params = {"dense": {"kernel": kernel, "bias": bias}, "norm": {"scale": scale, "bias": offset}}

    def reference(params, x):
        y = nn.Dense(9).apply({"params": params["dense"]}, x)
        return nn.LayerNorm().apply({"params": params["norm"]}, nn.relu(y))

    def ours(params, x):
        d, n = params["dense"], params["norm"]
        return tdnn.dense_relu_norm(x, d["kernel"], d["bias"], n["scale"], n["bias"])

    np.testing.assert_allclose(ours(params, x), reference(params, x), rtol=1e-4, atol=1e-4)
    cotangent = rng.standard_normal((50, 9)).astype(np.float32)
    got = jax.vjp(ours, params, x)[1](cotangent)
    want = jax.vjp(reference, params, x)[1](cotangent)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3, err_msg=jax.tree_util.keystr(path))

    class Reference(nn.Module):  # the layers as they were written before dense_relu_norm
        @nn.compact
        def __call__(self, x):
            return nn.LayerNorm(name="norm_0")(nn.relu(nn.Dense(16, name="layer_0")(x)))

    model = build_model({"name": "tdnn", "num_senones": 10, "hidden": 16, "num_layers": 1, "input_context": (0, 0)})
    features, paddings = inputs()
    ours_init = model.init(jax.random.PRNGKey(3), features, paddings)["params"]
    ref_init = Reference().init(jax.random.PRNGKey(3), features)["params"]
    for name in ("layer_0", "norm_0"):
        assert jax.tree.map(jnp.shape, ours_init[name]) == jax.tree.map(jnp.shape, ref_init[name])
        for a, b in zip(jax.tree.leaves(ours_init[name]), jax.tree.leaves(ref_init[name])):
            np.testing.assert_array_equal(a, b)  # the same draws: the same initial model
