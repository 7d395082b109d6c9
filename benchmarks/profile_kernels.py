"""Where the time of cp_als and tucker_hooi goes: the pieces of one sweep, timed in isolation.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/profile_kernels.py [--part cp]

Parts (``--part``, default all):

* ``cp``: one CP-ALS sweep at ``200³`` rank 10 float32 and its two passes over ``x`` (the
  GEMMs ``X_(0..1) A_2`` and ``A_0ᵀ X_(0)``), the ``R × R`` solves, alternative
  formulations of the passes, and TensorLy's MTTKRP per mode.
* ``hooi``: one HOOI sweep at ``200³`` ranks ``(10, 10, 10)``, its passes, the
  ``eigh``/QR of ``leading_left_singular_vectors`` on the ``200 × 100`` unfoldings, and
  alternatives (SVD, one step of subspace iteration from the current factor).
* ``batch``: ``vmap`` of 1024 CP-ALS fits ``10³`` rank 3 (50 sweeps), with the normal
  equations solved by ``eigh`` (as jaxtd does), by LAPACK Cholesky, and by a Cholesky
  unrolled over the rank in plain array arithmetic (vectorised across the batch).

``--lapack-threads 1`` limits the BLAS threads of jaxlib's LAPACK (SciPy's OpenBLAS), as
``python -m jaxtd bench --lapack-threads`` does: compare the ``eigh`` and Cholesky rows with
and without it.

Every timing is the best of ``--repeats`` runs, with the variants of one part run in
turn (round-robin) so that a busy spell of a shared machine hits them alike. The variants
are built from jaxtd's own pieces (``als_sweep``, ``hooi_sweep``, ``iterate``) with a
different piece swapped in; the library is not modified.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxtd
from jaxtd import _bench
from jaxtd._cp_als import _solve_normalized, als_sweep
from jaxtd._init import initial_cp
from jaxtd._loop import iterate
from jaxtd._result import input_status
from jaxtd._tensor import fix_signs, leading_left_singular_vectors, mode_dot, unfold
from jaxtd._tucker_hooi import hooi_sweep


def race(fns: dict, repeats: int) -> dict:
    """Best time in ms of each zero-argument function, run round-robin."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            best[k] = min(best[k], (time.perf_counter() - t) * 1e3)
    return best


def show(title: str, best: dict, ref: str | None = None) -> None:
    print(f"\n{title}")
    for k, ms in best.items():
        rel = f"  {ms / best[ref]:5.2f}x {ref}" if ref else ""
        print(f"  {k:<58}{ms:9.3f} ms{rel}")


def cp_part(repeats: int) -> None:
    n, r = 200, 10
    rng = np.random.default_rng(0)
    x_np = rng.random((n, n, n), dtype=np.float32)
    x = jnp.asarray(x_np)
    a_np = [rng.random((n, r), dtype=np.float32) for _ in range(3)]
    a = tuple(jnp.asarray(f) for f in a_np)
    cp = jaxtd.CPTensor(jnp.ones(r, jnp.float32), a)
    norm = jnp.vdot(x, x)
    v = a[0].T @ a[0] * (a[1].T @ a[1])
    m = x.reshape(n, -1)[:, :r]  # any (I, R) right-hand side
    sweep = jax.jit(lambda x, cp: als_sweep(x, cp, norm))
    pass_last = jax.jit(lambda x, f: x.reshape(-1, n) @ f)  # (I0 I1, I2) @ (I2, R)
    pass_first = jax.jit(lambda x, f: f.T @ x.reshape(n, -1))  # (R, I0) @ (I0, I1 I2)
    pass_last_t = jax.jit(  # the same contraction as pass_last, result laid out (R, I0 I1)
        lambda x, f: jax.lax.dot_general(f, x.reshape(-1, n), (((0,), (1,)), ((), ())))
    )
    middle = jax.jit(lambda x, f: jnp.einsum("ijk,jr->ikr", x, f))  # x_(1): a strided read
    eigh3 = jax.jit(lambda v, m: [_solve_normalized(m, v * (1 + k), m)[0] for k in range(3)])

    def chol(v, m):
        c = jax.scipy.linalg.cho_factor(v)
        return jax.scipy.linalg.cho_solve(c, m.T).T

    chol3 = jax.jit(lambda v, m: [chol(v * (1 + k), m) for k in range(3)])
    best = race(
        {
            "als_sweep (whole sweep, 200^3 r10)": lambda: sweep(x, cp),
            "pass 1: X(40000x200) @ A2 -> (40000,10)": lambda: pass_last(x, a[2]),
            "pass 2: A0^T @ X(200x40000) -> (10,40000)": lambda: pass_first(x, a[0]),
            "pass 1 with output laid out (10,40000)": lambda: pass_last_t(x, a[2]),
            "middle mode X_(1) A1 (strided; the sweep avoids it)": lambda: middle(x, a[1]),
            "3 x eigh solve 10x10 (jaxtd _solve_normalized)": lambda: eigh3(v, m),
            "3 x Cholesky solve 10x10": lambda: chol3(v, m),
            "jnp.sum(x) (one streaming read of x)": lambda: jnp.sum(x),
        },
        repeats,
    )
    show("CP-ALS 200^3 rank 10 float32, jaxtd pieces", best, "als_sweep (whole sweep, 200^3 r10)")
    try:
        from tensorly.tenalg import unfolding_dot_khatri_rao
    except ImportError:
        return
    w = np.ones(r, np.float32)
    best = race(
        {
            **{
                f"TensorLy MTTKRP mode {k}": (
                    lambda k=k: unfolding_dot_khatri_rao(x_np, (w, a_np), k)
                )
                for k in range(3)
            },
            "NumPy unfold(x, 1) copy": lambda: np.ascontiguousarray(np.moveaxis(x_np, 1, 0)),
            "NumPy X(40000x200) @ A2": lambda: x_np.reshape(-1, n) @ a_np[2],
            "NumPy A0^T @ X(200x40000)": lambda: a_np[0].T @ x_np.reshape(n, -1),
        },
        max(3, repeats // 3),
    )
    show("TensorLy/NumPy pieces (one parafac iteration = 3 MTTKRPs + solves)", best)


def _lsv_svd(y, k):
    u, _, _ = jnp.linalg.svd(y, full_matrices=False)
    return fix_signs(u[:, :k])


def _lsv_subspace(y, u_prev):
    """One step of subspace (orthogonal) iteration from the current factor."""
    q, _ = jnp.linalg.qr(y @ (y.T @ u_prev))
    return fix_signs(q)


def hooi_part(repeats: int) -> None:
    n, r = 200, 10
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((n, n, n), dtype=np.float32))
    u = tuple(jnp.linalg.qr(jnp.asarray(rng.random((n, r), dtype=np.float32)))[0] for _ in range(3))
    norm = jnp.vdot(x, x)
    y = jnp.asarray(rng.random((n, r * r), dtype=np.float32))  # an unfolding of the sweep
    sweep = jax.jit(lambda x, u: hooi_sweep(x, u, norm))

    def sweep_subspace(x, factors):
        """hooi_sweep with leading_left_singular_vectors replaced by one subspace step."""
        factors = list(factors)
        partial_t = mode_dot(x, factors[2].T, 2)
        y0 = mode_dot(partial_t, factors[1].T, 1)
        factors[0] = _lsv_subspace(unfold(y0, 0), factors[0])
        y1 = mode_dot(partial_t, factors[0].T, 0)
        factors[1] = _lsv_subspace(unfold(y1, 1), factors[1])
        y2 = mode_dot(mode_dot(x, factors[0].T, 0), factors[1].T, 1)
        factors[2] = _lsv_subspace(unfold(y2, 2), factors[2])
        core = mode_dot(y2, factors[2].T, 2)
        return core, factors

    jit = {
        "sweep_subspace": jax.jit(sweep_subspace),
        "pass_last": jax.jit(lambda x, f: x.reshape(-1, n) @ f),
        "pass_first": jax.jit(lambda x, f: f.T @ x.reshape(n, -1)),
        "lsv": jax.jit(lambda y: [leading_left_singular_vectors(y * (1 + k), r) for k in range(3)]),
        "eigh": jax.jit(lambda y: [jnp.linalg.eigh(y.T @ y * (1 + k))[1] for k in range(3)]),
        "svd": jax.jit(lambda y: [_lsv_svd(y * (1 + k), r) for k in range(3)]),
        "subspace": jax.jit(lambda y, u0: [_lsv_subspace(y * (1 + k), u0) for k in range(3)]),
    }
    best = race(
        {
            "hooi_sweep (whole sweep, 200^3 (10,10,10))": lambda: sweep(x, u),
            "hooi sweep, subspace step instead of eigh": lambda: jit["sweep_subspace"](x, u),
            "pass: X(40000x200) @ U2": lambda: jit["pass_last"](x, u[2]),
            "pass: U0^T @ X(200x40000)": lambda: jit["pass_first"](x, u[0]),
            "3 x leading_left_singular_vectors(200x100 -> 10)": lambda: jit["lsv"](y),
            "3 x eigh(100x100) alone": lambda: jit["eigh"](y),
            "3 x economy SVD(200x100)": lambda: jit["svd"](y),
            "3 x subspace step qr(Y (Y^T U))": lambda: jit["subspace"](y, u[0]),
        },
        repeats,
    )
    show("HOOI 200^3 (10,10,10) float32", best, "hooi_sweep (whole sweep, 200^3 (10,10,10))")


def _solve_cholesky(mttkrp_n, v, current):
    """LAPACK Cholesky (a batched custom call under vmap), after a tiny ridge."""
    ridge = v.shape[0] * jnp.finfo(v.dtype).eps * jnp.trace(v)
    c = jax.scipy.linalg.cho_factor(v + ridge * jnp.eye(v.shape[0], dtype=v.dtype))
    factor = jax.scipy.linalg.cho_solve(c, mttkrp_n.T).T
    norms = jnp.linalg.norm(factor, axis=0)
    return factor / jnp.where(norms > 0, norms, 1)[None, :], norms


def _solve_unrolled(mttkrp_n, v, current):
    """Cholesky of the R x R matrix unrolled over R (R static, small): plain array ops, which
    vectorise across a vmapped batch, then forward and back substitution."""
    rr = v.shape[0]
    tiny = jnp.finfo(v.dtype).tiny
    ridge = rr * jnp.finfo(v.dtype).eps * jnp.trace(v) + tiny
    v = v + ridge * jnp.eye(rr, dtype=v.dtype)
    low = [[None] * rr for _ in range(rr)]
    for j in range(rr):
        d = v[j, j] - sum(low[j][k] * low[j][k] for k in range(j))
        low[j][j] = jnp.sqrt(jnp.maximum(d, tiny))
        for i in range(j + 1, rr):
            low[i][j] = (v[i, j] - sum(low[i][k] * low[j][k] for k in range(j))) / low[j][j]
    b = [mttkrp_n[:, i] for i in range(rr)]  # solve A V = M, i.e. V A^T = M^T, row by row
    z = [None] * rr
    for i in range(rr):
        z[i] = (b[i] - sum(low[i][k] * z[k] for k in range(i))) / low[i][i]
    sol = [None] * rr
    for i in reversed(range(rr)):
        sol[i] = (z[i] - sum(low[k][i] * sol[k] for k in range(i + 1, rr))) / low[i][i]
    factor = jnp.stack(sol, axis=1)
    norms = jnp.linalg.norm(factor, axis=0)
    return factor / jnp.where(norms > 0, norms, 1)[None, :], norms


def _gram(f):
    """``fᵀ f`` as a broadcast multiply and a sum (a loop fusion, also under vmap)."""
    return jnp.sum(f[:, :, None] * f[:, None, :], axis=0)


def sweep_small(x, cp, norm_x_sq, update):
    """One 3-way CP-ALS sweep with the same dimension tree as ``als_sweep``, but every
    contraction written as a broadcast multiply and a sum instead of a dot: for tiny
    tensors under ``vmap`` XLA then emits a few loop fusions over the whole batch instead
    of batched GEMMs of ``10 × 10 × 3``."""
    a, b, c = cp.factors
    ga, gb, gc = _gram(a), _gram(b), _gram(c)
    p = jnp.sum(x[:, :, :, None] * c[None, None, :, :], axis=2)  # (I, J, R): x ×_2 C
    m = jnp.sum(p * b[None, :, :], axis=1)
    a, w = update(m, gb * gc, a)
    ga = _gram(a)
    m = jnp.sum(p * a[:, None, :], axis=0)
    b, w = update(m, ga * gc, b)
    gb = _gram(b)
    q = jnp.sum(a[:, None, None, :] * x[:, :, :, None], axis=0)  # (J, K, R): x ×_0 A
    m = jnp.sum(q * b[:, None, :], axis=0)
    c, w = update(m, ga * gb, c)
    gc = _gram(c)
    inner = jnp.sum(m * c * w[None, :])
    norm_m_sq = jnp.sum(w[:, None] * (ga * gb * gc) * w[None, :])
    rel = jnp.sqrt(jnp.maximum(norm_x_sq - 2 * inner + norm_m_sq, 0) / norm_x_sq)
    return jaxtd.CPTensor(w, (a, b, c)), rel


def sweep_unrolled(x, cp, norm_x_sq, update):
    """``sweep_small`` with each contraction unrolled over the contracted index (a sum of
    ``I`` scaled slices, for ``I`` up to a few tens): XLA fuses the sum into one loop over the
    batch, about twice as fast as the batched GEMMs of ``als_sweep`` under ``vmap``."""
    a, b, c = cp.factors
    i_, j_, k_ = x.shape
    ga, gb, gc = a.T @ a, b.T @ b, c.T @ c
    p = sum(x[:, :, k : k + 1] * c[k][None, None, :] for k in range(k_))  # (I, J, R)
    m = sum(p[:, j, :] * b[j][None, :] for j in range(j_))
    a, w = update(m, gb * gc, a)
    ga = a.T @ a
    m = sum(p[i] * a[i][None, :] for i in range(i_))
    b, w = update(m, ga * gc, b)
    gb = b.T @ b
    q = sum(x[i][:, :, None] * a[i][None, None, :] for i in range(i_))  # (J, K, R)
    m = sum(q[j] * b[j][None, :] for j in range(j_))
    c, w = update(m, ga * gb, c)
    gc = c.T @ c
    inner = jnp.sum(m * c * w[None, :])
    norm_m_sq = w @ (ga * gb * gc) @ w
    rel = jnp.sqrt(jnp.maximum(norm_x_sq - 2 * inner + norm_m_sq, 0) / norm_x_sq)
    return jaxtd.CPTensor(w, (a, b, c)), rel


def _cp_als_with(update, rank, max_iter, sweep=als_sweep):
    """cp_als (svd start, tol 0) from jaxtd's own pieces, with another normal-equation solve."""

    def fit(x):
        start = initial_cp(x, rank, "svd", None, None)
        norm = jnp.vdot(x, x)
        model, stats = iterate(
            lambda cp: sweep(x, cp, norm, update),
            start,
            max_iter=max_iter,
            tol=jnp.asarray(0.0, x.dtype),
            input_status=input_status(x, None),
            dtype=x.dtype,
        )
        return stats.rel_error

    return fit


def batch_part(repeats: int) -> None:
    n, rank, iters = 1024, 3, 50
    xs = jnp.asarray(np.random.default_rng(3).random((n, 10, 10, 10), dtype=np.float32))
    public = jax.jit(jax.vmap(lambda x: jaxtd.cp_als(x, rank, max_iter=iters, tol=0.0).rel_error))
    fits = {
        "jaxtd.cp_als under vmap (eigh solve)": public,
        "same pieces, eigh solve (_solve_normalized)": jax.jit(
            jax.vmap(_cp_als_with(_solve_normalized, rank, iters))
        ),
        "same pieces, LAPACK Cholesky solve": jax.jit(
            jax.vmap(_cp_als_with(_solve_cholesky, rank, iters))
        ),
        "same pieces, unrolled Cholesky solve": jax.jit(
            jax.vmap(_cp_als_with(_solve_unrolled, rank, iters))
        ),
        "broadcast-reduce sweep, unrolled Cholesky": jax.jit(
            jax.vmap(_cp_als_with(_solve_unrolled, rank, iters, sweep_small))
        ),
        "unrolled-sum sweep, unrolled Cholesky": jax.jit(
            jax.vmap(_cp_als_with(_solve_unrolled, rank, iters, sweep_unrolled))
        ),
        "unrolled-sum sweep, eigh solve": jax.jit(
            jax.vmap(_cp_als_with(_solve_normalized, rank, iters, sweep_unrolled))
        ),
        "unrolled-sum sweep, unrolled Cholesky, 2 sweeps (~init)": jax.jit(
            jax.vmap(_cp_als_with(_solve_unrolled, rank, 2, sweep_unrolled))
        ),
    }
    errs = {k: float(jnp.median(f(xs))) for k, f in fits.items()}
    v = jnp.asarray(np.random.default_rng(4).random((n, rank, rank), dtype=np.float32))
    v = v @ jnp.swapaxes(v, 1, 2) + jnp.eye(rank, dtype=jnp.float32)
    m = jnp.asarray(np.random.default_rng(5).random((n, 10, rank), dtype=np.float32))
    solves = {
        "150 x vmapped eigh solve (1024 x 3x3)": _solve_normalized,
        "150 x vmapped LAPACK Cholesky solve": _solve_cholesky,
        "150 x vmapped unrolled Cholesky solve": _solve_unrolled,
    }

    def repeat150(fn):
        def run(v, m):
            def body(_, mm):
                return jax.vmap(fn)(mm, v, mm)[0]

            return jax.lax.fori_loop(0, 150, body, m)

        return jax.jit(run)

    timed = {k: (lambda f=f: f(xs)) for k, f in fits.items()}
    for k, fn in solves.items():
        timed[k] = lambda f=repeat150(fn): f(v, m)  # noqa: B008
    best = race(timed, repeats)
    show(
        f"Batched: {n} CP fits 10^3 rank {rank}, {iters} sweeps (150 solves per fit)",
        best,
        "jaxtd.cp_als under vmap (eigh solve)",
    )
    print("  median rel_error:", {k: round(e, 5) for k, e in errs.items()})


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--part", choices=("cp", "hooi", "batch", "all"), default="all")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument(
        "--lapack-threads", type=int, help="limit the BLAS threads of jaxlib's LAPACK (SciPy's)"
    )
    args = p.parse_args()
    pools, _ = _bench.lapack_pools()
    print(
        f"device {jax.devices()[0].device_kind}, jax {jax.__version__}; jaxlib LAPACK BLAS "
        f"{[(p['internal_api'], p['num_threads']) for p in pools]}, limit {args.lapack_threads}"
    )
    with _bench.limit_lapack_threads(args.lapack_threads):
        for name, part in (("cp", cp_part), ("hooi", hooi_part), ("batch", batch_part)):
            if args.part in (name, "all"):
                part(args.repeats)


if __name__ == "__main__":
    main()
