"""The device step: Monte Carlo error rates of the 2T2R ternary memory read by a PCSA and its
regime map (thesis chapter 4, Table 4.2, Fig. 4.5 and 4.6): :func:`run_pcsa` writes
``pcsa.json``, ``regime_map.png`` and ``pcsa_rates.csv``; ``nmflow pcsa`` parses its options,
calls it and prints the table.
"""

import csv
import io
import time
from pathlib import Path

from .. import limits
from ..errors import check_int
from .outputs import write_outputs

__all__ = ["run_pcsa", "DEFAULT_OUT", "MAP_POINTS"]


DEFAULT_OUT = "build/pcsa"


#: Peak memory of the Monte Carlo per sample, in bytes (measured: 345 MB for 2 million samples
#: of one condition, 74 MB for 200,000, with the interpreter's 40 MB).
BYTES_PER_SAMPLE = 200

#: Grid of the regime map: points per axis, 1 kOhm to 1 MOhm.
MAP_POINTS = 181


def run_pcsa(out, *, samples=200_000, seed=0, window=50e-9, corner="typical"):
    """Compute everything ``nmflow pcsa`` writes; return the summary (the JSON content)."""
    import numpy as np

    from ..golden import device

    started = time.monotonic()
    out = Path(out)
    samples = check_int("samples", samples, *limits.PCSA_SAMPLES)
    limits.check_memory(f"the PCSA Monte Carlo of {samples} samples per condition",
                        BYTES_PER_SAMPLE * samples)
    corners = {}
    for name in device.CORNERS:
        corners[name] = {cond: device.monte_carlo(cond, samples=samples, seed=seed, corner=name,
                                                  window=window).as_dict()
                         for cond in device.CONDITIONS}
    frontiers = {name: {"vs_1MOhm": device.frontier(name, window=window, r_other=1e6),
                        "vs_200kOhm": device.frontier(name, window=window, r_other=200e3)}
                 for name in device.CORNERS}
    checks = {}
    for cond, target in device.TARGETS.items():
        rates = corners["typical"][cond]
        checks[cond] = {
            "type1_below": rates["type1"] < target["type1_below"],
            "type2_below": rates["type2"] < target["type2_below"],
            "type3_within_20_percent": abs(rates["type3"] / target["type3"] - 1) <= 0.2,
        }

    r = np.geomspace(1e3, 1e6, MAP_POINTS)
    maps = {name: device.regime_map(r, corner=name, window=window, seed=seed)
            for name in device.CORNERS}
    png, table_csv = out / "regime_map.png", out / "pcsa_rates.csv"

    summary = {
        "conditions": corners[corner],
        "corner": corner,
        "window_s": window,
        "window_ns": round(window * 1e9, 9),
        "samples": {"reads_nonzero_per_condition": samples, "reads_zero_per_condition": samples,
                    "type1_importance_samples": samples},
        "seed": seed,
        "corners": corners,
        "frontiers_ohm": frontiers,
        "targets": device.TARGETS,
        "typical_within_targets": checks,
        "calibration": device.CALIBRATION,
        "model": {
            "conditions": {name: c.as_dict() for name, c in device.CONDITIONS.items()},
            "corners": {name: {"vdd_v": c.vdd, "temperature_c": c.temperature}
                        for name, c in device.CORNERS.items()},
            "pcsa": device.PCSA.as_dict(),
            "equations": "see nmflow/golden/device.py (module docstring)",
        },
        "regime_map": {"points_per_axis": MAP_POINTS, "r_min_ohm": 1e3, "r_max_ohm": 1e6,
                       "converged_fraction": {name: float(np.mean(m["outcome"] != 0))
                                              for name, m in maps.items()}},
        "files": {"json": str(out / "pcsa.json"), "png": str(png), "csv": str(table_csv)},
    }
    summary["seconds"] = round(time.monotonic() - started, 2)
    write_outputs(out, {"regime_map.png": _render_map(r, maps, corner, window, frontiers),
                        "pcsa_rates.csv": _rates_csv(corners), "pcsa.json": summary})
    return summary


def _rates_csv(corners):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["corner", "condition", "type1", "type1_stderr", "type2", "type2_upper_95",
                     "type3", "type3_stderr", "reads_per_kind"])
    for corner, conditions in corners.items():
        for cond, rates in conditions.items():
            writer.writerow([corner, cond, f"{rates['type1']:.4g}", f"{rates['type1_stderr']:.3g}",
                             f"{rates['type2']:.6g}", f"{rates['type2_upper_95']:.3g}",
                             f"{rates['type3']:.6g}", f"{rates['type3_stderr']:.3g}",
                             rates["reads_zero"]])
    return buffer.getvalue()


def _render_map(r, maps, corner, window, frontiers):
    """The regime map as PNG bytes (matplotlib, Agg canvas, no pyplot state)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap, LogNorm
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    styles = {"slow": ("tab:orange", "--"), "typical": ("black", "-"), "fast": ("tab:green", ":")}
    fig = Figure(figsize=(12, 5.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    chosen = maps[corner]
    image = axes[0].pcolormesh(r, r, chosen["outcome"], shading="nearest", vmin=-1.5, vmax=1.5,
                               cmap=ListedColormap(["tab:red", "lightgrey", "tab:blue"]))
    colorbar = fig.colorbar(image, ax=axes[0], ticks=[-1, 0, 1])
    colorbar.set_label("weight read (one read per point)")
    axes[0].set_title(f"(a) outcome, {corner} corner, {window * 1e9:g} ns window")
    t_ns = np.clip(chosen["t_conv"] * 1e9, 1.0, 1e4)
    image = axes[1].pcolormesh(r, r, t_ns, shading="nearest", norm=LogNorm(1.0, 1e4),
                               cmap="viridis")
    fig.colorbar(image, ax=axes[1]).set_label("noiseless convergence time (ns)")
    axes[1].set_title(f"(b) convergence time, {corner} corner")
    handles = []
    for ax in axes:
        for name, m in maps.items():
            colour, style = styles[name]
            ax.contour(r, r, m["t_conv"], levels=[window], colors=[colour], linestyles=[style],
                       linewidths=1.6)
        for edge in (1e4, 1e5):
            ax.axvline(edge, color="grey", lw=0.6, alpha=0.6)
            ax.axhline(edge, color="grey", lw=0.6, alpha=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(r[0], r[-1])
        ax.set_ylim(r[0], r[-1])
        ax.set_xlabel("R_BL (ohm)")
        ax.set_ylabel("R_BLb (ohm)")
    for name in maps:
        colour, style = styles[name]
        handles.append(Line2D([], [], color=colour, linestyle=style,
                              label=f"{name} {window * 1e9:g} ns frontier "
                                    f"({frontiers[name]['vs_1MOhm'] / 1e3:.0f} kOhm)"))
    axes[1].legend(handles=handles, loc="upper right", fontsize=8)
    fig.suptitle("2T2R + PCSA regime map (frontiers: noiseless reads, all three corners)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
