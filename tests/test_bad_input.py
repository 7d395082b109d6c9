"""Every bad input named in DESIGN.md raises a clear error, eagerly and under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtd

X = np.arange(1.0, 61.0).reshape(3, 4, 5)
KEY = jax.random.key(0)
CP_FITTERS = {"cp_als": jaxtd.cp_als, "cp": jaxtd.cp}
TUCKER_FITTERS = {"tucker_hooi": jaxtd.tucker_hooi, "hosvd": jaxtd.hosvd, "tucker": jaxtd.tucker}

CASES = [
    # (fitters, x, args, kwargs, exception, message fragment)
    ("cp", X, (0,), {}, ValueError, "rank must be >= 1, got 0"),
    ("cp", X, (2.5,), {}, TypeError, "rank must be an int"),
    ("cp", X, (True,), {}, TypeError, "rank must be an int, got bool"),
    ("tucker", X, (0,), {}, ValueError, "rank must be >= 1"),
    (
        "tucker",
        X,
        ((2, 5, 2),),
        {},
        ValueError,
        r"exceeds the mode sizes \(3, 4, 5\) in modes \[1\]",
    ),
    ("tucker", X, ((2, 2),), {}, ValueError, "rank has 2 entries"),
    ("cp", X[0, 0], (1,), {}, ValueError, r"at least 2 modes, got shape \(5,\)"),
    ("tucker", np.zeros((3, 0, 2)), (1,), {}, ValueError, "empty mode"),
    ("cp", X.astype(np.complex64), (2,), {}, TypeError, "complex"),
    ("tucker", X.astype(np.float16), (2,), {}, TypeError, "float16"),
    (
        "cp",
        X,
        (2,),
        {"mask": np.ones((3, 4), bool)},
        ValueError,
        r"mask has shape \(3, 4\) but x has shape \(3, 4, 5\)",
    ),
    ("cp", X, (2,), {"mask": np.ones((3, 4, 5))}, TypeError, "mask must be boolean"),
    ("cp", X, (2,), {"mask": np.zeros((3, 4, 5), bool)}, ValueError, "mask observes no entry"),
    ("tucker_iter", X, (2,), {"mask": np.zeros((3, 4, 5), bool)}, ValueError, "mask observes no"),
    ("opt", X, (2,), {"optimizer": "adam"}, TypeError, "optax.GradientTransformation"),
    ("opt", X, (2,), {"mask": np.zeros((3, 4, 5), bool)}, ValueError, "mask observes no entry"),
    ("opt", X, (2,), {"init": "random"}, ValueError, "needs a key"),
    ("cp", X, (2,), {"init": "kmeans"}, ValueError, "init must be one of"),
    ("cp", X, (2,), {"init": "random"}, ValueError, "needs a key"),
    ("cp", X, (2,), {"max_iter": 0}, ValueError, "max_iter must be >= 1"),
    ("cp", X, (2,), {"tol": -1.0}, ValueError, "tol must be a finite number >= 0"),
    ("cp", X, (2,), {"tol": "small"}, TypeError, "tol must be a real number"),
    (
        "cp",
        X,
        (2,),
        {"init": jaxtd.TuckerTensor(np.ones((2, 2, 2)), ())},
        TypeError,
        "needs a CPTensor",
    ),
    (
        "cp",
        X,
        (2,),
        {"init": jaxtd.CPTensor(np.ones(2), (np.ones((3, 2)), np.ones((4, 2)), np.ones((6, 2))))},
        ValueError,
        r"init shapes do not fit x \(3, 4, 5\) at rank 2",
    ),
    (
        "cp",
        X,
        (2,),
        {"init": jaxtd.CPTensor(np.ones(2), (np.ones((3, 2)), np.ones((4, 2))))},
        ValueError,
        "factors but x has 3 modes",
    ),
    ("tucker_iter", X, (2,), {"init": "random"}, ValueError, "needs a key"),
    (
        "tucker_iter",
        X,
        (2,),
        {"init": jaxtd.TuckerTensor(np.ones((2, 2, 3)), (np.ones((3, 2)),) * 3)},
        ValueError,
        "init shapes do not fit",
    ),
    (
        "tucker_iter",
        X,
        (2,),
        {"init": jaxtd.CPTensor(np.ones(2), ())},
        TypeError,
        "needs a TuckerTensor",
    ),
]


def _fitters(kind):
    if kind == "cp":
        return CP_FITTERS
    if kind == "tucker":
        return TUCKER_FITTERS
    if kind == "opt":
        return {"cp_opt": jaxtd.cp_opt, "tucker_opt": jaxtd.tucker_opt}
    return {"tucker_hooi": jaxtd.tucker_hooi, "tucker": jaxtd.tucker}


@pytest.mark.parametrize("kind,x,args,kwargs,exc,match", CASES)
def test_bad_input_raises_eagerly_and_under_jit(kind, x, args, kwargs, exc, match):
    for fit in _fitters(kind).values():
        with pytest.raises(exc, match=match):
            fit(x, *args, **kwargs)
        if x.dtype.kind == "f" and x.dtype.itemsize >= 4:  # jit needs a JAX-typed input
            with pytest.raises(exc, match=match):
                jax.jit(lambda x, fit=fit: fit(x, *args, **kwargs))(jnp.asarray(x))


def test_unknown_method():
    with pytest.raises(ValueError, match=r"method must be one of \('als', 'opt'\), got 'foo'"):
        jaxtd.cp(X, 2, method="foo")
    with pytest.raises(ValueError, match="method must be one of"):
        jaxtd.tucker(X, 2, method="svd")


def test_bad_input_loses_nothing():
    x = X.copy()
    with pytest.raises(ValueError):
        jaxtd.cp_als(x, 0)
    np.testing.assert_array_equal(x, X)


def test_traced_tol_is_accepted():
    res = jax.jit(lambda x, tol: jaxtd.cp_als(x, 2, tol=tol, max_iter=10))(jnp.asarray(X), 1e-3)
    assert np.isfinite(res.rel_error)
