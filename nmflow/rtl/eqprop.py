"""The Equilibrium Propagation settling and learning unit: the fixed-point twin
(:mod:`nmflow.golden.eqprop_fixed`) in hardware, bit for bit, one sample at a time (batch 1).

Architecture (docs/eqprop_rtl.md has the figures)
-------------------------------------------------
* ``lanes`` (``L``, a power of two) multiply-accumulate lanes, each next to its own weight bank.
  Weight ``W_k[r, i]`` (row ``r`` = neuron of layer ``k+1``, column ``i`` = neuron of layer
  ``k``) lives in bank ``(r + i) mod L`` at address ``wbase_k + r * (n_k / L) + i // L``: the
  skewed layout puts the ``L`` weights of a row chunk (``r`` fixed, ``i = c L ... c L + L-1``)
  and the ``L`` weights of a column chunk (``i`` fixed, ``r = c L ... c L + L-1``) in ``L``
  different banks, so both ``W_{k-1} s_{k-1}`` and the transposed ``W_k^T s_{k+1}`` stream one
  chunk per cycle. A row chunk reads every bank at one address; a column chunk reads bank ``b``
  at ``wbase_k + (c L + ((b - j) mod L)) (n_k / L) + j // L`` for neuron ``j``.
* States ``u0.F`` live in ``L`` state banks (state ``i`` of a vector in bank ``i mod L``, row
  ``i // L``): the input ``x`` and three copies of the layers, regions ``A`` (free phase, ``s*``),
  ``B`` (``+beta``, ends as ``s+``) and ``C`` (``-beta``, ends as ``s-``). A chunk read gives
  the ``L`` states of one row; lane ``b`` takes bank ``(b - j) mod L`` (a rotation by ``j mod L``)
  for both row and column chunks, which is the state its weight multiplies.
* Biases sit in one bias memory, read alongside a neuron's first chunk.
* Pipeline of a settling command: issue (addresses) -> memory read, rotation -> products ->
  adder tree and accumulator -> nudge, rounding, clip and state write (``PIPELINE_DEPTH`` = 4
  cycles from issue to write). The output layer in a nudged phase takes one more command per
  neuron, which reads its old state for the nudge.
* Order: the twin's alternating order, odd state layers then even layers, with a drain of the
  pipeline between the two groups (the even layers read what the odd ones wrote).
* Update (symmetric estimate): weight layer by layer, rows ``r`` in order, chunks in order,
  one parameter per cycle in the twin's order (row-major, then the biases), each with one
  16-bit draw of the 32-bit Galois LFSR (16 steps per cycle); ``D = s+_r s+_i - s-_r s-_i``,
  stochastic rounding of the shift ``r_W`` (``r_b`` for biases), saturation, written back.
* Inference and learning share the datapath: an inference is the free phase; the prediction is
  the argmax of the output states after it, the lowest index on ties (the twin's ``predict``).

Streams
-------
``i``: ``n_0 / L`` beats per sample, each with ``L`` input states (``x``); the last beat's
``label`` and ``train`` say what to do (``train = 0``: inference only). ``o``: one beat per
sample with the prediction, after the update when training. ``obs`` (only with
``observe=True``): after every settling step, the states of layers 1..N (region in use, rows
of ``L`` states, the last layer's row padded with zeros); after every update, the weight banks'
words row by row (layer by layer, rows ``r < n_{k+1}``, chunks in order; word ``b`` of a beat is
bank ``b``) and then the biases, one per beat in lane 0. :meth:`EqPropLayout.decode_weights`
turns the words back into matrices.
"""

import math

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..errors import NmflowError
from ..golden.eqprop_fixed import FixedEqPropConfig, LFSR_MASK, accumulator_format, init_params
from ..golden.eqprop_layout import ICE40_BLOCKS, EqPropLayout

__all__ = ["EqPropLayout", "EqPropUnit", "EqPropSynthTop", "PIPELINE_DEPTH",
           "lfsr_jump_columns", "ICE40_BLOCKS"]

#: Cycles from a settling command's issue to its state write (the drain between layer groups).
PIPELINE_DEPTH = 4
def lfsr_jump_columns(steps):
    """The images of the 32 unit states after ``steps`` steps of the Galois LFSR (GF(2)-linear)."""
    cols = []
    for bit in range(32):
        s = 1 << bit
        for _ in range(steps):
            s = (s >> 1) ^ (LFSR_MASK if s & 1 else 0)
        cols.append(s)
    return cols


def _lfsr_jump(state, steps):
    """Amaranth expression of the LFSR state ``steps`` steps after ``state`` (XOR network)."""
    cols = lfsr_jump_columns(steps)
    bits = []
    for out in range(32):
        terms = [state[b] for b in range(32) if cols[b] >> out & 1]
        v = Const(0, 1)
        for t in terms:
            v = v ^ t
        bits.append(v)
    return Cat(*bits)


class EqPropUnit(wiring.Component):
    """The EP settling and learning unit (see the module docstring).

    Parameters
    ----------
    config : :class:`~nmflow.golden.eqprop_fixed.FixedEqPropConfig`
        Network, formats, ``T``, ``K``, ``beta_shift``, learning-rate shifts, ``half`` and the
        LFSR seed; ``batch`` must be 1, the estimate symmetric and the rounding stochastic.
    lanes : int
        Multiply-accumulate lanes (a power of two; every size but the last a multiple of it).
    params : dict, optional
        Initial ``{"W": [...], "b": [...]}`` (raw); :func:`init_params` of ``config`` if None.
    observe : bool
        Add the ``obs`` stream (states after each step, weights after each update).
    max_blocks : int or None
        Refuse a network whose memories need more iCE40 4-kbit blocks (30 for the UP5K).
    host_port : bool
        Add the parameter port of the host link (below); without it the unit is unchanged.

    Members
    -------
    i : In(stream.Signature(input layout))
    o : Out(stream.Signature(prediction layout))
    obs : Out(stream.Signature(obs layout)), only with ``observe``
    busy : Out(1)
    step : Out(1)
        High for one cycle at the end of every settling step.
    p_sel, p_addr, p_we, p_wdata, p_rdata, p_seed, p_seed_we : only with ``host_port``
        While the sequencer is idle: ``p_addr`` addresses the weight banks (``p_sel`` 0, a write
        ``p_we`` stores ``p_wdata[b]`` in bank ``b``), the biases (1, ``p_wdata[0]``) or the
        state banks (2, read only); ``p_rdata`` is the raw word(s) at the previous cycle's
        address. ``p_seed_we`` loads ``p_seed`` into the LFSR.
    """

    def __init__(self, config, *, lanes=4, params=None, observe=False, max_blocks=ICE40_BLOCKS,
                 host_port=False):
        if not isinstance(config, FixedEqPropConfig):
            raise NmflowError(f"config must be a FixedEqPropConfig, not {type(config).__name__}")
        if config.batch != 1:
            raise NmflowError(f"batch must be 1 (the unit learns sample by sample), not "
                              f"{config.batch}")
        if config.estimate != "symmetric":
            raise NmflowError(f"estimate must be symmetric, not {config.estimate!r}")
        if config.update_rounding != "stochastic":
            raise NmflowError(f"update_rounding must be stochastic, not "
                              f"{config.update_rounding!r}")
        layout = EqPropLayout(config.sizes, lanes)
        sw, ww = config.state.width, config.weight.width
        blocks = layout.blocks(ww, sw)
        if max_blocks is not None and blocks > max_blocks:
            raise NmflowError(f"network {'-'.join(map(str, config.sizes))} with {lanes} lanes "
                              f"needs {blocks} block RAMs of 4 kbit, the budget is {max_blocks}")
        self.config, self.layout, self.lanes = config, layout, lanes
        self.params = init_params(config) if params is None else params
        self.observe = bool(observe)
        self.acc_format = accumulator_format(config)
        n_classes = config.sizes[-1]
        self.label_bits = max(1, (n_classes - 1).bit_length())
        self.i_layout = data.StructLayout({
            "x": data.ArrayLayout(unsigned(sw), lanes),
            "label": unsigned(self.label_bits), "train": 1})
        self.o_layout = data.StructLayout({"label": unsigned(self.label_bits)})
        self.word_bits = max(sw, ww)
        self.obs_layout = data.ArrayLayout(unsigned(self.word_bits), lanes)
        members = {
            "i": In(stream.Signature(self.i_layout)),
            "o": Out(stream.Signature(self.o_layout)),
            "busy": Out(1),
            "step": Out(1),
        }
        if observe:
            members["obs"] = Out(stream.Signature(self.obs_layout))
        self.host_port = bool(host_port)
        if host_port:
            # parameter access while the unit is idle (the host link's LOAD, READ, SEED)
            self.p_addr_bits = max(lay_depth.bit_length() for lay_depth in
                                   (layout.wdepth, layout.bdepth, layout.sdepth, 2))
            members.update({
                "p_sel": In(2),              # 0 weight banks, 1 biases, 2 states (read only)
                "p_addr": In(self.p_addr_bits),
                "p_we": In(1),
                "p_wdata": In(data.ArrayLayout(signed(ww), lanes)),
                "p_rdata": Out(self.obs_layout),
                "p_seed": In(32),
                "p_seed_we": In(1),
            })
        super().__init__(members)

    # figures -------------------------------------------------------------------------------
    def ideal_cycles_per_step(self):
        s = self.config.sizes
        N = len(s) - 1
        return sum(s[k] * (s[k - 1] + (s[k + 1] if k < N else 0)) for k in range(1, N + 1)) \
            / self.lanes

    def issue_cycles_per_step(self, nudged=False):
        """Cycles of one settling step as this unit schedules it (commands, drains, control)."""
        lay, s = self.layout, self.config.sizes
        N = lay.N
        cmds = sum(s[k] * (s[k - 1] // self.lanes + (lay.chunks[k + 1] if k < N else 0))
                   for k in range(1, N + 1))
        if nudged:
            cmds += s[N]
        groups = 2 if N > 1 else 1
        return cmds + groups * PIPELINE_DEPTH + 2       # + STEP_END, STEP_NEXT

    # ---------------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        cfg, lay, L = self.config, self.layout, self.lanes
        N, sizes = lay.N, cfg.sizes
        lg = L.bit_length() - 1
        sw, ww = cfg.state.width, cfg.weight.width
        sfrac, wfrac = cfg.state.frac_bits, cfg.weight.frac_bits
        smax = cfg.state.max_raw
        wmin, wmax = cfg.weight.min_raw, cfg.weight.max_raw
        h = cfg.rescale_shift
        acc_w = self.acc_format.width + 1

        # -- memories --------------------------------------------------------------------------
        wimage = lay.weight_image(self.params)
        wrp, wwp = [], []
        for b in range(L):
            mem = Memory(shape=signed(ww), depth=lay.wdepth, init=wimage[b])
            m.submodules[f"wbank{b}"] = mem
            wrp.append(mem.read_port())
            wwp.append(mem.write_port())
        bmem = Memory(shape=signed(ww), depth=lay.bdepth, init=lay.bias_image(self.params))
        m.submodules.bias = bmem
        brp, bwp = bmem.read_port(), bmem.write_port()
        srp, swp = [], []
        for b in range(L):
            mem = Memory(shape=unsigned(sw), depth=lay.sdepth, init=[])
            m.submodules[f"sbank{b}"] = mem
            srp.append(mem.read_port())
            swp.append(mem.write_port())
        wdata = [p.data for p in wrp]
        sdata = [p.data for p in srp]
        sdata_arr = Array(sdata)

        s_raddr = Signal(range(lay.sdepth))
        for p in srp:
            m.d.comb += p.addr.eq(s_raddr)
        w_raddr = [Signal(range(lay.wdepth), name=f"w_raddr{b}") for b in range(L)]
        for p, a in zip(wrp, w_raddr):
            m.d.comb += p.addr.eq(a)
        b_raddr = Signal(range(max(lay.bdepth, 2)))
        m.d.comb += brp.addr.eq(b_raddr)

        def bank_mod(value):
            return value[:lg] if lg else Const(0, 1)

        # -- registers of the sequencer --------------------------------------------------------
        jmax = max(sizes[1:]) + 1
        j = Signal(range(max(jmax, 2)))
        c = Signal(range(max(max(lay.chunks), 2) + 1))
        part = Signal(2)                     # 0 self-read, 1 row chunks, 2 column chunks
        steps_left = Signal(range(max(cfg.T, cfg.K) + 1))
        region = Signal(range(lay.sdepth))    # base row of the region in use
        sign = Signal(2)                     # 0 free, 1 +beta, 2 -beta
        label = Signal(self.label_bits)
        train = Signal()
        pred = Signal(self.label_bits)
        count = Signal(range(max(lay.sdepth, lay.wdepth, lay.bdepth, PIPELINE_DEPTH) + 2))
        phase = Signal(2)                    # 0 free, 1 plus, 2 minus (for the phase end)

        # -- settling pipeline -----------------------------------------------------------------
        issue = Signal()
        i_self, i_first, i_last, i_top = Signal(), Signal(), Signal(), Signal()
        i_waddr = Signal(range(lay.sdepth))
        i_j = Signal.like(j)
        p1 = dict(valid=Signal(), self_=Signal(), first=Signal(), last=Signal(), top=Signal(),
                  waddr=Signal(range(lay.sdepth)), j=Signal.like(j))
        m.d.sync += [p1["valid"].eq(issue), p1["self_"].eq(i_self), p1["first"].eq(i_first),
                     p1["last"].eq(i_last), p1["top"].eq(i_top), p1["waddr"].eq(i_waddr),
                     p1["j"].eq(i_j)]
        # stage 2: rotated states, weights, bias, self state
        p2 = {k: Signal.like(v, name=f"p2_{k}") for k, v in p1.items()}
        p2_w = [Signal(signed(ww), name=f"p2_w{b}") for b in range(L)]
        p2_s = [Signal(unsigned(sw), name=f"p2_s{b}") for b in range(L)]
        p2_bias = Signal(signed(ww))
        p2_old = Signal(unsigned(sw))
        m.d.sync += [p2[k].eq(p1[k]) for k in p1]
        rot = bank_mod(p1["j"])
        for b in range(L):
            src = sdata_arr[bank_mod(Const(b + L, lg + 2) - rot)] if lg else sdata[0]
            m.d.sync += [p2_w[b].eq(wdata[b]), p2_s[b].eq(src)]
        m.d.sync += [p2_bias.eq(brp.data), p2_old.eq(sdata_arr[rot] if lg else sdata[0])]
        # stage 3: products
        p3 = {k: Signal.like(v, name=f"p3_{k}") for k, v in p1.items()}
        prod_w = ww + sw + 1
        p3_prod = [Signal(signed(prod_w), name=f"p3_prod{b}") for b in range(L)]
        p3_bias = Signal(signed(ww))
        p3_old = Signal(unsigned(sw))
        m.d.sync += [p3[k].eq(p2[k]) for k in p2]
        m.d.sync += [p3_prod[b].eq(p2_w[b] * p2_s[b]) for b in range(L)]
        m.d.sync += [p3_bias.eq(p2_bias), p3_old.eq(p2_old)]
        # stage 4: adder tree and accumulator
        acc = Signal(signed(acc_w))
        old = Signal(unsigned(sw))
        total = p3_prod[0]
        for b in range(1, L):
            total = total + p3_prod[b]
        acc_next = Signal(signed(acc_w))
        m.d.comb += acc_next.eq(Mux(p3["first"], p3_bias << sfrac, acc) + total)
        post_valid, post_top = Signal(), Signal()
        post_acc = Signal(signed(acc_w))
        post_old = Signal(unsigned(sw))
        post_waddr = Signal(range(lay.sdepth))
        post_j = Signal.like(j)
        m.d.sync += post_valid.eq(0)
        with m.If(p3["valid"]):
            with m.If(p3["self_"]):
                m.d.sync += old.eq(p3_old)
            with m.Else():
                m.d.sync += acc.eq(acc_next)
                with m.If(p3["last"]):
                    m.d.sync += [post_valid.eq(1), post_acc.eq(acc_next), post_old.eq(old),
                                 post_waddr.eq(p3["waddr"]), post_j.eq(p3["j"]),
                                 post_top.eq(p3["top"])]
        # stage 5: nudge, rounding, clip, write
        y_raw = Mux(post_j == label, 1 << sfrac, 0)
        diff = Signal(signed(sfrac + 3))
        m.d.comb += diff.eq(y_raw - post_old)
        nudge = Signal(signed(acc_w))
        with m.If(post_top & (sign == 1)):
            m.d.comb += nudge.eq(diff << (wfrac - cfg.beta_shift))
        with m.Elif(post_top & (sign == 2)):
            m.d.comb += nudge.eq(-(diff << (wfrac - cfg.beta_shift)))
        pre = Signal(signed(acc_w + 1))
        m.d.comb += pre.eq(post_acc + nudge + (1 << (h - 1)))
        shifted = Signal(signed(acc_w + 1))
        m.d.comb += shifted.eq(pre >> h)
        new_state = Signal(unsigned(sw))
        m.d.comb += new_state.eq(Mux(shifted < 0, 0, Mux(shifted > smax, smax, shifted)))
        best_val = Signal(unsigned(sw))
        best_idx = Signal(self.label_bits)

        # -- update pipeline -------------------------------------------------------------------
        lfsr = Signal(32, init=cfg.lfsr_seed)
        lfsr_next = _lfsr_jump(lfsr, 16)
        u_issue = Signal()
        u_kind = Signal(range(2 * N))          # 2 k + (1 for biases)
        u_D = Signal(signed(2 * sw + 2))        # computed at issue, registered
        u_old = Signal(signed(ww))
        u_bank = Signal(range(max(L, 2)))
        u_addr = Signal(range(max(lay.wdepth, lay.bdepth, 2)))
        q_valid = Signal()
        q_kind = Signal.like(u_kind)
        q_D = Signal.like(u_D)
        q_u = Signal(16)
        q_old = Signal(signed(ww))
        q_bank = Signal.like(u_bank)
        q_addr = Signal.like(u_addr)
        m.d.sync += [q_valid.eq(u_issue), q_kind.eq(u_kind), q_D.eq(u_D), q_old.eq(u_old),
                     q_bank.eq(u_bank), q_addr.eq(u_addr)]
        with m.If(u_issue):
            m.d.sync += [lfsr.eq(lfsr_next), q_u.eq(lfsr_next[:16])]
        dparam = Signal(signed(2 * sw + 2 + 48))
        for k in range(N):
            for is_b, r in enumerate(cfg.update_shifts(k)):
                with m.If(q_kind == 2 * k + is_b):
                    if r <= 0:
                        m.d.comb += dparam.eq(q_D << -r)
                    else:
                        q = q_D >> r
                        rest = q_D.as_unsigned()[:r]
                        up = Cat(Const(0, r), q_u) < Cat(Const(0, 16), rest)
                        m.d.comb += dparam.eq(q + up)
        summed = Signal(signed(2 * sw + 2 + 50))
        m.d.comb += summed.eq(q_old + dparam)
        new_param = Signal(signed(ww))
        m.d.comb += new_param.eq(Mux(summed < wmin, wmin, Mux(summed > wmax, wmax, summed)))
        is_bias = q_kind[0]
        for b in range(L):
            m.d.comb += [wwp[b].addr.eq(q_addr), wwp[b].data.eq(new_param),
                         wwp[b].en.eq(q_valid & ~is_bias & (q_bank == b))]
        m.d.comb += [bwp.addr.eq(q_addr), bwp.data.eq(new_param), bwp.en.eq(q_valid & is_bias)]

        # update registers
        ur = Signal(range(max(jmax, 2)))
        ut = Signal(range(max(L, 2)))
        sp_top, sm_top = Signal(unsigned(sw)), Signal(unsigned(sw))
        wchunk = [Signal(signed(ww), name=f"wchunk{b}") for b in range(L)]
        spc = [Signal(unsigned(sw), name=f"spc{b}") for b in range(L)]
        smc = [Signal(unsigned(sw), name=f"smc{b}") for b in range(L)]
        bold = Signal(signed(ww))

        # -- observation stream ----------------------------------------------------------------
        obs_valid = Signal()
        obs_data = Signal(self.obs_layout)
        obs_ready = self.obs.ready if self.observe else Const(1)
        if self.observe:
            m.d.comb += [self.obs.valid.eq(obs_valid), self.obs.payload.eq(obs_data)]

        o_valid = Signal()
        m.d.comb += [self.o.valid.eq(o_valid), self.o.payload.label.eq(pred)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += o_valid.eq(0)

        # -- state writes: sequencer (load, clear, copy) or the settling pipeline ----------------
        s_wen = [Signal(name=f"s_wen{b}") for b in range(L)]
        s_wdata = [Signal(unsigned(sw), name=f"s_wdata{b}") for b in range(L)]
        s_waddr = Signal(range(lay.sdepth))
        for b in range(L):
            m.d.comb += [swp[b].addr.eq(s_waddr), swp[b].data.eq(s_wdata[b]),
                         swp[b].en.eq(s_wen[b])]

        step_pulse = Signal()
        m.d.comb += self.step.eq(step_pulse)
        busy = Signal()
        m.d.comb += self.busy.eq(busy)

        order = [k for k in range(1, N + 1) if k % 2 == 1] + \
                [k for k in range(1, N + 1) if k % 2 == 0]
        first_layer = order[0]

        def start_layer(k):
            """Statements that enter layer ``k``'s first neuron."""
            self_part = 0 if k == N else 1
            return [j.eq(0), c.eq(0),
                    part.eq(Mux(sign != 0, self_part, 1) if k == N else 1)]

        def next_after_layer(index):
            """FSM target after the layer at ``order[index]``."""
            k = order[index]
            if index + 1 < len(order) and (order[index + 1] % 2) == (k % 2):
                return f"LAYER{order[index + 1]}", start_layer(order[index + 1])
            return f"DRAIN{index}", [count.eq(0)]

        def update_state_reads(region_index, k, chunk):
            """Address of the chunk ``chunk`` of state layer ``k`` (0 = x) in a region."""
            if k == 0:
                return chunk
            return lay.region_base(region_index) + lay.soff[k] + chunk

        in_idle = Signal()
        with m.FSM(name="seq"):
            with m.State("IDLE"):
                m.d.comb += in_idle.eq(1)
                m.d.comb += self.i.ready.eq(~o_valid)
                m.d.sync += count.eq(0)
                with m.If(self.i.valid & ~o_valid):
                    m.d.comb += s_waddr.eq(0)
                    m.d.comb += [s_wen[b].eq(1) for b in range(L)]
                    m.d.comb += [s_wdata[b].eq(self.i.payload.x[b]) for b in range(L)]
                    m.d.sync += [count.eq(1), label.eq(self.i.payload.label),
                                 train.eq(self.i.payload.train)]
                    if lay.x_rows == 1:
                        m.next = "CLEAR"
                        m.d.sync += count.eq(0)
                    else:
                        m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += [self.i.ready.eq(1), busy.eq(1)]
                with m.If(self.i.valid):
                    m.d.comb += s_waddr.eq(count)
                    m.d.comb += [s_wen[b].eq(1) for b in range(L)]
                    m.d.comb += [s_wdata[b].eq(self.i.payload.x[b]) for b in range(L)]
                    m.d.sync += [count.eq(count + 1), label.eq(self.i.payload.label),
                                 train.eq(self.i.payload.train)]
                    with m.If(count == lay.x_rows - 1):
                        m.d.sync += count.eq(0)
                        m.next = "CLEAR"
            with m.State("CLEAR"):
                # region A to zero: the free phase starts from s = 0
                m.d.comb += busy.eq(1)
                m.d.comb += s_waddr.eq(lay.region_base(0) + count)
                m.d.comb += [s_wen[b].eq(1) for b in range(L)]
                m.d.sync += count.eq(count + 1)
                with m.If(count == lay.region_rows - 1):
                    m.d.sync += [region.eq(lay.region_base(0)), sign.eq(0), phase.eq(0),
                                 steps_left.eq(cfg.T), *start_layer(first_layer)]
                    m.next = f"LAYER{first_layer}"

            # settling: one state per layer of the step order
            for index, k in enumerate(order):
                nrow = sizes[k - 1] // L
                ncol = lay.chunks[k + 1] if k < N else 0
                with m.State(f"LAYER{k}"):
                    m.d.comb += [busy.eq(1), issue.eq(1), i_j.eq(j), i_top.eq(k == N),
                                 i_waddr.eq(region + lay.soff[k] + (j >> lg))]
                    last_neuron = j == sizes[k] - 1
                    target, enter = next_after_layer(index)
                    self_part = 0 if k == N else 1

                    def next_neuron():
                        with m.If(last_neuron):
                            m.d.sync += enter
                            m.next = target
                        with m.Else():
                            m.d.sync += [j.eq(j + 1), c.eq(0)]
                            if k == N:
                                m.d.sync += part.eq(Mux(sign != 0, self_part, 1))
                            else:
                                m.d.sync += part.eq(1)

                    with m.If(part == 0):
                        m.d.comb += [i_self.eq(1),
                                     s_raddr.eq(region + lay.soff[k] + (j >> lg))]
                        m.d.sync += [part.eq(1), c.eq(0)]
                    with m.Elif(part == 1):
                        rowaddr = lay.wbase[k - 1] + j * nrow + c
                        m.d.comb += [a.eq(rowaddr) for a in w_raddr]
                        m.d.comb += s_raddr.eq(c if k == 1 else region + lay.soff[k - 1] + c)
                        m.d.comb += b_raddr.eq(lay.bbase[k - 1] + j)
                        m.d.comb += i_first.eq(c == 0)
                        with m.If(c == nrow - 1):
                            if ncol:
                                m.d.sync += [part.eq(2), c.eq(0)]
                            else:
                                m.d.comb += i_last.eq(1)
                                next_neuron()
                        with m.Else():
                            m.d.sync += c.eq(c + 1)
                    if ncol:
                        with m.Else():
                            stride = sizes[k] // L
                            for b in range(L):
                                offs = Array([Const(((b - t) % L) * stride, 16) for t in range(L)])
                                m.d.comb += w_raddr[b].eq(lay.wbase[k] + c * sizes[k] + (j >> lg)
                                                          + offs[bank_mod(j)])
                            m.d.comb += s_raddr.eq(region + lay.soff[k + 1] + c)
                            with m.If(c == ncol - 1):
                                m.d.comb += i_last.eq(1)
                                next_neuron()
                            with m.Else():
                                m.d.sync += c.eq(c + 1)
                if f"DRAIN{index}" == target:
                    with m.State(f"DRAIN{index}"):
                        m.d.comb += busy.eq(1)
                        m.d.sync += count.eq(count + 1)
                        with m.If(count == PIPELINE_DEPTH - 1):
                            m.d.sync += count.eq(0)
                            if index + 1 < len(order):
                                m.d.sync += start_layer(order[index + 1])
                                m.next = f"LAYER{order[index + 1]}"
                            else:
                                m.next = "STEP_END"

            with m.State("STEP_END"):
                m.d.comb += [busy.eq(1), step_pulse.eq(1)]
                m.d.sync += [steps_left.eq(steps_left - 1), count.eq(0)]
                if self.observe:
                    m.next = "SDUMP_READ"
                else:
                    m.next = "STEP_NEXT"
            if self.observe:
                with m.State("SDUMP_READ"):
                    m.d.comb += [busy.eq(1), s_raddr.eq(region + count)]
                    m.next = "SDUMP_HOLD"
                with m.State("SDUMP_HOLD"):
                    m.d.comb += busy.eq(1)
                    with m.If(~obs_valid):
                        m.d.sync += [obs_valid.eq(1)]
                        m.d.sync += [obs_data[b].eq(sdata[b]) for b in range(L)]
                    with m.Elif(obs_ready):
                        m.d.sync += [obs_valid.eq(0), count.eq(count + 1)]
                        with m.If(count == lay.region_rows - 1):
                            m.d.sync += count.eq(0)
                            m.next = "STEP_NEXT"
                        with m.Else():
                            m.next = "SDUMP_READ"
            with m.State("STEP_NEXT"):
                m.d.comb += busy.eq(1)
                with m.If(steps_left != 0):
                    m.d.sync += start_layer(first_layer)
                    m.next = f"LAYER{first_layer}"
                with m.Elif(phase == 0):
                    m.d.sync += pred.eq(best_idx)
                    with m.If(train):
                        m.d.sync += [count.eq(0), region.eq(lay.region_base(1))]
                        m.next = "COPY_READ"
                    with m.Else():
                        m.d.sync += o_valid.eq(1)
                        m.next = "IDLE"
                with m.Elif(phase == 1):
                    m.d.sync += [count.eq(0), region.eq(lay.region_base(2))]
                    m.next = "COPY_READ"
                with m.Else():
                    m.d.sync += [ur.eq(0)]
                    m.next = "U0_TOP0"
            # copy region A (s*) into the region in ``region``, then run a nudged phase there
            with m.State("COPY_READ"):
                m.d.comb += [busy.eq(1), s_raddr.eq(lay.region_base(0) + count)]
                m.next = "COPY_WRITE"
            with m.State("COPY_WRITE"):
                m.d.comb += [busy.eq(1), s_waddr.eq(region + count)]
                m.d.comb += [s_wen[b].eq(1) for b in range(L)]
                m.d.comb += [s_wdata[b].eq(sdata[b]) for b in range(L)]
                m.d.sync += count.eq(count + 1)
                with m.If(count == lay.region_rows - 1):
                    # a nudged phase: the output layer starts with its self-read (``sign``
                    # is only being set in this cycle)
                    m.d.sync += [steps_left.eq(cfg.K), *start_layer(first_layer),
                                 part.eq(0 if first_layer == N else 1),
                                 phase.eq(phase + 1), sign.eq(phase + 1)]
                    m.next = f"LAYER{first_layer}"
                with m.Else():
                    m.next = "COPY_READ"

            # the update, weight layer by weight layer
            for k in range(N):
                ncols = sizes[k] // L
                nrows = sizes[k + 1]
                top_chunk = lambda reg: lay.region_base(reg) + lay.soff[k + 1] + (ur >> lg)
                with m.State(f"U{k}_TOP0"):
                    m.d.comb += [busy.eq(1), s_raddr.eq(top_chunk(1))]
                    m.next = f"U{k}_TOP1"
                with m.State(f"U{k}_TOP1"):
                    m.d.comb += [busy.eq(1), s_raddr.eq(top_chunk(2))]
                    m.d.sync += [sp_top.eq(sdata_arr[bank_mod(ur)] if lg else sdata[0]), c.eq(0)]
                    m.next = f"U{k}_TOP2"
                with m.State(f"U{k}_TOP2"):
                    m.d.comb += busy.eq(1)
                    m.d.sync += sm_top.eq(sdata_arr[bank_mod(ur)] if lg else sdata[0])
                    m.next = f"U{k}_CH0"
                with m.State(f"U{k}_CH0"):
                    m.d.comb += [busy.eq(1), s_raddr.eq(update_state_reads(1, k, c))]
                    m.d.comb += [a.eq(lay.wbase[k] + ur * ncols + c) for a in w_raddr]
                    m.next = f"U{k}_CH1"
                with m.State(f"U{k}_CH1"):
                    m.d.comb += [busy.eq(1), s_raddr.eq(update_state_reads(2, k, c))]
                    m.d.sync += [wchunk[b].eq(wdata[b]) for b in range(L)]
                    m.d.sync += [spc[b].eq(sdata[b]) for b in range(L)]
                    m.next = f"U{k}_CH2"
                with m.State(f"U{k}_CH2"):
                    m.d.comb += busy.eq(1)
                    m.d.sync += [smc[b].eq(sdata[b]) for b in range(L)]
                    m.d.sync += ut.eq(0)
                    m.next = f"U{k}_T"
                with m.State(f"U{k}_T"):
                    m.d.comb += busy.eq(1)
                    bank = bank_mod(ut + ur) if lg else Const(0, 1)
                    spi = Array(spc)[ut] if lg else spc[0]
                    smi = Array(smc)[ut] if lg else smc[0]
                    m.d.comb += [u_issue.eq(1), u_kind.eq(2 * k),
                                 u_D.eq(sp_top * spi - sm_top * smi),
                                 u_old.eq(Array(wchunk)[bank] if lg else wchunk[0]),
                                 u_bank.eq(bank),
                                 u_addr.eq(lay.wbase[k] + ur * ncols + c)]
                    m.d.sync += ut.eq(ut + 1)
                    with m.If(ut == L - 1):
                        with m.If(c == ncols - 1):
                            with m.If(ur == nrows - 1):
                                m.d.sync += ur.eq(0)
                                m.next = f"U{k}_B0"
                            with m.Else():
                                m.d.sync += ur.eq(ur + 1)
                                m.next = f"U{k}_TOP0"
                        with m.Else():
                            m.d.sync += c.eq(c + 1)
                            m.next = f"U{k}_CH0"
                # biases of layer k
                with m.State(f"U{k}_B0"):
                    m.d.comb += [busy.eq(1), s_raddr.eq(top_chunk(1)),
                                 b_raddr.eq(lay.bbase[k] + ur)]
                    m.next = f"U{k}_B1"
                with m.State(f"U{k}_B1"):
                    m.d.comb += [busy.eq(1), s_raddr.eq(top_chunk(2))]
                    m.d.sync += [sp_top.eq(sdata_arr[bank_mod(ur)] if lg else sdata[0]),
                                 bold.eq(brp.data)]
                    m.next = f"U{k}_B2"
                with m.State(f"U{k}_B2"):
                    m.d.comb += busy.eq(1)
                    m.d.comb += [u_issue.eq(1), u_kind.eq(2 * k + 1),
                                 u_D.eq(sp_top - (sdata_arr[bank_mod(ur)] if lg else sdata[0])),
                                 u_old.eq(bold), u_addr.eq(lay.bbase[k] + ur)]
                    with m.If(ur == nrows - 1):
                        m.d.sync += ur.eq(0)
                        if k + 1 < N:
                            m.next = f"U{k + 1}_TOP0"
                        else:
                            m.next = "U_DONE"
                    with m.Else():
                        m.d.sync += ur.eq(ur + 1)
                        m.next = f"U{k}_B0"
            with m.State("U_DONE"):
                # the last write leaves the update pipeline
                m.d.comb += busy.eq(1)
                m.d.sync += count.eq(0)
                m.next = "WDUMP_READ" if self.observe else "FINISH"
            if self.observe:
                # weights (rows r < n_{k+1} of every layer, in address order), then biases
                ranges = [(lay.wbase[k], sizes[k + 1] * (sizes[k] // L)) for k in range(N)]
                for k, (start, n) in enumerate(ranges):
                    with m.State(f"WDUMP{k}_READ"):
                        m.d.comb += [busy.eq(1)]
                        m.d.comb += [a.eq(start + count) for a in w_raddr]
                        m.next = f"WDUMP{k}_HOLD"
                    with m.State(f"WDUMP{k}_HOLD"):
                        m.d.comb += busy.eq(1)
                        with m.If(~obs_valid):
                            m.d.sync += obs_valid.eq(1)
                            m.d.sync += [obs_data[b].eq(wdata[b].as_unsigned())
                                         for b in range(L)]
                        with m.Elif(obs_ready):
                            m.d.sync += [obs_valid.eq(0), count.eq(count + 1)]
                            with m.If(count == n - 1):
                                m.d.sync += count.eq(0)
                                m.next = f"WDUMP{k + 1}_READ" if k + 1 < N else "BDUMP_READ"
                            with m.Else():
                                m.next = f"WDUMP{k}_READ"
                with m.State("WDUMP_READ"):
                    m.d.comb += busy.eq(1)
                    m.next = "WDUMP0_READ"
                with m.State("BDUMP_READ"):
                    m.d.comb += [busy.eq(1), b_raddr.eq(count)]
                    m.next = "BDUMP_HOLD"
                with m.State("BDUMP_HOLD"):
                    m.d.comb += busy.eq(1)
                    with m.If(~obs_valid):
                        m.d.sync += obs_valid.eq(1)
                        m.d.sync += [obs_data[b].eq(brp.data.as_unsigned() if b == 0 else 0)
                                     for b in range(L)]
                    with m.Elif(obs_ready):
                        m.d.sync += [obs_valid.eq(0), count.eq(count + 1)]
                        with m.If(count == lay.bdepth - 1):
                            m.d.sync += count.eq(0)
                            m.next = "FINISH"
                        with m.Else():
                            m.next = "BDUMP_READ"
            with m.State("FINISH"):
                m.d.comb += busy.eq(1)
                m.d.sync += o_valid.eq(1)
                m.next = "IDLE"

        # the settling pipeline's write (never at the same time as the sequencer's writes)
        with m.If(post_valid):
            m.d.comb += s_waddr.eq(post_waddr)
            for b in range(L):
                m.d.comb += [s_wen[b].eq(bank_mod(post_j) == b if lg else 1),
                             s_wdata[b].eq(new_state)]
            with m.If(post_top):
                with m.If((post_j == 0) | (new_state > best_val)):
                    m.d.sync += [best_val.eq(new_state), best_idx.eq(post_j)]

        if self.host_port:
            # The host port overrides the memory addresses only while the sequencer is idle
            # (no settling or update command is then in flight); read data is the word at the
            # address of the previous cycle, raw bits (weights two's complement).
            with m.If(in_idle):
                m.d.comb += [a.eq(self.p_addr) for a in w_raddr]
                m.d.comb += [b_raddr.eq(self.p_addr), s_raddr.eq(self.p_addr)]
                with m.If(self.p_we & (self.p_sel == 0)):
                    for b in range(L):
                        m.d.comb += [wwp[b].addr.eq(self.p_addr),
                                     wwp[b].data.eq(self.p_wdata[b]), wwp[b].en.eq(1)]
                with m.If(self.p_we & (self.p_sel == 1)):
                    m.d.comb += [bwp.addr.eq(self.p_addr), bwp.data.eq(self.p_wdata[0]),
                                 bwp.en.eq(1)]
                with m.If(self.p_seed_we):
                    m.d.sync += lfsr.eq(self.p_seed)
            sel_q = Signal(2)
            m.d.sync += sel_q.eq(self.p_sel)
            for b in range(L):
                with m.Switch(sel_q):
                    with m.Case(0):
                        m.d.comb += self.p_rdata[b].eq(wdata[b].as_unsigned())
                    with m.Case(1):
                        m.d.comb += self.p_rdata[b].eq(brp.data.as_unsigned() if b == 0 else 0)
                    with m.Default():
                        m.d.comb += self.p_rdata[b].eq(sdata[b])
        return m


class EqPropSynthTop(wiring.Component):
    """A minimal board core for synthesis figures: the unit fed by a 32-bit LFSR (inputs,
    labels, train/infer), its prediction and ``busy`` XOR-reduced onto ``tx`` (so nothing is
    optimised away); ``rx`` is mixed into the LFSR. Not a host link: it only gives logic cells,
    block RAMs and Fmax of the unit on a board.

    ``EqPropSynthTop(config, lanes=4, clk_freq=...)`` (``clk_freq`` is ignored: the factory
    signature of :class:`~nmflow.boards.top.BoardTop`).
    """

    def __init__(self, config, *, lanes=4, clk_freq=None):
        self._unit = EqPropUnit(config, lanes=lanes)
        super().__init__({"rx": In(1), "tx": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self._unit
        src = Signal(32, init=1)
        m.d.sync += src.eq(_lfsr_jump(src, 1) ^ self.rx)
        sw = unit.config.state.width
        for b in range(unit.lanes):
            m.d.comb += unit.i.payload.x[b].eq(src[(b * 5) % 24:(b * 5) % 24 + sw])
        m.d.comb += [unit.i.payload.label.eq(src[24:24 + unit.label_bits]),
                     unit.i.payload.train.eq(src[31]), unit.i.valid.eq(1),
                     unit.o.ready.eq(1)]
        out = Signal()
        m.d.sync += out.eq(unit.o.payload.label.xor() ^ unit.o.valid ^ unit.busy ^ unit.step)
        m.d.comb += self.tx.eq(out)
        return m
