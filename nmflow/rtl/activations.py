"""Activation store: the input buffer and the two hidden-activation buffers of the engine."""

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["ActivationStore", "ActivationReadSignature", "chunk_layout", "write_layout"]


def chunk_layout(plan):
    """A chunk of ``simd`` activations as the GXNOR lanes take them (signed, ``x_bits`` each)."""
    return data.ArrayLayout(plan.x_format.shape(), plan.simd)


def write_layout(plan):
    """A group of ``pe`` hidden activations as the store takes them (``end``: the layer's last
    group)."""
    return data.StructLayout({
        "layer": plan.layer_bits, "group": plan.group_bits,
        "acts": data.ArrayLayout(signed(2), plan.pe), "end": 1,
    })


def _register(m, value, name):
    """``value`` (a view of an array layout) registered. The register is a plain bit vector
    seen through a view: a signal with the layout shape itself would make the netlist name its
    elements ``name[k]``, the same names as its bits, and nextpnr-ecp5 would then merge them."""
    layout = value.shape()
    reg = Signal(layout.size, name=name)
    m.d.sync += reg.eq(value)
    return data.View(layout, reg)


class ActivationReadSignature(wiring.Signature):
    """The store's read port, from the store's side.

    Members
    -------
    chunk : In(range(max(per)))
        The chunk (row of ``simd`` values) to read.
    layer : In(layer_bits)
        The layer that reads it: layer 0 reads the inputs, odd layers the buffer that even layers
        write (bank 0), even layers above 0 the other one (bank 1).
    x : Out(chunk_layout(plan))
        The chunk, :attr:`ActivationStore.read_latency` cycles after ``chunk`` and ``layer``.
    """

    def __init__(self, plan):
        super().__init__({
            "chunk": In(range(max(max(plan.per), 2))),
            "layer": In(plan.layer_bits),
            "x": Out(chunk_layout(plan)),
        })


class ActivationStore(wiring.Component):
    """The inputs of an inference and the activations of its hidden layers, a chunk per read.

    Three buffers of rows of ``simd`` values, each read a whole row per cycle, with a per-lane
    write enable (value ``n`` of a layer goes to lane ``n % simd`` of row ``n // simd``): the
    input buffer (unsigned ``input_bits`` values, written one at a time) and two activation
    buffers ({-1, 0, +1} as 2-bit values, written a group of ``pe`` at a time, all in one row
    since ``pe`` divides ``simd``), used in turn by successive layers. Block RAM when the memory
    kind is ``"block"``.

    Parameters
    ----------
    plan : :class:`~nmflow.golden.plan.EnginePlan`
    inputs, activations : ``"block"`` or ``"logic"``
        How the input buffer and the two activation banks are built (the same synchronous
        ports, and the same latency, either way).

    Members
    -------
    load : In(stream.Signature({"index", "value"}, always_ready=True))
        Input value ``index`` of the next inference.
    write : In(stream.Signature({"layer", "group", "acts", "end"}, always_ready=True))
        The activations of a group of ``pe`` hidden neurons; layer ``k`` writes bank ``k % 2``.
        ``end`` marks the layer's last group, which also writes 0 past the layer's last output
        in its row (padding lanes read 0).
    read : Out(:class:`ActivationReadSignature`)

    Latency: :attr:`read_latency` = 2 cycles from ``read.chunk`` to ``read.x`` (the block RAM read,
    and a register right behind it; the buffer is selected after that register). A value written
    is read correctly from the next cycle on.
    """

    read_latency = 2

    def __init__(self, plan, *, inputs="block", activations="block"):
        self._plan = plan
        self._kinds = {"inputs": inputs, "activations": activations}
        super().__init__({
            "load": In(stream.Signature(data.StructLayout({
                "index": range(max(plan.n_inputs, 2)),
                "value": unsigned(plan.model.input_bits),
            }), always_ready=True)),
            "write": In(stream.Signature(write_layout(plan), always_ready=True)),
            "read": Out(ActivationReadSignature(plan)),
        })

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        lanes, pe = plan.simd, plan.pe
        shift = plan.lane_bits
        def buffer(name, shape, depth):
            kind = self._kinds["inputs" if name == "inputs" else "activations"]
            attrs = {"ram_style": "block" if kind == "block" else "logic"}
            mem = Memory(shape=data.ArrayLayout(shape, lanes), depth=depth, init=[], attrs=attrs)
            m.submodules[name] = mem
            return mem.write_port(granularity=1), mem.read_port()

        def lane_enable(index):
            return 1 << index[:shift] if shift else 1

        in_write, in_read = buffer("inputs", unsigned(plan.model.input_bits), plan.per[0])
        banks = [buffer(f"acts{b}", signed(2), plan.hidden_rows) for b in range(2)]

        load = self.load.payload
        m.d.comb += [
            in_write.addr.eq(load.index >> shift),
            in_write.data.eq(load.value.replicate(lanes)),
            in_write.en.eq(Mux(self.load.valid, lane_enable(load.index), 0)),
        ]
        act = self.write.payload
        # A group's activations go to its slot of ``pe`` lanes in its row. A layer's last group
        # also writes 0 into every lane of its row past the layer's last output: padding neurons,
        # and lanes an earlier, wider layer left in this bank. The next layer multiplies those
        # lanes by padding weights (code 0), which a read error can turn into +-1: with a 0 there
        # the product stays 0, as the golden reference (which drops padding) has it.
        slot_bits = shift - plan.pe_bits
        slot = act.group[:slot_bits] if slot_bits else 0
        group_enable = Signal(lanes)
        m.d.comb += group_enable.eq(Const((1 << pe) - 1, lanes) << (slot * pe) if slot_bits
                                    else (1 << pe) - 1)
        end_enable, keep = [], []
        for ly in plan.model.layers:
            last_slot = ((ly.n_out - 1) % lanes) // pe
            real = (ly.n_out - 1) % lanes + 1            # real lanes of the layer's last row
            end_enable.append(Const(((1 << lanes) - 1) & ~((1 << last_slot * pe) - 1), lanes))
            keep.append(Const((1 << 2 * real) - 1, 2 * lanes))
        enable = Signal(lanes)
        values = Signal(2 * lanes)
        replicated = act.acts.as_value().replicate(lanes // pe)
        with m.If(act.end):
            m.d.comb += [enable.eq(Array(end_enable)[act.layer]),
                         values.eq(replicated & Array(keep)[act.layer])]
        with m.Else():
            m.d.comb += [enable.eq(group_enable), values.eq(replicated)]
        for b, (write, _) in enumerate(banks):
            m.d.comb += [
                write.addr.eq(act.group >> slot_bits),
                write.data.eq(values),
                write.en.eq(Mux(self.write.valid & (act.layer[0] == b), enable, 0)),
            ]

        # Every buffer reads every cycle (only the rows the datapath tags are used): no
        # read-enable logic between a block RAM and the register behind it.
        for _, port in (in_write, in_read), *banks:
            m.d.comb += [port.addr.eq(self.read.chunk), port.en.eq(1)]

        # Register every block RAM output as it comes (a register right behind a block RAM can
        # become its output register), then select the buffer.
        layer0, parity = Signal(), Signal()
        r_layer0, r_parity = Signal(), Signal()
        m.d.sync += [layer0.eq(self.read.layer == 0), parity.eq(self.read.layer[0]),
                     r_layer0.eq(layer0), r_parity.eq(parity)]
        pixels = _register(m, in_read.data, "pixels")
        acts = [_register(m, read.data, f"acts{b}_data") for b, (_, read) in enumerate(banks)]
        for p in range(lanes):
            with m.If(r_layer0):
                m.d.comb += self.read.x[p].eq(pixels[p])
            with m.Elif(r_parity):          # odd layers read what layer 0, 2, ... wrote (bank 0)
                m.d.comb += self.read.x[p].eq(acts[0][p])
            with m.Else():
                m.d.comb += self.read.x[p].eq(acts[1][p])
        return m
