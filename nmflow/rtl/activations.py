"""Activation store: the input buffer and the two hidden-activation buffers of the engine."""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.plan import index_bits

__all__ = ["ActivationStore", "ActivationReadSignature", "chunk_layout", "write_layout",
           "load_layout"]


def chunk_layout(plan):
    """A chunk of ``simd`` activations as the GXNOR lanes take them (signed, ``x_bits`` each)."""
    return data.ArrayLayout(plan.x_format.shape(), plan.simd)


def load_layout(plan):
    """An input value of the next inference: its index, and the input bank it goes to (0 with
    one bank: :attr:`~nmflow.golden.plan.EnginePlan.input_banks`)."""
    bound = plan.input_index_bound if plan.has_conv else plan.n_inputs
    return data.StructLayout({
        "index": range(max(bound, 2)), "value": unsigned(plan.model.input_bits), "bank": 1,
    })


def write_layout(plan):
    """A group of ``pe`` hidden activations as the store takes them (``end``: the layer's last
    group; with a convolution, an output pixel's last group, and ``row`` the buffer row)."""
    fields = {"layer": plan.layer_bits, "group": plan.group_bits,
              "acts": data.ArrayLayout(signed(2), plan.pe), "end": 1}
    if plan.has_conv:
        fields["row"] = index_bits(plan.hidden_rows)
    return data.StructLayout(fields)


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
    chunk : In(range(max(act_rows, 2)))
        The chunk (row of ``simd`` values) to read.
    zero : In(1), with a convolution
        Read 0 instead (a kernel position outside the map: padding).
    bank : In(1)
        The input bank layer 0 reads (with two: :attr:`~nmflow.golden.plan.EnginePlan.input_banks`).
    layer : In(layer_bits)
        The layer that reads it: layer 0 reads the inputs, odd layers the buffer that even layers
        write (bank 0), even layers above 0 the other one (bank 1).
    plane : In(plane_bits)
        With a digit-serial first layer, the digit of the inputs to read: each input's bits
        ``[plane * d, plane * d + d)``, ``d = first_layer_bits``.
    x : Out(chunk_layout(plan))
        The chunk, :attr:`ActivationStore.read_latency` cycles after ``chunk`` and ``layer``.
    """

    def __init__(self, plan):
        members = {
            "chunk": In(range(max(plan.act_rows, 2))),
            "bank": In(1),
            "layer": In(plan.layer_bits),
            "plane": In(plan.plane_bits),
            "x": Out(chunk_layout(plan)),
        }
        if plan.has_conv:
            members["zero"] = In(1)
        super().__init__(members)


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
    load : In(stream.Signature(load_layout(plan), always_ready=True))
        Input value ``index`` of the next inference, into input bank ``bank`` (with two banks,
        the other bank is being read meanwhile).
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
            "load": In(stream.Signature(load_layout(plan), always_ready=True)),
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

        # With two input banks, the bank is the top address bit.
        banked = plan.input_banks == 2
        in_rows = index_bits(plan.input_rows)
        in_write, in_read = buffer("inputs", unsigned(plan.model.input_bits),
                                   2 << in_rows if banked else plan.input_rows)
        # The two activation banks share one memory, the bank the top address bit: a layer reads
        # one bank while it writes the other, through the memory's read and write ports.
        row_bits = index_bits(plan.hidden_rows)
        acts_write, acts_read = buffer("acts", signed(2), 2 << row_bits)

        load = self.load.payload
        m.d.comb += [
            in_write.addr.eq(Cat((load.index >> shift)[:in_rows], load.bank) if banked
                             else load.index >> shift),
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
        for ly in plan.model.layers:        # (a convolution's: an output pixel's channels)
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
        m.d.comb += [
            acts_write.addr.eq(Cat((act.row if plan.has_conv else act.group >> slot_bits)
                                   [:row_bits], act.layer[0])),
            acts_write.data.eq(values),
            acts_write.en.eq(Mux(self.write.valid, enable, 0)),
        ]

        # Every buffer reads every cycle (only the rows the datapath tags are used): no
        # read-enable logic between a block RAM and the register behind it.
        # Layer k reads the bank layer k - 1 wrote: bank (k - 1) % 2.
        m.d.comb += [in_read.addr.eq(Cat(self.read.chunk[:in_rows], self.read.bank) if banked
                                     else self.read.chunk), in_read.en.eq(1),
                     acts_read.addr.eq(Cat(self.read.chunk[:row_bits], ~self.read.layer[0])),
                     acts_read.en.eq(1)]

        # Register every block RAM output as it comes (a register right behind a block RAM can
        # become its output register), then select the buffer.
        layer0, r_layer0 = Signal(), Signal()
        plane, r_plane = Signal(plan.plane_bits), Signal(plan.plane_bits)
        m.d.sync += [layer0.eq(self.read.layer == 0), r_layer0.eq(layer0),
                     plane.eq(self.read.plane), r_plane.eq(plane)]
        pixels = _register(m, in_read.data, "pixels")
        if plan.digit_serial:               # one digit of each pixel
            d = plan.first_layer_bits
            pixels = [(pixel >> (r_plane * d))[:d] for pixel in pixels]
        acts = _register(m, acts_read.data, "acts_data")
        if plan.has_conv:                   # padding reads 0 (the mask travels with the read)
            zero, r_zero = Signal(), Signal()
            m.d.sync += [zero.eq(self.read.zero), r_zero.eq(zero)]
            for p in range(lanes):
                m.d.comb += self.read.x[p].eq(Mux(r_zero, 0, Mux(r_layer0, pixels[p], acts[p])))
            return m
        for p in range(lanes):
            m.d.comb += self.read.x[p].eq(Mux(r_layer0, pixels[p], acts[p]))
        return m
