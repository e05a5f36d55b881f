"""``nmflow pcsa``: Monte Carlo error rates of the 2T2R ternary memory read by a PCSA, and its regime
map (thesis chapter 4, Table 4.2, Fig. 4.5 and 4.6).

Writes into ``--out`` (``build/pcsa`` by default), each file atomically:

* ``pcsa.json``: ``conditions`` (error rates per programming condition at ``--corner``, as
  fractions, with standard errors and counts), ``corners`` (the same for slow, typical, fast),
  ``frontiers_ohm``, ``targets`` (Table 4.2), ``calibration``, ``model``, sample counts, seed,
  window;
* ``regime_map.png``: R_BL x R_BLb (1 kOhm-1 MOhm, log): one sampled read per point at
  ``--corner`` (blue +1, red -1, grey 0) and the noiseless convergence time, with the
  ``--window`` frontier of all three corners;
* ``pcsa_rates.csv``: the error-rate table (corner, condition, rates).

The error-rate table is printed to the console. ``--window`` is in nanoseconds.
"""

import csv
import io
import math
import sys
import time
from pathlib import Path

from ..errors import NmflowError, check_choice
from ..fileio import write_bytes, write_json, write_text

DEFAULT_OUT = "build/pcsa"

#: Grid of the regime map: points per axis, 1 kOhm to 1 MOhm.
MAP_POINTS = 181


def add_parser(sub):
    """Register ``pcsa`` on the argparse subparsers ``sub``."""
    p = sub.add_parser("pcsa", help="RRAM + PCSA Monte Carlo: ternary read error rates, regime map",
                       description="Monte Carlo of programming and reading 2T2R ternary weights "
                       "with a precharge sense amplifier (thesis chapter 4): type 1/2/3 error "
                       "rates per programming condition and corner, and the regime map with the "
                       "frontier of the three corners. Writes OUT/pcsa.json, "
                       "OUT/regime_map.png and OUT/pcsa_rates.csv.")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--samples", type=int, default=200_000,
                   help="+-1 pairs and 0 pairs programmed and read per condition and corner "
                        "(default: 200000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--window", type=float, default=50.0,
                   help="sense window in nanoseconds (default: 50)")
    p.add_argument("--corner", default="typical",
                   help="corner of the main table and map: slow, typical or fast "
                        "(default: typical)")
    p.set_defaults(func=cmd_pcsa)
    return p


def _check_args(args):
    from ..golden.device import CORNERS
    if isinstance(args.samples, bool) or not isinstance(args.samples, int) or args.samples < 1:
        raise NmflowError(f"--samples must be a positive integer, not {args.samples!r}")
    if isinstance(args.seed, bool) or not isinstance(args.seed, int) or args.seed < 0:
        raise NmflowError(f"--seed must be a non-negative integer, not {args.seed!r}")
    window = args.window
    if not isinstance(window, (int, float)) or not math.isfinite(window) or window <= 0:
        raise NmflowError(f"--window must be a positive finite number of nanoseconds, "
                          f"not {window!r}")
    check_choice("--corner", args.corner, tuple(CORNERS))
    return window * 1e-9


def run_pcsa(out, *, samples=200_000, seed=0, window=50e-9, corner="typical"):
    """Compute everything ``nmflow pcsa`` writes; return the summary (the JSON content)."""
    import numpy as np

    from ..golden import device

    started = time.monotonic()
    out = Path(out)
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
    png = out / "regime_map.png"
    write_bytes(png, _render_map(r, maps, corner, window, frontiers))
    table_csv = out / "pcsa_rates.csv"
    write_text(table_csv, _rates_csv(corners))

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
    write_json(out / "pcsa.json", summary)
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


def _print_table(summary, console):
    from rich.table import Table

    table = Table(title=f"PCSA ternary read error rates ({summary['window_ns']:g} ns window, "
                        f"{summary['samples']['reads_zero_per_condition']:,} reads per kind)")
    for column in ("corner", "condition", "type 1 (+-1 -> -+1)", "type 2 (+-1 -> 0)",
                   "type 3 (0 -> +-1)", "Table 4.2 type 3"):
        table.add_column(column, justify="left" if column in ("corner", "condition") else "right")
    for corner, conditions in summary["corners"].items():
        for cond, rates in conditions.items():
            table.add_row(corner, cond, f"{rates['type1']:.2e}", f"{rates['type2']:.2e}",
                          f"{rates['type3']:.2%}", f"{summary['targets'][cond]['type3']:.1%}")
    console.print(table)
    fronts = ", ".join(f"{name} {f['vs_1MOhm'] / 1e3:.1f} kOhm"
                       for name, f in summary["frontiers_ohm"].items())
    console.print(f"frontier vs 1 MOhm: {fronts}")
    flips = max(rates["counts"]["type1"] for conditions in summary["corners"].values()
                for rates in conditions.values())
    console.print(f"type 1: importance sampling (plain counting saw at most {flips} flips in "
                  f"{summary['samples']['reads_nonzero_per_condition']:,} reads); "
                  f"files: {summary['files']['json']}, {summary['files']['png']}")


def cmd_pcsa(args):
    from rich.console import Console

    window = _check_args(args)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    with console.status("[bold]Monte Carlo of programming and reading[/]"):
        summary = run_pcsa(args.out, samples=args.samples, seed=args.seed, window=window,
                           corner=args.corner)
    _print_table(summary, console)
    return summary
