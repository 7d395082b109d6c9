"""compare(), progress callbacks, nonnegative cp_opt, and the compare command line."""

import json

import jax
import numpy as np
import optax
import pytest

import jaxtd
from jaxtd.__main__ import main

ADAM = optax.adam(0.1)  # one object: the compiled loop is shared across tests


def test_compare_runs_every_method_from_the_same_start(aminoacids):
    x = aminoacids.tensor.astype(np.float32)
    table = jaxtd.compare(x, 3, ("als", "opt", "adam"), optimizers={"adam": ADAM}, max_iter=300)
    assert [r.method for r in table] == ["als", "opt", "adam"] and len(table) == 3
    assert abs(table["als"].fit - table["opt"].fit) < 1e-3
    for run in table:
        assert run.fit == pytest.approx(1 - run.rel_error)
        assert run.n_iter == int(run.result.n_iter) and run.history.shape == (300,)
        assert (
            run.run_s > 0
            and run.compile_s >= 0
            and run.s_per_iter == pytest.approx(run.run_s / run.n_iter)
        )
    as_dict = table.to_dict()
    assert set(as_dict) == {"als", "opt", "adam"} and "result" not in as_dict["als"]
    assert len(as_dict["opt"]["history"]) == table["opt"].n_iter
    json.dumps(as_dict)  # plain values only
    text = str(table)
    assert "als" in text and "ms/iter" in text and f"{table['als'].fit:.5f}" in text
    with pytest.raises(ValueError, match="unknown method 'lbfgs'"):
        jaxtd.compare(x, 3, ("lbfgs",))
    with pytest.raises(KeyError, match="no method 'sgd'"):
        table["sgd"]


def test_compare_passes_the_same_start_to_every_method(aminoacids):
    x = aminoacids.tensor
    key = jax.random.key(5)
    table = jaxtd.compare(x, 2, ("als", "opt"), init="random", key=key, max_iter=40)
    als = jaxtd.cp_als(x, 2, init="random", key=key, max_iter=40)
    opt = jaxtd.cp_opt(x, 2, init="random", key=key, max_iter=40)
    assert table["als"].rel_error == float(als.rel_error) and table["als"].n_iter == int(als.n_iter)
    assert table["opt"].rel_error == float(opt.rel_error) and table["opt"].n_iter == int(opt.n_iter)


def test_progress_is_called_each_iteration_with_the_history(aminoacids):
    calls = []
    res = jaxtd.cp_als(
        aminoacids.tensor, 2, max_iter=50, progress=lambda i, e: calls.append((int(i), float(e)))
    )
    assert [i for i, _ in calls] == list(range(1, int(res.n_iter) + 1))
    np.testing.assert_allclose([e for _, e in calls], res.history[: int(res.n_iter)])


def test_nonnegative_cp_opt_gives_nonnegative_factors(aminoacids):
    res = jaxtd.cp_opt(aminoacids.tensor, 3, nonnegative=True, max_iter=300)
    assert all(float(f.min()) >= 0 for f in res.model.factors)
    assert 1 - float(res.rel_error) > 0.97
    # A negative user start is made positive (|init|), as for cp_als: the same fit results.
    negative = jaxtd.CPTensor(-res.model.weights, tuple(-f for f in res.model.factors))
    again = jaxtd.cp_opt(aminoacids.tensor, 3, init=negative, nonnegative=True, max_iter=300)
    assert all(float(f.min()) >= 0 for f in again.model.factors)
    assert abs(float(again.rel_error) - float(res.rel_error)) < 1e-3


def test_compare_command_prints_a_table(tmp_path, capsys, aminoacids):
    data, mask = tmp_path / "x.npz", tmp_path / "mask.npy"
    np.savez(data, X=aminoacids.tensor.astype(np.float32), y=aminoacids.concentrations)
    np.save(mask, np.random.default_rng(0).random(aminoacids.tensor.shape) > 0.2)
    code = main(
        ["compare", "--data", str(data), "--data-key", "X", "--rank", "3", "--mask", str(mask)]
    )
    out = capsys.readouterr()
    assert code == 0 and "als" in out.out and "opt" in out.out and "fitting cp rank 3" in out.err
    fits = [float(line.split()[1]) for line in out.out.splitlines()[1:]]
    assert len(fits) == 2 and min(fits) > 0.97


@pytest.mark.parametrize(
    "args,message",
    [
        (["--data", "{tmp}/missing.npy", "--rank", "3"], "data file not found: {tmp}/missing.npy"),
        (["--data", "{tmp}/text.npy", "--rank", "3"], "cannot read data file {tmp}/text.npy"),
        (["--data", "{tmp}/two.npz", "--rank", "3"], "holds several arrays ['a', 'b']"),
        (["--data", "{tmp}/two.npz", "--data-key", "X", "--rank", "3"], "has no array 'X'"),
        (["--data", "{tmp}/x.npy", "--rank", "0"], "rank must be >= 1, got 0"),
        (["--data", "{tmp}/x.npy", "--rank", "9", "--model", "tucker"], "exceeds the mode sizes"),
        (
            ["--data", "{tmp}/x.npy", "--rank", "2", "--methods", "als,bfgs"],
            "unknown method 'bfgs'",
        ),
    ],
)
def test_compare_command_bad_input_is_one_line(tmp_path, capsys, args, message):
    np.save(tmp_path / "x.npy", np.ones((3, 4, 5)))
    np.savez(tmp_path / "two.npz", a=np.ones((3, 4, 5)), b=np.ones(3))
    (tmp_path / "text.npy").write_text("not an array")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["compare", *args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_nonnegative_cp_opt_under_vmap():
    xs = np.random.default_rng(0).random((2, 3, 4, 5))
    out = jax.vmap(lambda x: jaxtd.cp_opt(x, 2, max_iter=5, nonnegative=True).rel_error)(xs)
    assert out.shape == (2,) and np.all(np.isfinite(out))
