"""The targets (PASS/FAIL), the printed table, the plot, and the JSON of a report."""

from __future__ import annotations

import math
import os

import numpy as np

from jaxtd._bench.cases import METHODS

# The targets, and the cases they are read from.
TARGET_CASE = dict(order=3, size=200, rank=10, dtype="float32")
TARGET_SPEEDUP = {"cp_als": 4.0, "tucker_hooi": 5.0}
TARGET_BATCHED = 50.0
TARGET_COMPILE_S = 3.0
TARGET_MEMORY = 2.0


def _find(rows, library, method, order, size, rank, dtype):
    for r in rows:
        if (r["library"], r["method"], r["order"], r["size"], r["rank"], r["dtype"]) == (
            library, method, order, size, rank, dtype,
        ):  # fmt: skip
            return r
    return None


def evaluate_targets(report: dict) -> list[dict]:
    """PASS/FAIL (or SKIP, with the reason) for each target."""
    out = []
    rows = report["cases"]
    c = TARGET_CASE
    for method, need in TARGET_SPEEDUP.items():
        name = f"{method} >= {need:g}x TensorLy at {c['size']}^3 r{c['rank']} {c['dtype']}"
        peer = _find(rows, "tensorly", method, c["order"], c["size"], c["rank"], c["dtype"])
        if peer is None or "jaxtd_speedup" not in peer:
            why = peer.get("error") if peer else "case not run or TensorLy not installed"
            out.append(dict(name=name, status="SKIP", detail=why))
            continue
        ours = _find(rows, "jaxtd", method, c["order"], c["size"], c["rank"], c["dtype"])
        ratio = peer["jaxtd_speedup"]
        out.append(
            dict(
                name=name,
                status="PASS" if ratio >= need else "FAIL",
                value=ratio,
                threshold=need,
                detail=f"{ratio:.2f}x: jaxtd {ours['ms_per_iter']:.2f} ms/iter, "
                f"TensorLy {peer['ms_per_iter']:.2f} ms/iter",
            )
        )
    b = report.get("batched")
    name = f"batched vmap >= {TARGET_BATCHED:g}x a TensorLy loop"
    if not b:
        out.append(dict(name=name, status="SKIP", detail="not run"))
    elif "speedup" not in b:
        out.append(dict(name=name, status="SKIP", detail=b.get("error", "TensorLy not installed")))
    else:
        out.append(
            dict(
                name=name,
                status="PASS" if b["speedup"] >= TARGET_BATCHED else "FAIL",
                value=b["speedup"],
                threshold=TARGET_BATCHED,
                detail=f"{b['speedup']:.1f}x: {b['n_fits']} fits in {b['jaxtd_s']:.3f} s vs "
                f"{b['tensorly_s_scaled']:.2f} s (TensorLy: {b['tensorly_loop_fits_timed']} "
                f"fits timed, scaled)",
            )
        )
    comp = report.get("compile")
    name = f"3-way cp_als compiles in <= {TARGET_COMPILE_S:g} s, no recompilation"
    if not comp:
        out.append(dict(name=name, status="SKIP", detail="not run"))
    elif "error" in comp:
        out.append(dict(name=name, status="FAIL", detail=comp["error"]))
    else:
        ok = comp["compile_s"] <= TARGET_COMPILE_S and comp["backend_compiles_second_call"] == 0
        out.append(
            dict(
                name=name,
                status="PASS" if ok else "FAIL",
                value=comp["compile_s"],
                threshold=TARGET_COMPILE_S,
                detail=f"{comp['compile_s']:.2f} s (first {comp['first_call_s']:.2f} s, warm "
                f"{comp['warm_call_s']:.3f} s); second call: "
                f"{comp['backend_compiles_second_call']} compilations, "
                f"{comp['second_call_s']:.3f} s",
            )
        )
    mem = (report.get("memory") or {}).get("svd")
    name = f"cp_als peak memory < {TARGET_MEMORY:g} x (tensor + factors)"
    if not mem:
        out.append(dict(name=name, status="SKIP", detail="not run"))
    elif "error" in mem:
        out.append(dict(name=name, status="FAIL", detail=mem["error"]))
    else:
        ratio = mem["peak_bytes"] / (mem["tensor_bytes"] + mem["factor_bytes"])
        xla = mem.get("xla")
        xla_ratio = xla["total_bytes"] / mem["tensor_bytes"] if xla else float("nan")
        out.append(
            dict(
                name=name,
                status="PASS" if ratio < TARGET_MEMORY else "FAIL",
                value=ratio,
                threshold=TARGET_MEMORY,
                detail=f"{ratio:.2f}x measured ({mem['peak_bytes'] / 2**20:.0f} MiB for a "
                f"{mem['tensor_bytes'] / 2**20:.0f} MiB tensor, {mem['size']}^3 r{mem['rank']}); "
                f"XLA memory_analysis {xla_ratio:.2f}x",
            )
        )
    return out


def _fmt(v, spec, width):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return f"{'-':>{width}}"
    return f"{v:{width}{spec}}"


def format_report(report: dict) -> str:
    m, roof = report["machine"], report["roof"]
    lines = [
        f"jaxtd bench on {m['device_kind']} ({m['platform']}), {m['cpu_count']} CPUs, "
        f"jax {m['jax_version']}",
        f"memory bandwidth {roof['bandwidth_gb_s']:.1f} GB/s (best of jnp.sum "
        f"{roof['bandwidth_kernels_gb_s']['sum']:.1f}, x @ v "
        f"{roof['bandwidth_kernels_gb_s']['matvec']:.1f}, over "
        f"{roof['bandwidth_bytes'] / 2**20:.0f} MiB); GEMM {roof['gemm_gflop_s']:.0f} GFLOP/s",
        "byte model: 2 reads of x per iteration; flop model: 4 size(x) R per iteration; "
        "x bound = ms/iter / (bytes / bandwidth)",
        "x roofline = ms/iter / max(bytes / bandwidth, flops / GEMM GFLOP/s); "
        "compute-bound where the second is larger",
        "jaxlib LAPACK BLAS: "
        + (
            ", ".join(
                f"{os.path.basename(p['filepath'])} ({p['internal_api']}, "
                f"{p['num_threads']} threads)"
                for p in m["jaxlib_lapack"]
            )
            or "unknown"
        )
        + (
            f"; limited to {lt} thread(s) for this run"
            if (lt := report["settings"].get("lapack_threads"))
            else ""
        ),
        "",
    ]
    head = (
        f"{'case':<22}{'method':<13}{'library':<14}{'compile s':>10}{'ms/iter':>10}"
        f"{'median':>10}{'GB/s':>8}{'GFLOP/s':>9}{'x bound':>9}{'x roofline':>11}"
        f"{'speed-up':>10}"
    )
    lines += [head, "-" * len(head)]
    for r in report["cases"]:
        case = f"{r['order']}-way {r['size']} r{r['rank']} {r['dtype']}"
        if "error" in r:
            lines.append(f"{case:<22}{r['method']:<13}{r['library']:<14}  error: {r['error']}")
            continue
        flag = "" if r.get("resolved", True) else " (unresolved)"
        if r.get("ms_per_iter_median", 0) > 2 * r["ms_per_iter"]:
            flag += " (unstable: median > 2x best)"
        speed = r.get("jaxtd_speedup")
        lines.append(
            f"{case:<22}{r['method']:<13}{r['library']:<14}"
            f"{_fmt(r.get('compile_s'), '.2f', 10)}{_fmt(r['ms_per_iter'], '.3f', 10)}"
            f"{_fmt(r.get('ms_per_iter_median'), '.3f', 10)}"
            f"{_fmt(r.get('gb_s'), '.1f', 8)}{_fmt(r.get('gflop_s'), '.1f', 9)}"
            f"{_fmt(r.get('x_bound'), '.2f', 9)}{_fmt(r.get('x_roofline'), '.2f', 11)}"
            f"{(f'{speed:.2f}x' if speed else '-'):>10}{flag}"
        )
    for note in report.get("skipped", []):
        lines.append(f"skipped: {note}")
    b = report.get("batched")
    if b:
        lines += ["", f"batched: {b['n_fits']} CP fits of {'x'.join(map(str, b['shape']))} "
                  f"rank {b['rank']}, {b['iterations']} iterations, {b['dtype']}"]  # fmt: skip
        lines.append(
            f"  jaxtd vmap     {b['jaxtd_s']:9.3f} s  ({b['jaxtd_ms_per_fit']:.3f} ms/fit, "
            f"compile {b['jaxtd_compile_s']:.2f} s)"
        )
        lines.append(
            f"  jaxtd loop     {b['jaxtd_loop_ms_per_fit'] * b['n_fits'] / 1e3:9.3f} s  "
            f"({b['jaxtd_loop_ms_per_fit']:.3f} ms/fit, one call per tensor, scaled)"
        )
        if "speedup" in b:
            lines.append(
                f"  TensorLy loop  {b['tensorly_s_scaled']:9.3f} s  "
                f"({b['tensorly_ms_per_fit']:.3f} ms/fit; {b['tensorly_loop_fits_timed']} fits "
                f"timed, scaled to {b['n_fits']})  speed-up {b['speedup']:.1f}x"
            )
    mem = report.get("memory")
    if mem:
        lines.append("")
        for init, r in mem.items():
            if "error" in r:
                lines.append(f"memory (init={init}): error: {r['error']}")
                continue
            budget = r["tensor_bytes"] + r["factor_bytes"]
            xla = r.get("xla")
            xla_txt = (
                f"XLA args+out+temp {xla['total_bytes'] / 2**20:.0f} MiB "
                f"({xla['total_bytes'] / budget:.2f}x; temp {xla['temp_size_in_bytes'] / 2**20:.0f}"
                " MiB)"
                if xla
                else "XLA memory_analysis n/a"
            )
            lines.append(
                f"memory cp_als {r['size']}^3 r{r['rank']} {r['dtype']} init={init}: peak "
                f"{r['peak_bytes'] / 2**20:.0f} MiB = {r['peak_bytes'] / budget:.2f}x "
                f"(tensor + factors {budget / 2**20:.0f} MiB); {xla_txt}"
            )
    comp = report.get("compile")
    if comp:
        lines.append("")
        if "error" in comp:
            lines.append(f"compile: error: {comp['error']}")
        else:
            lines.append(
                f"compile cp_als {comp['size']}^3 r{comp['rank']}: first call "
                f"{comp['first_call_s']:.2f} s, warm {comp['warm_call_s']:.3f} s "
                f"(trace {comp['trace_s']:.2f} + lower {comp['lower_s']:.2f} + XLA "
                f"{comp['backend_compile_s']:.2f} s, {comp['backend_compiles_first_call']} "
                f"compilations); second call {comp['second_call_s']:.3f} s, "
                f"{comp['backend_compiles_second_call']} compilations"
            )
    if report.get("targets"):
        lines += ["", "targets:"]
        for t in report["targets"]:
            lines.append(f"  {t['status']:<5} {t['name']}: {t['detail']}")
    return "\n".join(lines)


def plot_report(report: dict, path: str) -> bool:
    """ms/iter and GB/s against the number of entries, one panel per method; False without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in report["cases"] if "ms_per_iter" in r]
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    if not methods:
        return False
    fig, axes = plt.subplots(2, len(methods), figsize=(4.2 * len(methods), 7), squeeze=False)
    bw = report["roof"]["bandwidth_gb_s"]
    for j, method in enumerate(methods):
        top, bottom = axes[0, j], axes[1, j]
        lines: dict[tuple, list] = {}
        for r in rows:
            if r["method"] == method:
                key = (r["library"], r["order"], r["rank"], r["dtype"])
                lines.setdefault(key, []).append(r)
        for (lib, order, rank, _), rs in sorted(lines.items()):
            rs = sorted(rs, key=lambda r: r["size"])
            n = [r["size"] ** r["order"] for r in rs]
            style = "-o" if lib == "jaxtd" else "--x"
            label = f"{lib} {order}-way r{rank}"
            top.loglog(n, [r["ms_per_iter"] for r in rs], style, label=label, ms=4)
            if lib == "jaxtd":
                bottom.semilogx(n, [r["gb_s"] for r in rs], style, label=label, ms=4)
        bottom.axhline(bw, color="k", lw=0.8, ls=":", label=f"bandwidth {bw:.0f} GB/s")
        top.set(title=method, xlabel="entries of x", ylabel="ms per iteration")
        bottom.set(xlabel="entries of x", ylabel="GB/s (2 reads of x per iteration)")
        top.legend(fontsize=6)
        bottom.legend(fontsize=6)
    m = report["machine"]
    fig.suptitle(f"jaxtd bench: {m['device_kind']} ({m['platform']}), jax {m['jax_version']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _finite_json(obj):
    """JSON with NaN/Inf as null (strict JSON readers reject them)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
