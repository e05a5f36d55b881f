"""``nmflow bench --table``: the Markdown tables of the README's benchmark section, from what
``nmflow bench`` wrote (``bench.json``, with its ``mnist_spram`` section if ``--mnist`` ran, and
``sweep.json`` if ``--sweep`` ran), so that the README's figures are the benchmark's."""

import json
from pathlib import Path

from ..errors import NmflowError

__all__ = ["read_bench", "read_sweeps", "render"]

BOARD_TITLES = {"icebreaker": "iCEBreaker", "ulx3s": "ULX3S"}


def read_bench(path, what="bench.json"):
    """A benchmark JSON file as a dict; one line naming the file and the rule if it is not."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise NmflowError(f"{what} not found at {str(path)!r}: run nmflow bench first") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise NmflowError(f"{what} must be a JSON file written by nmflow bench, not "
                          f"{str(path)!r} ({type(error).__name__})") from None
    if not isinstance(data, dict):
        raise NmflowError(f"{what} must hold a JSON object, not a {type(data).__name__} "
                          f"({str(path)!r})")
    return data


def read_sweeps(run_dir):
    """The sweeps in ``run_dir`` (``sweep.json``, and ``sweep_*.json`` written with ``--out``,
    such as one board's), their boards merged in file-name order; None if there are none."""
    boards = {}
    for path in sorted(Path(run_dir).glob("sweep*.json")):
        sweep = read_bench(path, path.name)
        if not isinstance(sweep.get("boards"), dict):
            raise NmflowError(f"{path.name} must hold the boards of an nmflow bench --sweep, "
                              f"not {sorted(sweep)!r}")
        boards.update(sweep["boards"])
    return {"boards": boards} if boards else None


def _num(value, digits=0, unit=""):
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".rstrip()


def _pct(part, total):
    if not isinstance(part, (int, float)) or not isinstance(total, (int, float)) or not total:
        return _num(part)
    return f"{_num(part)} / {_num(total)} ({100 * part / total:.0f} %)"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _folding(entry):
    return (f"{entry.get('lanes')} lanes x {entry.get('pe')} PE (SIMD {entry.get('simd')}), "
            f"first layer {entry.get('first_layer_bits')} bits a cycle")


def _boards_table(bench):
    boards = bench.get("boards") or {}
    if not isinstance(boards, dict) or not boards:
        return ""
    names = list(boards)
    cycles = bench.get("cycles") or {}
    header = ["figure"] + [f"{BOARD_TITLES.get(n, n)} ({boards[n].get('device', '?')})"
                           for n in names]

    def row(label, cell):
        return [label] + [cell(boards[n], cycles.get(n) or {}) for n in names]

    def margin(b):
        return f"{_num(b.get('run_clock_mhz'), 2)} MHz ({_num(b.get('clock_margin'), 2)})"

    rows = [
        row("folding", lambda b, c: _folding(b)),
        row("back to back: cycles per inference (ideal `sum ceil(in/SIMD) * ceil(out/PE)`)",
            lambda b, c: f"{_num(b.get('cycles_per_inference'))} ({_num(b.get('ideal_cycles'))})"
                         f": {_num(b.get('ratio_to_ideal'), 3)} x"),
        row("measured in cocotb: interval / latency of one inference (cycles)",
            lambda b, c: f"{_num(c.get('measured_interval_cycles'))} / "
                         f"{_num(c.get('measured_latency_cycles'))}"),
        row("logic cells (LUT4 + FF on iCE40, LUT4 on ECP5)",
            lambda b, c: _pct(b.get("logic_cells"), b.get("logic_cells_total"))),
        row("block RAMs / SPRAMs / DSPs",
            lambda b, c: f"{_pct(b.get('block_rams'), b.get('block_rams_total'))}, "
                         f"{_num(b.get('sprams'))}, {_num(b.get('dsps'))}"),
        row("Fmax (nextpnr, post-route)", lambda b, c: _num(b.get("fmax_mhz"), 2, "MHz")),
        row("run clock (PLL; margin Fmax / clock)", lambda b, c: margin(b)),
        row("images per second at the run clock",
            lambda b, c: _num(b.get("images_per_second_at_run_clock"))),
        row("images per second at Fmax / at the oscillator",
            lambda b, c: f"{_num(b.get('images_per_second_at_fmax'))} / "
                         f"{_num(b.get('images_per_second_at_oscillator'))}"),
        row("synapse-ops per logic cell per cycle",
            lambda b, c: _num(b.get("synapse_ops_per_cell_cycle"), 4)),
        row("pair codes per cycle: the engine's / the block RAMs' bound",
            lambda b, c: f"{_num(b.get('lanes'))} / "
                         f"{_num((b.get('memory_bound') or {}).get('pair_codes_per_cycle'))}"),
        row("board-side batch (inputs held on chip)",
            lambda b, c: f"{_num(b.get('batch'))} in {b.get('batch_memory', '-')}"),
        row("build wall time", lambda b, c: _num(b.get("seconds"), 0, "s")),
    ]
    if any("injector" in boards[n] for n in names):
        rows.append(row("with the read-error injector: logic cells, Fmax, run clock",
                        lambda b, c: "-" if "injector" not in b else
                        f"does not fit: needs {_num(b['injector'].get('logic_cells_needed'))} "
                        f"logic cells" if b["injector"].get("fits") is False else
                        f"{_num(b['injector'].get('logic_cells'))} "
                        f"(x{_num(b['injector'].get('logic_cell_ratio'), 2)}), "
                        f"{_num(b['injector'].get('fmax_mhz'), 2, 'MHz')}, "
                        f"{_num(b['injector'].get('run_clock_mhz'), 2, 'MHz')}"))
    return _table(header, rows)


def _simulation_table(bench):
    sim = bench.get("simulation")
    if not isinstance(sim, dict):
        return ""
    beat = sim.get("beat") or {}
    simulators = [s for s in ("icarus", "verilator") if s in (sim.get("cycles_per_second") or {})]
    header = ["cocotb testbench", "simulator", "cycles per second",
              f"{_num(sim.get('testbench_images'))} test images: in the testbench", "wall",
              "of which compilation"]
    rows = []
    for name, figures in (("bulk", sim), ("beat", beat)):
        for simulator in simulators:
            if simulator not in (figures.get("cycles_per_second") or {}):
                continue
            cached = (figures.get("compile_cached") or {}).get(simulator)
            rows.append([name, simulator.capitalize(),
                         _num(figures["cycles_per_second"][simulator]),
                         _num((figures.get("testbench_seconds") or {}).get(simulator), 1, "s"),
                         _num((figures.get("wall_seconds") or {}).get(simulator), 1, "s"),
                         _num((figures.get("compile_seconds") or {}).get(simulator), 1, "s")
                         + (" (cached)" if cached else "")])
    if "amaranth_cycles_per_second" in sim:
        rows.append(["Amaranth's simulator (no cocotb)", "Python",
                     _num(sim["amaranth_cycles_per_second"]),
                     f"{_num(sim.get('amaranth_seconds'), 1, 's')} for {_num(sim.get('images'))}"
                     " images", "", ""])
    return _table(header, rows)


def _mnist_table(bench):
    m = bench.get("mnist_spram")
    if not isinstance(m, dict):
        return ""
    sizes = "-".join(str(s) for s in m.get("sizes", []))
    rows = [
        ["network, folding", f"TNN {sizes}, {_num(m.get('lanes'))} lanes x {_num(m.get('pe'))}"
                             f", weights in {m.get('memory', '-')}"],
        ["fits the board", "yes" if m.get("fits") else f"no: {m.get('refused', '-')}"],
        ["logic cells / block RAMs / SPRAMs / DSPs",
         f"{_pct(m.get('logic_cells'), m.get('logic_cells_total'))}, {_num(m.get('block_rams'))}"
         f", {_num(m.get('sprams'))}, {_num(m.get('dsps'))}"],
        ["Fmax / run clock (margin)", f"{_num(m.get('fmax_mhz'), 2, 'MHz')} / "
                                      f"{_num(m.get('run_clock_mhz'), 2, 'MHz')} "
                                      f"({_num(m.get('clock_margin'), 2)})"],
        ["cycles per inference back to back (ideal)",
         f"{_num(m.get('cycles_per_inference'))} ({_num(m.get('ideal_cycles'))})"],
        ["images per second at the run clock", _num(m.get("images_per_second_at_run_clock"))],
        ["test accuracy: integer model = RTL (float)",
         f"{_num(100 * m['int_accuracy'], 2) if isinstance(m.get('int_accuracy'), float) else '-'}"
         f" % ({_num(100 * m['float_accuracy'], 2) if isinstance(m.get('float_accuracy'), float) else '-'} %)"
         f" on {_num(m.get('test_images'))} test images"],
        ["RTL against the golden model",
         f"{_num(m.get('mismatches'))} mismatches in {_num(m.get('outputs_checked'))} outputs "
         f"({_num(m.get('simulated_images'))} images)"],
        ["simulation (Verilator, bulk testbench)",
         f"{_num(m.get('simulation_seconds'), 1, 's')} wall, {_num(m.get('simulation_jobs'))} "
         f"processes, {_num(m.get('simulation_cycles_per_second'))} cycles/s"],
    ]
    return _table(["figure", "value"], rows)


#: The conv networks' names in the table.
CONV_TITLES = {"digits_tnn": "digits TNN", "digits_bnn": "digits BNN",
               "cifar_shaped": "CIFAR-shaped BNN (random)", "mnist_tnn": "MNIST TNN"}


def _conv_table(bench):
    conv = bench.get("conv")
    if not isinstance(conv, dict):
        return ""
    header = ["network", "board, lanes x PE", "accuracy", "images (mismatches)",
              "cycles (ideal)", "logic cells", "block RAMs", "SPRAMs", "Fmax", "run clock",
              "images/s at the run clock"]
    rows = []
    for name, title in CONV_TITLES.items():
        entry = conv.get(name)
        if not isinstance(entry, dict):
            continue
        accuracy = entry.get("accuracy")
        for board, b in (entry.get("boards") or {}).items():
            fits = b.get("fits")
            rows.append([
                f"{title} `{entry.get('arch')}`",
                f"{BOARD_TITLES.get(board, board)}, {b.get('lanes')} x {b.get('pe')}",
                f"{100 * accuracy:.2f} %" if isinstance(accuracy, float) else "-",
                f"{_num(b.get('simulated_images'))} ({_num(b.get('mismatches'))})",
                f"{_num(b.get('cycles_per_inference'))} ({_num(b.get('ideal_cycles'))})",
                _pct(b.get("logic_cells"), b.get("logic_cells_total")) if fits
                else f"does not fit: {b.get('refused', '-')}",
                _num(b.get("block_rams")), _num(b.get("sprams")),
                _num(b.get("fmax_mhz"), 2, "MHz"), _num(b.get("run_clock_mhz"), 2, "MHz"),
                _num(b.get("images_per_second_at_run_clock"))])
    return _table(header, rows) if rows else ""


def _sweep_table(sweep):
    boards = (sweep or {}).get("boards")
    if not isinstance(boards, dict) or not boards:
        return ""
    header = ["board", "lanes x PE (first-layer bits)", "cycles (ideal)", "logic cells",
              "block RAMs", "DSPs", "Fmax", "run clock", "images/s at the run clock",
              "synapse-ops / cell / cycle", "limit"]
    rows = []
    for name, points in boards.items():
        for p in points if isinstance(points, list) else []:
            bits = p.get("first_layer_bits")
            built = "logic_cells" in p
            rows.append([
                BOARD_TITLES.get(name, name), f"{p.get('lanes')} x {p.get('pe')} ({bits})",
                f"{_num(p.get('cycles_per_inference'))} ({_num(p.get('ideal_cycles'))})",
                _pct(p.get("logic_cells"), p.get("logic_cells_total")) if built
                else f"refused: {p.get('refused', '-')}",
                _num(p.get("block_rams")), _num(p.get("dsps")),
                _num(p.get("fmax_mhz"), 2, "MHz"), _num(p.get("run_clock_mhz"), 2, "MHz"),
                _num(p.get("images_per_second_at_run_clock")),
                _num(p.get("synapse_ops_per_cell_cycle"), 4), p.get("limit", "-")])
    return _table(header, rows)


def render(bench, sweep=None):
    """The Markdown of the benchmark tables: the boards, the simulators, the MNIST-size network
    from SPRAM and the convolutional networks (when ``bench`` has them) and the SIMD x PE sweep
    (when given)."""
    network = bench.get("network") or {}
    parts = []
    if network:
        sizes = "-".join(str(s) for s in network.get("sizes", []))
        accuracy = network.get("int_accuracy")
        kind = {"ternary": "TNN", "binary": "BNN"}.get(network.get("weight_kind"), "network")
        parts.append(f"Network: {kind} {sizes} on digits"
                     + (f", test accuracy {100 * accuracy:.2f} %" if isinstance(accuracy, float)
                        else "") + ".")
    for section in (_boards_table(bench), _simulation_table(bench), _mnist_table(bench),
                    _conv_table(bench), _sweep_table(sweep)):
        if section:
            parts.append(section)
    if not parts:
        raise NmflowError("bench.json must hold at least one of network, boards, simulation, "
                          "mnist_spram or conv, not none of them")
    return "\n\n".join(parts) + "\n"
