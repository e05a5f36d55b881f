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

import sys

from .. import limits
from ..errors import check_choice, check_int, check_number
from .options import integer, number, ranged
from ..flow.pcsa import DEFAULT_OUT, run_pcsa


def add_parser(sub):
    """Register ``pcsa`` on the argparse subparsers ``sub``."""
    p = sub.add_parser("pcsa", help="RRAM + PCSA Monte Carlo: ternary read error rates, regime map",
                       description="Monte Carlo of programming and reading 2T2R ternary weights "
                       "with a precharge sense amplifier (thesis chapter 4): type 1/2/3 error "
                       "rates per programming condition and corner, and the regime map with the "
                       "frontier of the three corners. Writes OUT/pcsa.json, "
                       "OUT/regime_map.png and OUT/pcsa_rates.csv.")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    ranged(p, "--samples", integer(*limits.PCSA_SAMPLES),
           help="+-1 pairs and 0 pairs programmed and read per condition and corner "
           "(default: 200000)", default=200_000)
    ranged(p, "--seed", integer(0, limits.SEED), default=0, help="random seed (default: 0)")
    ranged(p, "--window", number(high=limits.PCSA_WINDOW_NS, above=0, unit="nanoseconds"),
           default=50.0, help="sense window in nanoseconds (default: 50)")
    p.add_argument("--corner", default="typical",
                   help="corner of the main table and map: slow, typical or fast "
                        "(default: typical)")
    p.set_defaults(func=cmd_pcsa)
    return p


def _check_args(args):
    from ..golden.device import CORNERS
    check_int("--samples", args.samples, *limits.PCSA_SAMPLES)
    check_int("--seed", args.seed, 0, limits.SEED)
    window = check_number("--window", args.window, high=limits.PCSA_WINDOW_NS, above=0,
                          unit="nanoseconds")
    check_choice("--corner", args.corner, tuple(CORNERS))
    return window * 1e-9


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
