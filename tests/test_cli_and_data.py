"""The bundled data set and the command line."""

import re
import subprocess
import sys

import numpy as np

import jaxtd
from jaxtd.__main__ import main


def test_load_aminoacids(aminoacids):
    assert aminoacids.tensor.shape == (5, 201, 61) and aminoacids.tensor.dtype == np.float64
    assert aminoacids.concentrations.shape == (5, 3)
    assert aminoacids.emission_nm[0] == 250 and aminoacids.emission_nm[-1] == 450
    assert aminoacids.excitation_nm[0] == 240 and aminoacids.excitation_nm[-1] == 300
    again = jaxtd.datasets.load_aminoacids()
    np.testing.assert_array_equal(again.tensor, aminoacids.tensor)


def test_demo_prints_the_fits_and_the_concentration_match(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    fits = {int(r): float(f) for r, f in re.findall(r"CP-ALS rank (\d)\s+([0-9.]+)", out)}
    assert set(fits) == {1, 2, 3, 4}
    np.testing.assert_allclose([fits[1], fits[2], fits[3]], [0.403, 0.636, 0.975], atol=2e-3)
    assert re.search(r"Tucker HOOI 3,3,3\s+0\.97", out)
    rs = [abs(float(r)) for r in re.findall(r"r = ([+-][0-9.]+)", out)]
    assert len(rs) == 3 and min(rs) > 0.99


def test_help_and_bad_arguments_exit_cleanly():
    ok = subprocess.run([sys.executable, "-m", "jaxtd", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "demo" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "jaxtd", "demo", "--max-iter", "0"], capture_output=True, text=True
    )
    assert (
        bad.returncode != 0
        and "--max-iter must be >= 1" in bad.stderr
        and "Traceback" not in bad.stderr
    )
