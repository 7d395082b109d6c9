"""Smoke test of ``python -m jaxtd bench`` on a tiny grid; the suite itself runs outside pytest."""

import json
import math

from jaxtd.__main__ import main

POSITIVE = ("ms_per_iter", "gb_s", "gflop_s", "bound_ms", "x_bound", "flop_bound_ms",
            "x_roofline", "bytes_per_iter")  # fmt: skip


def test_bench_writes_finite_positive_numbers(tmp_path):
    path = tmp_path / "bench.json"
    argv = ["bench", "--sizes", "6", "--orders", "3", "--ranks", "2",
            "--methods", "cp_als,tucker_hooi", "--no-peers", "--skip", "batched,memory,compile",
            "--iters", "3", "--repeats", "1", "--bandwidth-mb", "4", "--json", str(path),
            "--plot", "", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(path.read_text())
    assert {"machine", "settings", "roof", "cases", "targets", "wall_s"} <= report.keys()
    assert {"device_kind", "platform", "jax_version", "cpu_count"} <= report["machine"].keys()
    assert report["roof"]["bandwidth_gb_s"] > 0 and report["roof"]["gemm_gflop_s"] > 0
    assert [(r["method"], r["library"]) for r in report["cases"]] == [
        ("cp_als", "jaxtd"),
        ("tucker_hooi", "jaxtd"),
    ]
    for row in report["cases"]:
        assert row["n_iter_hi"] == 3 and row["n_iter_lo"] == 2
        assert row["compile_s"] >= 0
        for key in POSITIVE:
            assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    assert {t["status"] for t in report["targets"]} == {"SKIP"}  # no peers, no experiments


def test_bench_bad_option_is_one_line_error(capsys):
    assert main(["bench", "--iters", "2", "--json", "", "--plot", ""]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["jaxtd: error: --iters must be >= 3 (the short run is 2 iterations), got 2"]
