"""``nmflow bench --learning``: the learning units on the boards, and training on the board
against training on this CPU.

The section ``learning`` of ``bench.json``:

* ``network``: the EqProp network every figure is for (digits, ``sizes``, binary weights with
  metaplasticity ``m`` and the decay ``2**-decay_shift``, ``T`` free and ``K`` nudged steps);
* ``<board>.eqprop``: the EqProp unit behind its UART link (``EqPropHostTop``) built for the
  board at ``lanes`` (``storage``: where its hidden weights live, block RAM or SPRAM):
  ``logic_cells``, ``block_rams``, ``sprams``, ``dsps``, ``fmax_mhz``,
  ``run_clock_mhz``; ``cycles_per_step`` (a free-phase settling step) and
  ``cycles_per_nudged_step``, measured in Amaranth's simulator on real digits (no stall on the
  streams), against ``ideal_cycles_per_step`` (multiply-accumulates of a step over the lanes);
  ``cycles_per_sample``: one training sample at batch 1 (load, free phase, both nudged phases,
  update), measured the same way; ``samples_per_second_at_run_clock``;
* ``<board>.metaplastic``: the engine's board top with the metaplastic update unit
  (``nmflow build --metaplastic``) at :data:`META_FOLDING`: the same build figures;
  ``cycles_per_step``: one update of every hidden weight of the network (one beat per group of
  ``lanes`` synapses), measured in Amaranth's simulator and checked against the unit's twin,
  against ``ideal_cycles_per_step`` (the groups);
* ``samples_per_second``: ``board`` (the iCEBreaker's EqProp unit at its run clock: the cycles the
  gateware takes per training sample), ``fixed_twin_cpu`` and ``float_twin_cpu`` (the fixed-point
  twin and the float PyTorch model training the same network at batch 1 on this machine), their
  ratios, and ``link_bound`` (the samples per second the UART link itself can carry, one TRAIN
  frame and its reply per sample).
"""

import time
from pathlib import Path

import numpy as np

from .. import limits
from ..errors import NmflowError, check_int

__all__ = ["run_learning", "LEARNING_LANES", "learning_config"]

#: The engine's folding (lanes, pe, first_layer_bits) beside the metaplastic unit on every
#: board: ``nmflow build --metaplastic``'s default (at the iCE40's fastest folding, 64 x 4, the
#: engine and the unit need 7,020 logic cells of its 5,280).
META_FOLDING = (16, 1, None)

#: The EqProp unit's lanes per board (a power of two dividing every layer's inputs): on the
#: iCE40 the most that fit its logic with the default network (the pipelined binary unit at 8
#: lanes needs 6,669 logic cells of 5,280; at 4, 4,782).
LEARNING_LANES = {"icebreaker": 4, "ulx3s": 16}


def learning_config(hidden=(32,), m=10.0, decay_shift=10, T=40, K=15):
    """The bench's EqProp network: digits in and out, binary weights with metaplasticity."""
    from ..golden.datasets import load_digits
    from ..golden.eqprop_fixed import FixedEqPropConfig
    data = load_digits()
    return FixedEqPropConfig(sizes=(data.n_features, *hidden, data.n_classes), T=T, K=K,
                             lr_shifts=(5,) + (6,) * len(hidden), batch=1, weights="binary",
                             m=m, decay_shift=decay_shift)


def _float_config(config):
    """The float network that trains what ``config`` (the fixed-point twin's) trains."""
    from ..golden.eqprop import EqPropConfig
    return EqPropConfig(sizes=config.sizes, T=config.T, K=config.K, beta=config.beta,
                        lrs=tuple(2.0 ** -e for e in config.lr_shifts), batch=1,
                        weights=config.weights, m=config.m,
                        decay=2.0 ** -config.decay_shift if config.decay_shift else 0.0)


def unit_cycles(config, lanes, samples=2, storage="memory"):
    """Cycles of the EqProp unit in Amaranth's simulator on the first ``samples`` digits, all
    training, the streams never stalling: the free and nudged settling steps (the median of the
    intervals between their ends, within a phase), the cycles per training sample (between the predictions, the next sample's load
    included) and whether the predictions equal the twin's. ``storage``: the hidden weights'
    (``"spram"``: loaded through the host port first, as the host link does)."""
    from ..flow.eqprop import _digits, _twin_after
    from ..golden.eqprop_fixed import init_params
    from ..rtl.eqprop import EqPropUnit
    from ..sim.eqprop_sim import run_pysim

    x, y = _digits(samples)
    done = []
    spram = storage == "spram"
    unit = EqPropUnit(config, lanes=lanes, storage=storage, host_port=spram)
    observed, pulses = run_pysim(unit, [(x[i], y[i], 1) for i in range(len(y))], valid=1.0,
                                 ready=1.0, done=done, load=init_params(config) if spram else None)
    _, twin = _twin_after(config, x, y)
    steps = config.T + 2 * config.K
    if len(pulses) != steps * len(y) or len(done) != len(y):
        raise NmflowError(f"the EqProp unit took {len(pulses)} settling steps and gave "
                          f"{len(done)} predictions on {len(y)} samples; it must take "
                          f"{steps * len(y)} and give {len(y)}")
    free, nudged = [], []
    for n in range(len(y)):
        p = pulses[n * steps:(n + 1) * steps]
        free += np.diff(p[:config.T]).tolist()
        nudged += np.diff(p[config.T:config.T + config.K]).tolist()
        nudged += np.diff(p[config.T + config.K:]).tolist()
    plan = unit.plan
    if not free or not nudged:
        raise NmflowError(f"T and K must be at least 2 for the bench to time a step between two "
                          f"others, not T {config.T}, K {config.K}")
    step = int(np.median(free))
    return {"cycles_per_step": step, "cycles_per_nudged_step": int(np.median(nudged)),
            "ideal_cycles_per_step": plan.ideal_cycles_per_step(),
            "ratio_to_ideal": round(step / plan.ideal_cycles_per_step(), 4),
            "planned_cycles_per_step": plan.issue_cycles_per_step(),
            "cycles_per_sample": int(np.diff(done).max()) if len(done) > 1 else int(done[0]),
            "update_cycles": plan.update_cycles,
            "predictions_equal_twin": [o["prediction"] for o in observed] == twin}


def meta_cycles(plan, m, storage, seed=0):
    """Cycles of the metaplastic unit (built on the engine ``plan``) in Amaranth's simulator
    for one update of every group of hidden weights (random updates from zero, the streams never
    stalling), checked against its twin."""
    from ..rtl.metaplastic import MetaplasticUnit, update_beats
    from ..sim.metaplastic_sim import expected_results, run_pysim

    unit = MetaplasticUnit(plan, m, storage=storage)
    rng = np.random.default_rng(seed)
    uf = unit.rule.u_format
    d = rng.integers(uf.min_raw // 4, uf.max_raw // 4 + 1, (unit.groups, unit.lanes))
    beats = update_beats(d, np.ones_like(d, dtype=bool))
    got, _, cycles = run_pysim(unit, beats, valid=1.0, ready=1.0)
    want, _ = expected_results(unit.rule, np.zeros((unit.groups, unit.lanes), int), beats)
    if got != want:
        raise NmflowError("benchmark: the metaplastic unit's hidden weights differ from its "
                          "twin's")
    return {"lanes": unit.lanes, "storage": storage, "synapses": unit.groups * unit.lanes,
            "cycles_per_step": int(cycles), "ideal_cycles_per_step": unit.groups,
            "ratio_to_ideal": round(cycles / unit.groups, 4)}


def twin_rates(config, samples=200, repeats=3):
    """Training samples per second at batch 1 on this machine, the best of ``repeats`` runs over
    the first ``samples`` digits: the fixed-point twin and the float model (PyTorch, CPU)."""
    import torch

    from ..flow.eqprop import _digits
    from ..golden import eqprop as fe
    from ..golden import eqprop_fixed as ef

    x, y = _digits(samples)
    fixed = []
    for _ in range(repeats):
        params, lfsr = ef.init_params(config), ef.Lfsr32(config.lfsr_seed)
        start = time.perf_counter()
        for xi, yi in zip(x, y):
            params, _ = ef.train_step(config, params, xi.reshape(1, -1), [yi], lfsr)
        fixed.append(len(y) / (time.perf_counter() - start))
    fconfig = _float_config(config)
    xf = torch.as_tensor(x / float(1 << config.state.frac_bits), dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.int64)
    floats = []
    for _ in range(repeats):
        net, rng = fe.EqPropNet.init(fconfig), np.random.default_rng(0)
        lrs = net.lr_of()
        start = time.perf_counter()
        for n in range(len(y)):
            xb, yb = xf[n:n + 1], yt[n:n + 1]
            with torch.no_grad():
                s_free = fe.free_phase(net, xb)
            fe.apply_steps(net, fe.ep_estimate(net, xb, yb, "symmetric", rng=rng,
                                               s_free=s_free), lrs)
        floats.append(len(y) / (time.perf_counter() - start))
    return {"fixed_twin_cpu": round(max(fixed), 1), "float_twin_cpu": round(max(floats), 1),
            "cpu_samples": len(y), "torch_threads": torch.get_num_threads()}


def _build_figures(build):
    figures = {key: build.get(key) for key in ("logic_cells", "logic_cells_total", "block_rams",
                                              "block_rams_total", "dsps", "fmax_mhz",
                                              "run_clock_mhz", "clock_margin",
                                              "oscillator_mhz")}
    figures["sprams"] = build.get("utilisation", {}).get("ICESTORM_SPRAM", {}).get("used", 0)
    return figures


def link_bound(config, baud):
    """Training samples per second the UART carries: a TRAIN frame (inputs and label) and its
    one-byte reply per sample, 10 bits a byte."""
    from ..protocol.eqprop import EqCommand
    from ..protocol.framing import encode_frame
    request = encode_frame(EqCommand.TRAIN, bytes(config.sizes[0] + 1))
    reply = encode_frame(EqCommand.TRAIN | 0x80, bytes(1))
    return round(baud / (10 * (len(request) + len(reply))), 1)


def run_learning(run_dir, *, boards="icebreaker,ulx3s", lanes=None, hidden=(32,), m=10.0,
                 decay_shift=10, T=40, K=15, meta_m=10.0, cpu_samples=200, out=None,
                 resume=False, clock="auto", progress=print):
    """The section ``learning`` (see the module) of ``out`` (default ``run_dir/bench.json``),
    written after each board. ``lanes``: the EqProp unit's lanes on every board (default
    :data:`LEARNING_LANES`); ``hidden``, ``m``, ``decay_shift``, ``T``, ``K``: its network
    (:func:`learning_config`); ``meta_m``: the metaplastic unit's m."""
    from ..boards.build import DoesNotFit, get_board
    from ..flow import DatasetSpec, build_step, export_step, train_step
    from ..flow.eqprop import build_unit
    from ..golden import hwmodel
    from ..golden.plan import EnginePlan
    from ..rtl.eqprop import choose_plan
    from ..golden.train import TrainConfig
    from ..protocol.framing import BAUD
    from .bench import write_section

    run_dir = Path(run_dir)
    out = Path(out or run_dir / "bench.json")
    infos = [get_board(name.strip()) for name in str(boards).split(",") if name.strip()]
    if not infos:
        raise NmflowError(f"boards must name one or more boards, not {boards!r}")
    check_int("cpu_samples", cpu_samples, 1, limits.VECTORS)
    config = learning_config(tuple(hidden), m=m, decay_shift=decay_shift, T=T, K=K)
    board_lanes = {info.name: lanes or LEARNING_LANES.get(info.name, 4) for info in infos}
    plans = {info.name: choose_plan(config, board_lanes[info.name], board=info)
             for info in infos}
    for info in infos:
        plans[info.name].check_fit(info)                                # NmflowError
    section = {"network": {"dataset": "digits", "sizes": list(config.sizes),
                           "weights": config.weights, "m": config.m,
                           "decay_shift": config.decay_shift, "T": config.T, "K": config.K,
                           "metaplastic_m": meta_m}}
    progress("learning: training samples per second of the twins on this CPU")
    rates = twin_rates(config, cpu_samples)
    cycles = {}
    for n, storage in sorted({(p.lanes, p.storage) for p in plans.values()}):
        progress(f"learning: the EqProp unit at {n} lanes ({storage} hidden weights) in "
                 f"Amaranth's simulator")
        cycles[n, storage] = unit_cycles(config, n, storage=storage)
        if not cycles[n, storage]["predictions_equal_twin"]:
            raise NmflowError(f"benchmark: the EqProp unit at {n} lanes predicts otherwise "
                              f"than its twin")

    train_step(run_dir, TrainConfig.tnn(), DatasetSpec("digits"))
    export_step(run_dir)
    hw = hwmodel.load(run_dir / "hwmodel")
    for info in infos:
        n, hidden = board_lanes[info.name], plans[info.name].storage
        progress(f"learning: building the EqProp unit for {info.name} ({n} lanes)")
        try:
            build = build_unit(run_dir / f"{info.name}_eqprop", config, n, info, clock=clock,
                               reuse=resume)
            eq = dict(_build_figures(build), fits=True, lanes=n, storage=hidden,
                      **cycles[n, hidden])
            eq["samples_per_second_at_run_clock"] = round(
                build["run_clock_mhz"] * 1e6 / eq["cycles_per_sample"], 1)
        except DoesNotFit as error:
            eq = dict(fits=False, refused=str(error), lanes=n, storage=hidden,
                      **cycles[n, hidden])
        eq.pop("predictions_equal_twin")
        entry = {"eqprop": eq}
        e_lanes, e_pe, e_bits = META_FOLDING
        storage = "spram" if info.family == "ice40" else "memory"
        plan = EnginePlan(hw, e_lanes, pe=e_pe, first_layer_bits=e_bits)
        progress(f"learning: building the engine with the metaplastic unit for {info.name}")
        try:
            mbuild = build_step(run_dir, board=info.name, lanes=e_lanes, pe=e_pe,
                                first_layer_bits=e_bits, metaplastic=meta_m,
                                out=run_dir / f"{info.name}_metaplastic", reuse=resume,
                                clock=clock)
            meta = dict(_build_figures(mbuild), fits=True)
        except DoesNotFit as error:
            meta = {"fits": False, "refused": str(error)}
        meta.update(meta_cycles(plan, meta_m, storage),
                    engine_folding={"lanes": e_lanes, "pe": e_pe, "first_layer_bits": e_bits})
        if meta.get("run_clock_mhz"):
            meta["synapse_updates_per_second_at_run_clock"] = round(
                meta["run_clock_mhz"] * 1e6 * meta["synapses"] / meta["cycles_per_step"], 1)
        entry["metaplastic"] = meta
        section[info.name] = entry
        write_section(out, "learning", section)

    name = "icebreaker" if "icebreaker" in section else infos[0].name
    board = section[name]["eqprop"]
    rates.update(board=board.get("samples_per_second_at_run_clock"), board_name=name,
                 board_run_clock_mhz=board.get("run_clock_mhz"), board_lanes=board["lanes"],
                 link_bound=link_bound(config, BAUD), link_baud=BAUD)
    if rates["board"] is not None:
        rates["board_over_fixed_twin"] = round(rates["board"] / rates["fixed_twin_cpu"], 2)
        rates["board_over_float_twin"] = round(rates["board"] / rates["float_twin_cpu"], 2)
    section["samples_per_second"] = rates
    return write_section(out, "learning", section)["learning"]
