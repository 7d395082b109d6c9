"""jaxtd.nn: factorized conv and dense layers, data-aware fits, costs, budgets, EVBMF."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DTYPES, TOL, rel_diff

from jaxtd import nn

DN = ("NHWC", "HWIO", "NHWC")
# One kernel shape and one pair of ranks for every conv test, so that compiled fits are
# shared across parametrizations.
KSHAPE = (3, 3, 6, 8)
RANKS = {"cp": 5, "tucker2": (4, 3)}


def conv(x, kernel, strides=(1, 1), padding="SAME", dilation=(1, 1)):
    return jax.lax.conv_general_dilated(
        x, kernel, strides, padding, rhs_dilation=dilation, dimension_numbers=DN
    )


@functools.cache
def kernel(dtype):
    return jnp.asarray(np.random.default_rng(0).standard_normal(KSHAPE), dtype)


@functools.cache
def weight_fit(kind, dtype):
    return nn.decompose_conv(kernel(dtype), RANKS[kind], kind=kind)


def channel_structured(n, mixing, rng):
    """Activations whose channels are mostly a mix of two smooth latent maps."""
    z = rng.standard_normal((n, 9, 9, mixing.shape[0]))
    z = z + np.roll(z, 1, axis=1) + np.roll(z, 1, axis=2)  # spatially correlated
    return z @ mixing + 0.05 * rng.standard_normal((n, 9, 9, mixing.shape[1]))


# ----------------------------------------------------------------- conv equivalence


CONV_SETTINGS = [((2, 2), (1, 1)), ((2, 1), (1, 2))]  # (strides, dilation)


def check_chain(layer, x, padding, settings):
    dense = nn.dense_kernel(layer)
    assert dense.shape == KSHAPE and dense.dtype == x.dtype
    for strides, dilation in settings:
        y = nn.factorized_conv(x, layer, strides=strides, padding=padding, rhs_dilation=dilation)
        ref = conv(x, dense, strides, padding, dilation)
        assert y.shape == ref.shape and y.dtype == x.dtype
        assert rel_diff(y, ref) < 10 * TOL[x.dtype.type]["exact"], (strides, dilation)


@pytest.mark.parametrize("kind", ["cp", "tucker2"])
@pytest.mark.parametrize("padding", ["SAME", "VALID", ((2, 0), (1, 3))])
def test_factorized_conv_equals_conv_with_dense_kernel(kind, padding):
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 9, 8, 6)))
    check_chain(weight_fit(kind, np.float64), x, padding, CONV_SETTINGS)


@pytest.mark.parametrize("kind", ["cp", "tucker2"])
def test_factorized_conv_keeps_float32(kind):
    layer = weight_fit(kind, np.float32)
    assert all(leaf.dtype == np.float32 for leaf in layer)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 9, 8, 6)), np.float32)
    check_chain(layer, x, "SAME", CONV_SETTINGS[:1])


def test_cp_layer_spells_out_the_chain():
    """dense_kernel follows the documented formula, and scalar strides mean both axes."""
    layer = weight_fit("cp", np.float64)
    expected = np.einsum("ir,hr,wr,ro->hwio", *map(np.asarray, layer))
    np.testing.assert_allclose(nn.dense_kernel(layer), expected, rtol=1e-12)
    x = jnp.ones((1, 6, 6, 6))
    np.testing.assert_array_equal(
        nn.factorized_conv(x, layer, strides=2), nn.factorized_conv(x, layer, strides=(2, 2))
    )


@pytest.mark.parametrize("kind", ["cp", "tucker2"])
def test_weight_fit_recovers_a_planted_kernel(kind):
    rng = np.random.default_rng(2)
    if kind == "cp":
        factors = [rng.standard_normal((n, 5)) for n in KSHAPE]
        planted = np.einsum("hr,wr,ir,or->hwio", *factors)
    else:
        core = rng.standard_normal((3, 3, 3, 4))
        f_in, f_out = rng.standard_normal((6, 3)), rng.standard_normal((8, 4))
        planted = np.einsum("hwab,ia,ob->hwio", core, f_in, f_out)
    layer = nn.decompose_conv(jnp.asarray(planted), RANKS[kind], kind=kind, tol=1e-12)
    assert rel_diff(nn.dense_kernel(layer), planted) < TOL[np.float64]["recover"]


def test_weight_fit_is_deterministic_and_compiles_once():
    k = kernel(np.float64)
    first = nn.decompose_conv(k, RANKS["cp"])
    size = nn._weight_fit._cache_size()
    again = nn.decompose_conv(k + 0.0, RANKS["cp"])
    assert nn._weight_fit._cache_size() == size
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_decompose_conv_under_jit_and_grad_through_the_chain():
    k = kernel(np.float64)
    layer = jax.jit(lambda k: nn.decompose_conv(k, RANKS["tucker2"], kind="tucker2"))(k)
    for a, b in zip(layer, weight_fit("tucker2", np.float64)):
        np.testing.assert_allclose(a, b, atol=1e-10)
    x = jnp.ones((1, 5, 5, 6))
    grads = jax.grad(lambda lay: jnp.sum(nn.factorized_conv(x, lay) ** 2))(layer)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


# ------------------------------------------------------------------- data-aware fit


def test_patch_moment_gives_the_feature_map_error():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((3, 9, 8, 6)))
    k1, k2 = (jnp.asarray(rng.standard_normal(KSHAPE)) for _ in range(2))
    for strides, padding, dilation in [((2, 1), "SAME", (1, 2)), ((1, 2), "VALID", (2, 1))]:
        s = nn.patch_moment(x, (3, 3), strides=strides, padding=padding, rhs_dilation=dilation)
        diff = conv(x, k1, strides, padding, dilation) - conv(x, k2, strides, padding, dilation)
        delta = (k1 - k2).reshape(-1, KSHAPE[3])
        np.testing.assert_allclose(jnp.vdot(diff, diff), jnp.trace(delta.T @ s @ delta), rtol=1e-10)


@pytest.mark.parametrize("kind, dtype", [("cp", np.float64), ("tucker2", np.float32)])
def test_data_aware_fit_beats_weight_fit_on_held_out_inputs(kind, dtype):
    """Calibration and held-out activations share a low-rank channel structure, as trained
    networks' activations do: the data-aware fit spends its rank where the data lives."""
    rng = np.random.default_rng(4)
    k = kernel(dtype)
    mixing = rng.standard_normal((2, KSHAPE[2]))
    calibration = jnp.asarray(channel_structured(24, mixing, rng), dtype)
    held_out = jnp.asarray(channel_structured(24, mixing, rng), dtype)
    settings = dict(strides=(2, 2), padding="SAME")
    data = nn.decompose_conv(k, RANKS[kind], kind=kind, inputs=calibration, **settings)
    assert all(leaf.dtype == dtype for leaf in data)
    weights = weight_fit(kind, dtype)
    ref = conv(held_out, k, (2, 2))

    def error(layer):
        return rel_diff(nn.factorized_conv(held_out, layer, **settings), ref)

    assert error(data) < 0.6 * error(weights), (error(data), error(weights))


# -------------------------------------------------------------------------- dense


@pytest.mark.parametrize("dtype", DTYPES)
def test_full_rank_svd_reproduces_the_weight(dtype):
    w = jnp.asarray(np.random.default_rng(6).standard_normal((12, 8)), dtype)
    layer = nn.decompose_dense(w, 8)
    assert layer.first.shape == (12, 8) and layer.last.shape == (8, 8)
    assert all(leaf.dtype == dtype for leaf in layer)
    assert rel_diff(nn.dense_matrix(layer), w) < 10 * TOL[dtype]["exact"]


@pytest.mark.parametrize(
    "kind, rank", [("svd", 3), ("cp", 3), ("tucker", (2, 3, 2, 2))], ids=["svd", "cp", "tucker"]
)
def test_factorized_dense_equals_x_times_dense_matrix(kind, rank):
    rng = np.random.default_rng(7)
    w = jnp.asarray(rng.standard_normal((12, 8)))
    shape = None if kind == "svd" else ((3, 4), (2, 4))
    layer = nn.decompose_dense(w, rank, kind=kind, shape=shape, key=jax.random.key(0))
    x = jnp.asarray(rng.standard_normal((2, 5, 12)))
    y = nn.factorized_dense(x, layer)
    assert y.shape == (2, 5, 8)
    assert rel_diff(y, x @ nn.dense_matrix(layer)) < 10 * TOL[np.float64]["exact"]
    # and the factorization approximates w (the best rank-3 SVD error bounds nothing for
    # the multi-mode models, so only check that they explain most of w's energy at all)
    assert rel_diff(nn.dense_matrix(layer), w) < 1.0


# -------------------------------------------------------------------------- costs


def test_costs_by_hand():
    # Input 8×8, stride 2, SAME → output 4×4.
    k = dict(in_hw=(8, 8), strides=2)
    assert nn.conv_costs(KSHAPE[:2] + (4, 6), **k) == nn.Costs(216, 2 * 16 * 216)
    cp = nn.CPConv(jnp.ones((4, 5)), jnp.ones((3, 5)), jnp.ones((3, 5)), jnp.ones((5, 6)))
    # 1×1 on 8×8: 64·4·5; vertical on 4×8: 32·3·5; horizontal on 4×4: 16·3·5; 1×1: 16·5·6
    assert nn.conv_costs(cp, **k) == nn.Costs(5 * (4 + 3 + 3 + 6), 2 * (1280 + 480 + 240 + 480))
    tk = nn.Tucker2Conv(jnp.ones((4, 2)), jnp.ones((3, 3, 2, 3)), jnp.ones((3, 6)))
    assert nn.conv_costs(tk, **k) == nn.Costs(8 + 54 + 18, 2 * (64 * 4 * 2 + 16 * 54 + 16 * 18))
    assert nn.dense_costs((12, 8)) == nn.Costs(96, 192)
    assert nn.dense_costs(nn.SVDDense(jnp.ones((12, 2)), jnp.ones((2, 8)))) == nn.Costs(40, 80)
    cpd = nn.CPDense((jnp.ones((3, 2)), jnp.ones((4, 2))), (jnp.ones((2, 2)), jnp.ones((4, 2))))
    # in: 12·2 + 4·2; out: 2·2 expansion + 8·2 contraction
    assert nn.dense_costs(cpd) == nn.Costs(2 * 13, 2 * (24 + 8 + 4 + 16))
    tkd = nn.TuckerDense(
        jnp.ones((2, 3, 1, 2)),
        (jnp.ones((3, 2)), jnp.ones((4, 3))),
        (jnp.ones((2, 1)), jnp.ones((4, 2))),
    )
    # in: 12·2 + 4·6; core: 6·2; out: 2·2 + 2·8
    assert nn.dense_costs(tkd) == nn.Costs(12 + 18 + 10, 2 * (24 + 24 + 12 + 4 + 16))


def test_costs_count_every_weight():
    for layer in (weight_fit("cp", np.float64), weight_fit("tucker2", np.float64)):
        assert nn.conv_costs(layer).params == sum(leaf.size for leaf in layer)


def layer_costs(shape, kind, rank, extra):
    """Costs of the factorized layer at ``rank``, through the public cost functions."""
    conv_args = {k: v for k, v in extra.items() if k != "shape"}

    def spec(*dims):
        return jax.ShapeDtypeStruct(dims, np.float32)

    if len(shape) == 4:
        kh, kw, cin, cout = shape
        if kind == "cp":
            layer = nn.CPConv(spec(cin, rank), spec(kh, rank), spec(kw, rank), spec(rank, cout))
        else:
            r_out, r_in = rank
            layer = nn.Tucker2Conv(spec(cin, r_in), spec(kh, kw, r_in, r_out), spec(r_out, cout))
        return nn.conv_costs(layer, **conv_args)
    if kind == "svd":
        return nn.dense_costs(nn.SVDDense(spec(shape[0], rank), spec(rank, shape[1])))
    in_shape, out_shape = extra["shape"]
    if kind == "cp":
        ins, outs = (tuple(spec(n, rank) for n in sizes) for sizes in (in_shape, out_shape))
        return nn.dense_costs(nn.CPDense(ins, outs))
    a = len(in_shape)
    ins = tuple(spec(n, r) for n, r in zip(in_shape, rank[:a]))
    outs = tuple(spec(n, r) for n, r in zip(out_shape, rank[a:]))
    return nn.dense_costs(nn.TuckerDense(spec(*rank), ins, outs))


def next_rank(shape, kind, rank, extra):
    """The next rank along the path rank_for_budget searches."""
    if kind == "tucker2":
        cin, cout = shape[2:]
        return (rank[0] + 1, min(cin, max(1, round((rank[0] + 1) * cin / cout))))
    if kind == "tucker":
        sizes = extra["shape"][0] + extra["shape"][1]
        return tuple(min(max(rank) + 1, n) for n in sizes)
    return rank + 1


@pytest.mark.parametrize(
    "shape, kind, extra",
    [
        ((3, 3, 32, 48), "cp", {}),
        ((3, 3, 32, 48), "tucker2", {}),
        ((3, 3, 32, 48), "cp", dict(in_hw=(16, 16), strides=2)),
        ((3, 3, 32, 48), "tucker2", dict(in_hw=(16, 16))),
        ((64, 48), "svd", {}),
        ((64, 48), "cp", dict(shape=((8, 8), (6, 8)))),
        ((64, 48), "tucker", dict(shape=((8, 8), (6, 8)))),
    ],
)
def test_rank_for_budget_is_the_largest_that_fits(shape, kind, extra):
    ratio = 0.3
    conv_args = {k: v for k, v in extra.items() if k != "shape"}
    original = nn.conv_costs(shape, **conv_args) if len(shape) == 4 else nn.dense_costs(shape)
    with_flops = len(shape) == 2 or "in_hw" in extra  # a dense layer always has FLOPs
    rank = nn.rank_for_budget(shape, kind, ratio=ratio, **extra)
    got = layer_costs(shape, kind, rank, extra)
    assert got.params <= ratio * original.params
    assert not with_flops or got.flops <= ratio * original.flops
    over = layer_costs(shape, kind, next_rank(shape, kind, rank, extra), extra)
    assert over.params > ratio * original.params or (
        with_flops and over.flops > ratio * original.flops
    )
    # An absolute budget at the cost found gives the same rank.
    budget = dict(params=got.params, flops=got.flops) if with_flops else dict(params=got.params)
    assert nn.rank_for_budget(shape, kind, **budget, **extra) == rank


# -------------------------------------------------------------------------- EVBMF


def test_evbmf_recovers_a_planted_rank():
    rng = np.random.default_rng(8)
    low_rank = rng.standard_normal((40, 6)) @ rng.standard_normal((6, 90))
    result = nn.evbmf(low_rank + 0.3 * rng.standard_normal((40, 90)))
    assert result.rank == 6
    assert abs(result.noise_variance / 0.09 - 1) < 0.15
    assert nn.evbmf(rng.standard_normal((40, 90))).rank == 0  # pure noise: nothing kept
    assert nn.evbmf(low_rank.T + 0.3 * rng.standard_normal((90, 40))).rank == 6  # tall


def test_evbmf_ranks_of_a_planted_tucker2_kernel():
    rng = np.random.default_rng(9)
    core = rng.standard_normal((3, 3, 5, 7))
    k = np.einsum(
        "hwab,ia,ob->hwio", core, rng.standard_normal((16, 5)), rng.standard_normal((24, 7))
    )
    k = k + 0.05 * rng.standard_normal(k.shape)
    assert nn.evbmf_ranks(k.astype(np.float32)) == (7, 5)


# ---------------------------------------------------------------------- bad input


def test_kernel_must_be_4d():
    with pytest.raises(ValueError, match=r"kernel must have 4 axes, got shape \(3, 3, 6\)"):
        nn.decompose_conv(jnp.ones((3, 3, 6)), 2)
    with pytest.raises(ValueError, match="kernel must have 4 axes"):
        nn.evbmf_ranks(jnp.ones((9, 6)))


@pytest.mark.parametrize(
    "rank, message",
    [
        ((3, 7), r"\(R_out, R_in\) = \(3, 7\).*R_in <= C_in = 6"),
        ((9, 2), r"\(R_out, R_in\) = \(9, 2\).*R_out <= C_out = 8"),
        (0, r"\(R_out, R_in\) = \(0, 0\)"),
        ((1, 2, 3), r"\(R_out, R_in\), got \(1, 2, 3\)"),
    ],
)
def test_tucker2_rank_out_of_range(rank, message):
    with pytest.raises(ValueError, match=message):
        nn.decompose_conv(kernel(np.float64), rank, kind="tucker2")


def test_cp_rank_out_of_range():
    bound = nn.max_cp_rank(KSHAPE)
    assert bound == 432 // 20
    with pytest.raises(ValueError, match=rf"rank must be in \[1, {bound}\].*got {bound + 1}"):
        nn.decompose_conv(kernel(np.float64), bound + 1)
    with pytest.raises(TypeError, match="rank must be an int, got float 2.5"):
        nn.decompose_conv(kernel(np.float64), 2.5)


def test_input_channels_must_match_the_kernel():
    with pytest.raises(ValueError, match=r"inputs has 5 channels .* expects C_in = 6"):
        nn.decompose_conv(kernel(np.float64), 2, inputs=jnp.ones((2, 8, 8, 5)))
    with pytest.raises(ValueError, match=r"inputs must have 4 axes"):
        nn.decompose_conv(kernel(np.float64), 2, inputs=jnp.ones((8, 8, 6)))
    with pytest.raises(ValueError, match=r"C_in = 6 channels .* got shape \(1, 8, 8, 5\)"):
        nn.factorized_conv(jnp.ones((1, 8, 8, 5)), weight_fit("cp", np.float64))
    with pytest.raises(ValueError, match=r"moment must be \(D, D\) = \(54, 54\)"):
        nn.decompose_conv(kernel(np.float64), 2, moment=jnp.eye(50))


def test_unknown_kind():
    with pytest.raises(ValueError, match=r"kind must be one of \('cp', 'tucker2'\), got 'tt'"):
        nn.decompose_conv(kernel(np.float64), 2, kind="tt")
    with pytest.raises(ValueError, match=r"kind must be one of \('svd', 'cp', 'tucker'\)"):
        nn.decompose_dense(jnp.ones((4, 4)), 2, kind="tucker2")
    with pytest.raises(TypeError, match="layer must be a CPConv or a Tucker2Conv, got tuple"):
        nn.factorized_conv(jnp.ones((1, 4, 4, 6)), (jnp.ones((6, 2)),))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(strides=0), ValueError, r"strides must be >= 1, got 0"),
        (dict(strides=(1, 2, 1)), ValueError, r"strides must be an int or a pair"),
        (dict(strides=1.5), TypeError, r"strides must be an int, got float 1.5"),
        (dict(rhs_dilation=(1, -1)), ValueError, r"rhs_dilation must be >= 1"),
        (dict(padding="FULL"), ValueError, r"padding must be one of .*got 'FULL'"),
        (dict(padding=((1, 1),)), ValueError, r"padding must be one of .*got \(\(1, 1\),\)"),
        (dict(padding=((1, -1), (0, 0))), ValueError, r"padding must be one of"),
        (dict(padding="VALID", rhs_dilation=4), ValueError, r"smaller than the dilated kernel"),
    ],
)
def test_bad_conv_settings(kwargs, error, message):
    x = jnp.ones((1, 7, 7, 6))
    with pytest.raises(error, match=message):
        nn.factorized_conv(x, weight_fit("cp", np.float64), **kwargs)
    with pytest.raises(error, match=message):
        nn.decompose_conv(kernel(np.float64), 2, inputs=x, **kwargs)


def test_bad_dense_and_budget_arguments():
    w = jnp.ones((12, 8))
    with pytest.raises(ValueError, match=r"weight must have 2 axes"):
        nn.decompose_dense(jnp.ones((2, 3, 4)), 2)
    with pytest.raises(ValueError, match=r"rank must be in \[1, min\(in, out\)\] = \[1, 8\]"):
        nn.decompose_dense(w, 9)
    with pytest.raises(ValueError, match=r"shape \(\(3, 5\), \(8,\)\) must factor"):
        nn.decompose_dense(w, 2, kind="cp", shape=((3, 5), (8,)))
    with pytest.raises(ValueError, match=r"shape applies to kind"):
        nn.decompose_dense(w, 2, shape=((3, 4), (8,)))
    with pytest.raises(ValueError, match="kernel contains NaN or Inf"):
        nn.decompose_conv(kernel(np.float64).at[0, 0, 0, 0].set(jnp.nan), 2)
    with pytest.raises(ValueError, match="give a budget"):
        nn.rank_for_budget(KSHAPE, "cp")
    with pytest.raises(ValueError, match="no cp rank fits the budget"):
        nn.rank_for_budget(KSHAPE, "cp", params=10)
    with pytest.raises(ValueError, match="flops budget for a conv needs in_hw"):
        nn.rank_for_budget(KSHAPE, "cp", flops=1000)
    with pytest.raises(TypeError, match="evbmf_ranks needs a concrete kernel"):
        jax.jit(nn.evbmf_ranks)(kernel(np.float64))


def test_max_cp_rank_keeps_the_chain_no_larger_than_the_kernel():
    for shape in [(3, 3, 6, 8), (1, 1, 64, 64), (5, 5, 1, 1), (3, 3, 512, 512)]:
        r = nn.max_cp_rank(shape)
        assert r == 1 or r * sum(shape) <= math.prod(shape)
        assert (r + 1) * sum(shape) > math.prod(shape)


@pytest.mark.parametrize("kind, dtype", [("cp", np.float64), ("tucker2", np.float32)])
def test_all_zero_kernel_gives_a_zero_layer(kind, dtype):
    zero = jnp.zeros(KSHAPE, dtype)
    for layer in (
        nn.decompose_conv(zero, RANKS[kind], kind=kind),
        nn.decompose_conv(zero, RANKS[kind], kind=kind, moment=jnp.eye(54, dtype=dtype)),
    ):
        np.testing.assert_array_equal(nn.dense_kernel(layer), zero)
