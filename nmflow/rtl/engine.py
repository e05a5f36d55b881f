"""Near-memory XNOR/GXNOR-popcount inference engine: the top of the inference datapath."""

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2, exact_log2

from ..golden.hwmodel import HardwareModel
from ..golden.pairs import memory_image, rows_per_neuron
from .lanes import GXNORPopcount, check_lanes
from .threshold import ThresholdUnit
from .weights import MEMORY_KINDS, WeightMemory

__all__ = ["InferenceEngine", "result_layout", "trace_layout"]


def _index_bits(count):
    return max(1, ceil_log2(count))


def result_layout(n_classes, score_bits):
    """One beat of the engine's result stream: a class index, its score, the argmax, the last flag."""
    cw = _index_bits(n_classes)
    return data.StructLayout({
        "index": unsigned(cw), "score": signed(score_bits), "cls": unsigned(cw), "last": unsigned(1),
    })


def trace_layout(n_layers, max_neurons):
    """One beat of the trace stream: a hidden activation as it is written to its buffer."""
    return data.StructLayout({
        "layer": unsigned(_index_bits(n_layers)), "neuron": unsigned(_index_bits(max_neurons)),
        "act": signed(2),
    })


def _twos(value, width):
    return int(value) & ((1 << width) - 1)


class InferenceEngine(wiring.Component):
    """A BNN/TNN inference engine reading its weights near memory, row by row.

    The weight memory holds every layer's weights as 2T2R pair codes (contract 2), ``lanes`` codes
    per row. Each cycle the layer sequencer reads one row, the PCSA stage turns its pair codes into
    ternary weights, ``lanes`` GXNOR lanes gate one chunk of activations (k-bit pixels in the first
    layer, {-1, 0, +1} after) and a pipelined popcount tree adds them; an accumulator sums the
    ``ceil(in / lanes)`` rows of a neuron. Hidden neurons go through the threshold unit into an
    activation buffer (two buffers, used in turn); the last layer's pre-activations become integer
    scores ``scale * a + offset`` and a running argmax keeps the lowest index on ties. It computes
    exactly :func:`nmflow.golden.reference.reference`.

    Parameters
    ----------
    model : :class:`~nmflow.golden.hwmodel.HardwareModel`
    lanes : int
        GXNOR lanes, a power of two from 1 to 256: pair codes read per cycle.
    memory : ``"block"`` or ``"logic"``
        How the weight memory is built (:data:`~nmflow.rtl.weights.MEMORY_KINDS`).
    max_weight_bits : int or None
        Memory budget: refuse a network whose weight memory needs more bits than this.

    Members
    -------
    i : In(stream.Signature(unsigned(input_bits)))
        Input values, one per beat; ``n_inputs`` beats start an inference.
    o : Out(stream.Signature(result_layout(n_classes, score_bits)))
        ``n_classes`` beats per inference: class ``index``, its ``score``, the argmax ``cls`` (on
        every beat) and ``last`` on the final beat. Backpressure is respected.
    trace : Out(stream.Signature(trace_layout(...), always_ready=True))
        Every hidden activation as it is written (for verification; unused on a board).

    Latency and throughput: one inference takes :attr:`cycles_per_inference` cycles from its first
    input beat to its last result beat when the streams never stall, against
    :attr:`ideal_cycles` = sum over layers of ``ceil(in / lanes) * out`` row reads. The difference
    is the input load (``n_inputs``), the pipeline drain at each layer boundary
    (:attr:`drain_cycles`) and the result beats (``n_classes``, plus one to load the first into
    the output register). One inference at a time.
    """

    def __init__(self, model, *, lanes=16, memory="block", max_weight_bits=None):
        if not isinstance(model, HardwareModel):
            raise TypeError(f"model must be a HardwareModel, not {type(model).__name__}")
        check_lanes(lanes)
        if memory not in MEMORY_KINDS:
            raise ValueError(f"memory must be one of {', '.join(map(repr, MEMORY_KINDS))}, "
                             f"not {memory!r}")
        self._model = model
        self._lanes = lanes
        self._memory = memory
        self._rows, self._bases = memory_image(model, lanes)
        bits = len(self._rows) * 2 * lanes
        if max_weight_bits is not None and bits > max_weight_bits:
            raise ValueError(f"network does not fit the memory budget: its weights need {bits} bits "
                             f"({len(self._rows)} rows of {lanes} pair codes), the budget is "
                             f"{max_weight_bits} bits")
        layers = model.layers
        self._per = [rows_per_neuron(layer.n_in, lanes) for layer in layers]
        self._x_bits = max(model.input_bits + 1, 2)
        self._acc_bits = max(bits_for(model.preact_bound(index) + 1, require_sign_bit=True)
                             for index in range(len(layers)))
        self._acc_bits = max(self._acc_bits, 2)
        self._split_argmax = int(self._per[-1] >= 2)
        hidden = [layer.n_out for layer in layers[:-1]]
        self._hidden_max = max(hidden, default=1)
        self._hidden_total = sum(hidden)
        self._neuron_bits = _index_bits(max(layer.n_out for layer in layers))
        self._layer_bits = _index_bits(len(layers))
        last = layers[-1]
        self._scale_bits = bits_for(int(abs(last.scale).max(initial=0)), require_sign_bit=True)
        self._offset_bits = bits_for(int(abs(last.offset).max(initial=0)), require_sign_bit=True)
        self._tag = data.StructLayout({
            "layer": unsigned(self._layer_bits), "neuron": unsigned(self._neuron_bits),
            "hidden": unsigned(_index_bits(max(self._hidden_total, 1))),
            "first": 1, "last": 1,
        })
        super().__init__({
            "i": In(stream.Signature(unsigned(model.input_bits))),
            "o": Out(stream.Signature(result_layout(model.n_classes, model.score_bits))),
            "trace": Out(stream.Signature(trace_layout(len(layers), self._hidden_max),
                                          always_ready=True)),
        })

    # -- parameters read back by tests, benches and board builds -------------------------------
    model = property(lambda self: self._model)
    lanes = property(lambda self: self._lanes)
    memory = property(lambda self: self._memory)
    n_inputs = property(lambda self: self._model.n_inputs)
    n_classes = property(lambda self: self._model.n_classes)
    input_bits = property(lambda self: self._model.input_bits)
    score_bits = property(lambda self: self._model.score_bits)
    acc_bits = property(lambda self: self._acc_bits)

    @property
    def weight_rows(self):
        """Rows in the weight memory (each ``2 * lanes`` bits)."""
        return len(self._rows)

    @property
    def weight_bits(self):
        return len(self._rows) * 2 * self._lanes

    @property
    def memories(self):
        """The engine's block RAM memories as ``{name: (depth, width)}``, each read a whole row
        at a time (what block RAM budgets are checked against). The per-class score affine is
        built from logic and is not listed."""
        lanes = self._lanes
        return {
            "weights": (len(self._rows), 2 * lanes),
            "inputs": (self._per[0], self._model.input_bits * lanes),
            "activations 0": (max(self._per[1:], default=1), 2 * lanes),
            "activations 1": (max(self._per[1:], default=1), 2 * lanes),
            "thresholds": (max(self._hidden_total, 1), 2 * self._acc_bits),
        }

    @property
    def popcount_latency(self):
        return 1 + exact_log2(self._lanes)

    @property
    def ideal_cycles(self):
        """Row reads per inference: sum of ``ceil(in / lanes) * out`` over the layers."""
        return sum(per * layer.n_out for per, layer in zip(self._per, self._model.layers))

    @property
    def drain_cycles(self):
        """Cycles from a layer's last row read to the first read of the next stage, per layer."""
        # read, register, lanes + tree, accumulate, parameters, threshold, write
        hidden = self.popcount_latency + 6
        # read, register, lanes + tree, accumulate, parameters, multiply, add, argmax
        last = self.popcount_latency + 7 + self._split_argmax
        return [hidden] * (len(self._model.layers) - 1) + [last]

    @property
    def cycles_per_inference(self):
        """Cycles from the first input beat to the last result beat, with streams that never stall."""
        return (self.n_inputs + self.ideal_cycles + sum(self.drain_cycles) + self.n_classes + 1)

    def elaborate(self, platform):
        m = Module()
        model, lanes, layers = self._model, self._lanes, self._model.layers
        n_layers = len(layers)
        aw = self._acc_bits

        # -- storage ---------------------------------------------------------------------------
        m.submodules.weights = weights = WeightMemory(lanes, self._rows, kind=self._memory)
        m.submodules.popcount = popcount = GXNORPopcount(lanes, self._x_bits, self._tag)
        m.submodules.threshold = threshold = ThresholdUnit(aw, self._tag)

        hidden_layers = layers[:-1]
        thr_init = [_twos(layer.t_hi[j], aw) | _twos(
                        layer.t_lo[j] if layer.t_lo is not None else layer.t_hi[j], aw) << aw
                    for layer in hidden_layers for j in range(layer.n_out)] or [0]
        # The memory kind decides where the thresholds and the activation buffers go too.
        attrs = {"ram_style": "block" if self._memory == "block" else "logic"}
        m.submodules.thresholds = thr_mem = Memory(shape=unsigned(2 * aw), depth=len(thr_init),
                                                   init=thr_init, attrs=attrs)
        thr_port = thr_mem.read_port()
        sw, ow = self._scale_bits, self._offset_bits
        last = layers[-1]
        aff_init = [_twos(last.scale[j], sw) | _twos(last.offset[j], ow) << sw
                    for j in range(last.n_out)]
        # One entry per class: a few flip-flops, not a block RAM.
        m.submodules.affine = aff_mem = Memory(shape=unsigned(sw + ow), depth=len(aff_init),
                                               init=aff_init, attrs={"ram_style": "logic"})
        aff_port = aff_mem.read_port()

        # Activation buffers: one row of ``lanes`` values per word, written one value at a time
        # (value n of a layer goes to lane n % lanes of row n // lanes), read a whole chunk per
        # cycle. Block RAM with a per-lane write mask when the memory kind is "block".
        shift = exact_log2(lanes)
        hidden_rows = max(self._per[1:], default=1)

        def buffer(name, bits, depth):
            mem = Memory(shape=unsigned(bits * lanes), depth=depth, init=[], attrs=attrs)
            m.submodules[name] = mem
            return mem.write_port(granularity=bits), mem.read_port()

        in_write, in_read = buffer("inputs", model.input_bits, self._per[0])
        act_ports = [buffer(f"acts{b}", 2, hidden_rows) for b in range(2)]

        # -- per-layer constants, held in registers while a layer runs ----------------------------
        # Every end-of-count test the sequencer acts on is a register computed a cycle ahead, so
        # that no comparison sits on the paths that decide the next state.
        layer = Signal(range(max(n_layers, 2)))
        max_out = max(ly.n_out for ly in layers)
        per_last_of = Array(Const(per - 1, range(max(self._per))) for per in self._per)
        out_last_of = Array(Const(ly.n_out - 1, range(max_out)) for ly in layers)
        cur_per_last = Signal(range(max(self._per)))
        cur_out_last = Signal(range(max_out))
        cur_final = Signal()
        chunk_end = Signal()                # chunk == cur_per_last
        neuron_end = Signal()               # neuron == cur_out_last
        in_end = Signal(init=model.n_inputs == 1)   # in_count == n_inputs - 1

        def enter_layer(index):
            """Load the registers of layer ``index`` (its first neuron, first chunk)."""
            if isinstance(index, int):
                per_last, out_last = Const(self._per[index] - 1), Const(layers[index].n_out - 1)
            else:
                per_last, out_last = per_last_of[index], out_last_of[index]
            m.d.sync += [
                layer.eq(index), cur_per_last.eq(per_last), cur_out_last.eq(out_last),
                cur_final.eq(index == n_layers - 1),
                chunk_end.eq(per_last == 0), neuron_end.eq(out_last == 0),
            ]

        # -- sequencer ---------------------------------------------------------------------------
        in_count = Signal(range(max(model.n_inputs, 2)))
        neuron = Signal(self._neuron_bits)
        chunk = Signal(range(max(max(self._per), 2)))
        addr = Signal.like(weights.addr)
        hidden_index = Signal(self._tag.members["hidden"])
        pending = Signal(range(max(ly.n_out for ly in layers) + 2))
        drained = Signal(init=1)
        emit = Signal(range(max(model.n_classes, 2)))
        emit_done = Signal()
        issue = Signal()
        completed = Signal()
        issued_neuron = Signal()

        score_shape = signed(model.score_bits)
        scores = Array(Signal(score_shape, name=f"score{j}") for j in range(model.n_classes))
        best = Signal(score_shape)
        best_index = Signal(self.o.payload.cls.shape())

        with m.FSM(name="seq"):
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.comb += [
                        in_write.addr.eq(in_count >> shift),
                        in_write.data.eq(self.i.payload.replicate(lanes)),
                        in_write.en.eq(1 << in_count[:shift] if shift else 1),
                    ]
                    m.d.sync += [in_count.eq(in_count + 1),
                                 in_end.eq(in_count == model.n_inputs - 2)]
                    with m.If(in_end):
                        m.d.sync += [in_count.eq(0), in_end.eq(model.n_inputs == 1),
                                     neuron.eq(0), chunk.eq(0), addr.eq(0), hidden_index.eq(0)]
                        enter_layer(0)
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += issue.eq(1)
                with m.If(chunk_end):
                    m.d.comb += issued_neuron.eq(1)
                    m.d.sync += [chunk.eq(0), chunk_end.eq(cur_per_last == 0)]
                    with m.If(~cur_final):
                        m.d.sync += hidden_index.eq(hidden_index + 1)
                    with m.If(neuron_end):
                        m.d.sync += neuron.eq(0)
                        m.next = "DRAIN"
                    with m.Else():
                        m.d.sync += [neuron.eq(neuron + 1),
                                     neuron_end.eq(neuron + 1 == cur_out_last)]
                with m.Else():
                    m.d.sync += [chunk.eq(chunk + 1), chunk_end.eq(chunk + 1 == cur_per_last)]
                m.d.sync += addr.eq(addr + 1)
            with m.State("DRAIN"):
                with m.If(drained):             # nothing in flight, so nothing completes
                    with m.If(cur_final):
                        m.next = "EMIT"
                    with m.Else():
                        enter_layer(layer + 1)
                        m.next = "RUN"
            with m.State("EMIT"):
                # The payload comes from registers (one score per beat), loaded ahead of the
                # transfer: nothing combinational reaches the consumer.
                with m.If(~self.o.valid | self.o.ready):
                    with m.If(emit_done):
                        m.d.sync += self.o.valid.eq(0)
                        with m.If(~self.o.valid | self.o.payload.last):
                            m.d.sync += [emit.eq(0), emit_done.eq(0)]
                            m.next = "LOAD"
                    with m.Else():
                        m.d.sync += [
                            self.o.valid.eq(1),
                            self.o.payload.index.eq(emit),
                            self.o.payload.score.eq(scores[emit]),
                            self.o.payload.cls.eq(best_index),
                            self.o.payload.last.eq(emit == model.n_classes - 1),
                            emit.eq(emit + 1),
                            emit_done.eq(emit == model.n_classes - 1),
                        ]

        # Neurons issued but not yet written back; ``drained`` is ``pending == 0`` kept in a
        # register (computed from the next count), off the sequencer's decision paths.
        pending_next = Signal.like(pending)
        with m.If(issued_neuron & ~completed):
            m.d.comb += pending_next.eq(pending + 1)
        with m.Elif(~issued_neuron & completed):
            m.d.comb += pending_next.eq(pending - 1)
        with m.Else():
            m.d.comb += pending_next.eq(pending)
        m.d.sync += [pending.eq(pending_next), drained.eq(pending_next == 0)]

        # -- stage 1: weight row read and activation chunk --------------------------------------
        m.d.comb += [weights.addr.eq(addr), weights.en.eq(issue)]
        s1_valid = Signal()
        s1_tag = Signal(self._tag)
        s1_layer0 = Signal()
        s1_parity = Signal()
        m.d.sync += [
            s1_valid.eq(issue), s1_layer0.eq(layer == 0), s1_parity.eq(layer[0]),
            s1_tag.layer.eq(layer), s1_tag.neuron.eq(neuron), s1_tag.hidden.eq(hidden_index),
            s1_tag.first.eq(chunk == 0), s1_tag.last.eq(chunk_end),
        ]
        # The activation buffers read every cycle (only tagged rows are used downstream): no
        # read-enable logic between a block RAM and the register behind it.
        for _, port in (in_write, in_read), *act_ports:
            m.d.comb += [port.addr.eq(chunk), port.en.eq(1)]

        # -- stage 2: register every block RAM output as it comes (they are slow, and a register
        # right behind a block RAM can become its output register) --------------------------------
        s2_valid, s2_layer0, s2_parity = Signal(), Signal(), Signal()
        s2_tag = Signal(self._tag)
        s2_codes = Signal.like(weights.data)
        s2_pixels = Signal.like(in_read.data)
        s2_acts = [Signal.like(read.data, name=f"s2_acts{b}") for b, (_, read) in enumerate(act_ports)]
        m.d.sync += [s2_valid.eq(s1_valid), s2_tag.eq(s1_tag), s2_layer0.eq(s1_layer0),
                     s2_parity.eq(s1_parity), s2_codes.eq(weights.data),
                     s2_pixels.eq(in_read.data)]
        m.d.sync += [reg.eq(read.data) for reg, (_, read) in zip(s2_acts, act_ports)]

        x_chunk = Signal(data.ArrayLayout(signed(self._x_bits), lanes))
        ib = model.input_bits
        for p in range(lanes):
            pixel = s2_pixels[p * ib:(p + 1) * ib]
            act0 = s2_acts[0][2 * p:2 * p + 2].as_signed()
            act1 = s2_acts[1][2 * p:2 * p + 2].as_signed()
            with m.If(s2_layer0):
                m.d.comb += x_chunk[p].eq(pixel)
            with m.Elif(s2_parity):         # odd layers read what layer 0, 2, ... wrote (bank 0)
                m.d.comb += x_chunk[p].eq(act0)
            with m.Else():
                m.d.comb += x_chunk[p].eq(act1)

        # -- stage 3: PCSA read, GXNOR lanes, popcount tree -------------------------------------
        m.d.comb += [
            popcount.i.valid.eq(s2_valid),
            popcount.i.payload.codes.eq(s2_codes),
            popcount.i.payload.x.eq(x_chunk),
            popcount.i.payload.tag.eq(s2_tag),
        ]

        # -- stage 4: accumulate the rows of a neuron -------------------------------------------
        acc = Signal(signed(aw))
        done = Signal()
        done_tag = Signal(self._tag)
        row = popcount.o.payload
        with m.If(popcount.o.valid):
            m.d.sync += acc.eq(row.sum + Mux(row.tag.first, 0, acc))
        m.d.sync += [done.eq(popcount.o.valid & row.tag.last), done_tag.eq(row.tag)]
        m.d.comb += [
            thr_port.addr.eq(row.tag.hidden), thr_port.en.eq(popcount.o.valid & row.tag.last),
            aff_port.addr.eq(row.tag.neuron), aff_port.en.eq(popcount.o.valid & row.tag.last),
        ]
        done_final = done_tag.layer == n_layers - 1

        # -- stage 5: register the neuron with its parameters (the block RAM outputs) ----------
        n_valid, n_final = Signal(), Signal()
        n_tag = Signal(self._tag)
        n_acc = Signal(signed(aw))
        n_thr = Signal.like(thr_port.data)
        n_aff = Signal.like(aff_port.data)
        m.d.sync += [n_valid.eq(done), n_final.eq(done_final), n_tag.eq(done_tag), n_acc.eq(acc),
                     n_thr.eq(thr_port.data), n_aff.eq(aff_port.data)]

        # -- stage 6a: threshold, activation buffer write ---------------------------------------
        m.d.comb += [
            threshold.i.valid.eq(n_valid & ~n_final),
            threshold.i.payload.acc.eq(n_acc),
            threshold.i.payload.t_hi.eq(n_thr[:aw].as_signed()),
            threshold.i.payload.t_lo.eq(n_thr[aw:].as_signed()),
            threshold.i.payload.ternary.eq(
                Array(Const(ly.activation == "ternary") for ly in layers)[n_tag.layer]),
            threshold.i.payload.tag.eq(n_tag),
        ]
        act = threshold.o.payload
        for b, (write, _) in enumerate(act_ports):
            m.d.comb += [
                write.addr.eq(act.tag.neuron >> shift),
                write.data.eq(act.act.as_unsigned().replicate(lanes)),
                write.en.eq(Mux(threshold.o.valid & (act.tag.layer[0] == b),
                                1 << act.tag.neuron[:shift] if shift else 1, 0)),
            ]
        m.d.comb += [
            self.trace.valid.eq(threshold.o.valid),
            self.trace.payload.layer.eq(act.tag.layer),
            self.trace.payload.neuron.eq(act.tag.neuron),
            self.trace.payload.act.eq(act.act),
        ]

        # -- stage 6b: scores = scale * a + offset, running argmax ------------------------------
        product = Signal(signed(aw + sw))
        offset = Signal(signed(ow))
        p_valid = Signal()
        p_index = Signal(self._neuron_bits)
        m.d.sync += [
            product.eq(n_acc * n_aff[:sw].as_signed()),
            offset.eq(n_aff[sw:].as_signed()),
            p_valid.eq(n_valid & n_final),
            p_index.eq(n_tag.neuron),
        ]
        score = Signal(score_shape)
        s_valid = Signal()
        s_index = Signal(self._neuron_bits)
        m.d.sync += [score.eq(product + offset), s_valid.eq(p_valid), s_index.eq(p_index)]
        if self._split_argmax:
            # The last layer's scores come at least two cycles apart: compare in one cycle and
            # update the running maximum in the next, a shorter path than both in one cycle.
            a_valid, a_greater = Signal(), Signal()
            a_index = Signal.like(s_index)
            a_score = Signal(score_shape)
            m.d.sync += [a_valid.eq(s_valid), a_index.eq(s_index), a_score.eq(score),
                         a_greater.eq((s_index == 0) | (score > best))]
            with m.If(a_valid):
                m.d.sync += scores[a_index].eq(a_score)
                with m.If(a_greater):
                    m.d.sync += [best.eq(a_score), best_index.eq(a_index)]
            stored = a_valid
        else:
            with m.If(s_valid):
                m.d.sync += scores[s_index].eq(score)
                with m.If((s_index == 0) | (score > best)):
                    m.d.sync += [best.eq(score), best_index.eq(s_index)]
            stored = s_valid

        m.d.comb += completed.eq(threshold.o.valid | stored)

        return m
