"""cocotb testbench of the inference engine in bulk: Python wakes per run, not per clock.

The design is :class:`~nmflow.sim.bulk.BulkBench` (``nmflow_bulk``): the engine's own Verilog
with an in-gateware stimulus, random gaps and backpressure from LFSRs, and capture memories.
The test writes the input vectors to a file the simulator loads into the input memory (and,
for an engine whose weights are in SPRAM, first writes every weight row through ``weights``, as
:mod:`nmflow.sim.tb_engine` does), raises ``go``, and sleeps until ``done``, waking every
watchdog budget to report progress and to fail a stalled engine. Then the simulator writes every
captured beat to files, and :func:`nmflow.sim.bulkcheck.check_beats` compares each field of
each result beat (index, score, class, last) and trace beat (layer, group, activations) with the
golden model (:func:`nmflow.golden.reference.reference`, through the engine's read seam, so the
read-error injector's twin applies). The simulator, not Python, sets the pace.

Settings come from the same environment variables as :mod:`nmflow.sim.tb_engine`
(``NMFLOW_TB_MODEL``, ``_CONFIG``, ``_INPUTS``, ``_FIRST``, ``_COUNT``, ``_OUT``, ``_READY``,
``_VALID``, ``_SEED``, ``_PROGRESS``), and it writes the same outputs (classes, scores,
``acts{n}``, cycles, finish, sim_cycles). A chunk's gap and backpressure seeds come from the
seed and its first vector (from the seed alone at vector 0), as there. ``NMFLOW_TB_CAPACITY``
is the number of images the bench was built for.

The watchdog is the beat testbench's: ``engine stalled: no inference finished in <budget>
cycles (<done> of <images> done)`` when no inference finishes within
:func:`~nmflow.sim.streams.watchdog_cycles` of the engine's ``cycles_per_inference``.
"""

import json
import os
import random
from pathlib import Path
from types import SimpleNamespace

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, First, RisingEdge, Timer

from nmflow.golden import hwmodel
from nmflow.golden.plan import EnginePlan
from nmflow.golden.reference import reference
from nmflow.rtl.engine import result_layout, trace_layout
from nmflow.rtl.verilog import engine_read_function
from nmflow.sim.bulk import CAPTURES, INPUTS_FILE, probability_threshold
from nmflow.sim.bulkcheck import check_beats, decode_fields, read_words
from nmflow.sim.harness import cycle
from nmflow.sim.streams import watchdog_cycles
from nmflow.sim.tb_engine import ProgressFile, load_weight_rows, write_outputs
from nmflow.sim.tbutil import PERIOD_NS, start


def settings():
    """The testbench's settings from the environment (see the module's text)."""
    env = os.environ
    model = hwmodel.load(env["NMFLOW_TB_MODEL"])
    config = json.loads(Path(env["NMFLOW_TB_CONFIG"]).read_text())
    first = int(env.get("NMFLOW_TB_FIRST", "0"))
    with np.load(env["NMFLOW_TB_INPUTS"]) as f:
        inputs = f["x"].astype(np.int64)
    count = int(env.get("NMFLOW_TB_COUNT", len(inputs) - first))
    seed = int(env.get("NMFLOW_TB_SEED", "0"))
    return SimpleNamespace(
        model=model, config=config, first=first, inputs=inputs[first:first + count],
        ready=float(env.get("NMFLOW_TB_READY", "1.0")),
        valid=float(env.get("NMFLOW_TB_VALID", "1.0")),
        # The patterns of a chunk from its first vector on (those of a whole run, from 0).
        pattern=f"{seed}" if first == 0 else f"{seed}/{first}",
        capacity=int(env.get("NMFLOW_TB_CAPACITY", "0")),
        out=env.get("NMFLOW_TB_OUT"), progress=env.get("NMFLOW_TB_PROGRESS"))


def lfsr_seed(text):
    """A non-zero 32-bit LFSR seed drawn from ``text``."""
    return random.Random(text).getrandbits(32) or 1


def write_hex(path, values):
    with open(path, "w") as f:
        f.write("".join(f"{int(v):x}\n" for v in values))


async def wait_until_done(dut, images, budget, progress):
    """Sleep until ``done``, waking every ``budget`` cycles to report progress; fail with
    ``engine stalled: ...`` when no inference finished in that time."""
    while not dut.done.value:
        before = int(dut.finished.value)
        await First(RisingEdge(dut.done), Timer(budget * PERIOD_NS, "ns"))
        finished = int(dut.finished.value)
        progress(min(finished, images), cycle())
        assert dut.done.value or finished > before, (
            f"engine stalled: no inference finished in {budget} cycles ({finished} of "
            f"{images} done)")


def read_captures(model, pe, offset):
    """The captured beats' fields and the cycles of each inference's first input beat and
    last result beat (in :func:`~nmflow.sim.harness.cycle` numbers: ``offset`` added)."""
    hidden = [layer.n_out for layer in model.layers[:-1]]
    layouts = {"results": result_layout(model.n_classes, model.score_bits),
               "traces": trace_layout(len(model.layers),
                                      max(-(-size // pe) for size in hidden + [model.n_classes]),
                                      pe)}
    fields = {name: decode_fields(read_words(CAPTURES[name]), layout)
              for name, layout in layouts.items()}
    times = {name: np.array(read_words(CAPTURES[name]), dtype=np.int64) + offset
             for name in ("starts", "finishes")}
    return fields["results"], fields["traces"], times["starts"], times["finishes"]


def _fit(values, count):
    """``values`` cut or padded with zeros to ``count`` entries."""
    out = np.zeros(count, dtype=np.int64)
    out[:min(count, len(values))] = values[:count]
    return out


@cocotb.test()
async def engine_matches_golden_in_bulk(dut):
    """Every input vector through the engine at the simulator's pace; every beat equals the
    golden model's."""
    s = settings()
    model, config, images = s.model, s.config, len(s.inputs)
    pe = config.get("pe", 1)
    assert 0 < images <= s.capacity, (
        f"the bulk bench holds {s.capacity} images, not {images}: build it for more")
    write_hex(INPUTS_FILE, s.inputs.reshape(-1))
    idle = {"go": 0, "load": 0, "dump": 0, "images": images,
            "valid_threshold": probability_threshold(s.valid, "valid"),
            "ready_threshold": probability_threshold(s.ready, "ready"),
            "gap_seed": lfsr_seed(f"{s.pattern}/gaps"),
            "ready_seed": lfsr_seed(f"{s.pattern}/ready")}
    read = engine_read_function(config)     # the injector's twin, if the engine has one
    if read is not None:
        idle["errors__valid"] = 0           # the configuration after reset stays
    spram = config.get("memory") == "spram"
    if spram:
        idle.update({"weights__en": 0, "pairs__en": 0})
    await start(dut, **idle)
    if spram:                               # SPRAM starts empty: every row first, as a host does
        await load_weight_rows(dut, EnginePlan(model, config["lanes"], pe=pe,
                                               first_layer_bits=config.get("first_layer_bits")))
    dut.load.value = 1                      # the simulator reads the vectors
    await FallingEdge(dut.clk)
    progress = ProgressFile(s.progress, images)
    dut.go.value = 1
    offset = cycle() - int(dut.cycle.value)     # a captured cycle + offset: cycle() numbers
    budget = watchdog_cycles(config["cycles_per_inference"], ready=s.ready, valid=s.valid)
    await wait_until_done(dut, images, budget, progress)
    sim_cycles = cycle()
    dut.dump.value = 1                      # the simulator writes the captures
    await FallingEdge(dut.clk)

    results, traces, starts, finishes = read_captures(model, pe, offset)
    golden = reference(model, s.inputs, lanes=config["lanes"], pe=pe, read=read)
    check = check_beats(model, golden, results, traces, pe=pe, first=s.first,
                        starts=_fit(starts, images), finishes=_fit(finishes, images))
    for line in check.mismatches[:20]:
        dut._log.error("%s", line)
    if s.out:
        write_outputs(s.out, SimpleNamespace(acts=[check.outputs[f"acts{n}"]
                                                   for n in range(len(model.layers) - 1)],
                                             **check.outputs), sim_cycles)
    dut._log.info("%d inferences, %d beats compared, %d errors, %d cycles", images,
                  check.compared, check.errors, sim_cycles)
    assert check.errors == 0, check.failure()
