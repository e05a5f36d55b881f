"""The parsers of Yosys and nextpnr logs (pure functions, no tools run here).

The parsers read the log text nextpnr writes with ``--log`` (Amaranth's ``{name}.tim``) and Yosys
writes with ``-l`` (Amaranth's ``{name}.rpt``). The formats, copied from nextpnr 0.11 and
Yosys 0.70:

* device utilisation, printed once after packing::

      Info: Device utilisation:
      Info: 	         ICESTORM_LC:    6017/   5280   113%
      Info: 	        ICESTORM_RAM:       1/     30     3%

* maximum frequency, printed after placement (an estimate) and again after routing (the result);
  one line per clock, the last one for a clock is the post-route figure. A clock that misses its
  target is reported as a warning after routing::

      Info: Max frequency for clock 'cd_sync.clk': 94.95 MHz (PASS at 50.00 MHz)
      Warning: Max frequency for clock '$glbnet$cd_sync.clk': 61.16 MHz (FAIL at 130.01 MHz)

* errors: ``ERROR: Unable to place cell '...', no BELs remaining to implement cell type '...'``.
"""

import re

__all__ = ["CELL_NAMES", "parse_utilisation", "parse_fmax", "parse_fmax_by_clock",
           "parse_errors", "parse_yosys_cells", "overflows", "fit_error"]

#: nextpnr cell type -> what a person calls it, for error messages.
CELL_NAMES = {
    "ICESTORM_LC": "logic cells",
    "ICESTORM_RAM": "block RAMs",
    "ICESTORM_DSP": "DSPs",
    "ICESTORM_SPRAM": "SPRAMs",
    "ICESTORM_PLL": "PLLs",
    "SB_IO": "I/O pins",
    "SB_GB": "global buffers",
    "TRELLIS_COMB": "LUTs",
    "TRELLIS_FF": "flip-flops",
    "TRELLIS_RAMW": "distributed-RAM write ports",
    "TRELLIS_IO": "I/O pins",
    "DP16KD": "block RAMs",
    "MULT18X18D": "DSPs",
    "ALU54B": "DSP accumulators",
    "DCCA": "global clock buffers",
    "EHXPLLL": "PLLs",
}

_UTILISATION = re.compile(r"^Info:\s+([A-Za-z0-9_$]+):\s+(\d+)/\s*(\d+)\s+(\d+)%\s*$")
_FMAX = re.compile(r"^(?:Info|Warning):\s+Max frequency for clock\s+'([^']*)':\s+([0-9.]+) MHz")
_ERROR = re.compile(r"^ERROR:\s*(.*?)\s*$")
_YOSYS_CELL = re.compile(r"^\s*(\d+)\s{2,}(\S+)\s*$")


def parse_utilisation(text):
    """Read the device utilisation table of a nextpnr log.

    Parameters
    ----------
    text : str
        A nextpnr log (``--log`` file).

    Returns
    -------
    dict
        nextpnr cell type -> ``{"used": int, "total": int, "percent": int}``, in log order; empty
        if the log has no table (nextpnr stopped before packing). If the table appears more than
        once, the last figures win.
    """
    table = {}
    for line in text.splitlines():
        match = _UTILISATION.match(line)
        if match:
            cell, used, total, percent = match.groups()
            table[cell] = {"used": int(used), "total": int(total), "percent": int(percent)}
    return table


def parse_fmax_by_clock(text):
    """Read the maximum frequency of every clock from a nextpnr log.

    nextpnr reports Fmax after placement and again after routing; for each clock the last report
    (post-route) wins.

    Returns
    -------
    dict
        Clock net name -> Fmax in MHz; empty if the log has no report.
    """
    fmax = {}
    for line in text.splitlines():
        match = _FMAX.match(line)
        if match:
            fmax[match.group(1)] = float(match.group(2))
    return fmax


def parse_fmax(text):
    """Read the achieved maximum frequency from a nextpnr log.

    Returns
    -------
    float or None
        The post-route Fmax in MHz (the last report for each clock), the lowest over the clocks if
        the design has several; ``None`` if the log has no timing report.
    """
    fmax = parse_fmax_by_clock(text)
    return min(fmax.values()) if fmax else None


def parse_errors(text):
    """Return the messages of the ``ERROR:`` lines of a Yosys or nextpnr log, in order."""
    errors = []
    for line in text.splitlines():
        match = _ERROR.match(line)
        if match and match.group(1):
            errors.append(match.group(1))
    return errors


def parse_yosys_cells(text):
    """Read the cell counts of the last ``stat`` report of a Yosys log.

    Returns
    -------
    dict
        Cell type -> count (``SB_LUT4``, ``SB_RAM40_4K``, ``DP16KD``, ...) from the last ``=== ...``
        section; Yosys' bookkeeping cells (``$scopeinfo``) are left out. Empty if the log has none.
    """
    lines = text.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("=== ")]
    if not starts:
        return {}
    cells = {}
    for line in lines[starts[-1] + 1:]:
        if line.strip() and not line.startswith((" ", "\t", "=")):
            break
        match = _YOSYS_CELL.match(line)
        if match and match.group(2) != "$scopeinfo":
            cells[match.group(2)] = int(match.group(1))
    return cells


def overflows(utilisation):
    """Return ``[(cell_type, used, total), ...]`` for every cell type used beyond the device."""
    return [(cell, row["used"], row["total"]) for cell, row in utilisation.items()
            if row["used"] > row["total"]]


def fit_error(utilisation, board):
    """The one-line refusal for a design that does not fit ``board``, or ``None`` if it fits.

    Parameters
    ----------
    utilisation : dict
        As returned by :func:`parse_utilisation`.
    board : :class:`~nmflow.boards.board.Board`

    Returns
    -------
    str or None
        e.g. ``design does not fit icebreaker (iCE40UP5K): needs 6017 logic cells (ICESTORM_LC),
        the device has 5280``; several overflowing resources are joined with ``"; "``.
    """
    over = overflows(utilisation)
    if not over:
        return None
    needs = "; ".join(f"needs {used} {CELL_NAMES.get(cell, 'cells')} ({cell}), "
                      f"the device has {total}" for cell, used, total in over)
    return f"design does not fit {board.name} ({board.device}): {needs}"
