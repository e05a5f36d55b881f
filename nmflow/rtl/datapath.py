"""MAC datapath of the inference engine: weight memory, read stage, GXNOR lanes, accumulator."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out

from ..errors import NmflowError
from .activations import ActivationReadSignature
from .lanes import GXNORPopcount
from .pcsa import PCSARead
from .sequencer import command_layout, tag_layout
from .weights import PairReadSignature, WeightMemory, pair_row

__all__ = ["MACDatapath", "neuron_layout", "threshold_layout", "affine_layout"]


def threshold_layout(plan):
    """A hidden neuron's thresholds (contract 1): ``+1 if acc >= t_hi``, ``-1 if acc < t_lo``."""
    return data.StructLayout({"t_hi": plan.acc_format.shape(), "t_lo": plan.acc_format.shape()})


def _groups_of(plan, rows, fill):
    """Per-neuron entries of a layer, ``pe`` to a group (padding neurons get ``fill``)."""
    rows = rows + [fill] * (-len(rows) % plan.pe)
    return [rows[g:g + plan.pe] for g in range(0, len(rows), plan.pe)]


def affine_layout(plan):
    """A class's score affine: ``score = scale * acc + offset``."""
    return data.StructLayout({"scale": plan.scale_format.shape(),
                              "offset": plan.offset_format.shape()})


def neuron_layout(plan):
    """A completed group of ``pe`` neurons: their pre-activations, their parameters and the
    group's tag."""
    pe = plan.pe
    return data.StructLayout({
        "acc": data.ArrayLayout(plan.acc_format.shape(), pe),
        "thr": data.ArrayLayout(threshold_layout(plan), pe),
        "aff": data.ArrayLayout(affine_layout(plan), pe), "final": 1, "tag": tag_layout(plan),
    })


class MACDatapath(wiring.Component):
    """Row by row: weight memory, read stage, GXNOR lanes and adder trees, accumulators.

    For each command (one row of a group of ``pe`` neurons) it reads the row of pair codes and the matching chunk
    of activations (from the :class:`~nmflow.rtl.activations.ActivationStore` through ``acts``),
    registers both, turns the codes into ternary weights through the read stage, multiplies and
    adds them in the :class:`~nmflow.rtl.lanes.GXNORPopcount` lanes and trees (one per neuron of
    the group), and accumulates the rows of a group. When a group's last row is in, it reads the
    group's parameters (thresholds of hidden neurons, score affines of classes) and hands the
    group on.

    Parameters
    ----------
    plan : :class:`~nmflow.golden.plan.EnginePlan`
        Its ``read_latency`` must be the read stage's latency.
    codes : uint8 array [rows, lanes]
        The weight memory image (pair codes).
    memory : ``"block"``, ``"logic"`` or ``"spram"`` (the weights; the thresholds then block RAM)
    read_stage : callable
        ``read_stage(lanes=, addr_bits=)`` returns the read stage, a component with the signature
        of :class:`~nmflow.rtl.pcsa.ReadStageSignature` and a ``latency`` (:class:`PCSARead`
        by default).
    writable : bool
        Expose the weight memory's write port as ``weights``, and reads of it as ``pairs``.

    A read stage with a ``config`` member (the error injector,
    :class:`~nmflow.rtl.injector.PCSAErrorRead`) has it forwarded as ``read_config``.

    Members
    -------
    cmd : In(stream.Signature(command_layout(plan), always_ready=True))
    acts : In(:class:`~nmflow.rtl.activations.ActivationReadSignature`)
        The activation store's read port (this datapath drives it).
    o : Out(stream.Signature(neuron_layout(plan), always_ready=True))
        One beat per group.
    weights : Out(WritePort.Signature(...)), only if ``writable``
        Rewrites rows of pair codes (per-lane enables); use it while the engine is idle.
    pairs : In(:class:`~nmflow.rtl.weights.PairReadSignature`), only if ``writable``
        Reads a row through the memory's read port (its address is muxed in while no command
        is valid; commands win) and the stage-2 register: ``valid`` two cycles after ``en``.
        The read stage does not see it (no read-error draw).
    read_config : In(the read stage's ``config`` signature), only if the read stage has one

    Latency: from a group's last command to its beat on ``o``, the stages ``weight read``
    through ``parameters`` of :data:`nmflow.golden.plan.PIPELINE`. Throughput: one row per cycle.
    """

    def __init__(self, plan, codes, *, memory="block", read_stage=None, writable=False):
        self._plan = plan
        self._codes = codes
        self._memory = memory
        self._read_stage = (read_stage or PCSARead)(lanes=plan.lanes, addr_bits=plan.addr_bits)
        if self._read_stage.latency != plan.read_latency:
            raise NmflowError(f"read stage latency must be the plan's read_latency "
                             f"{plan.read_latency}, not {self._read_stage.latency!r}")
        self._writable = writable
        members = {
            "cmd": In(stream.Signature(command_layout(plan), always_ready=True)),
            "acts": In(ActivationReadSignature(plan)),
            "o": Out(stream.Signature(neuron_layout(plan), always_ready=True)),
        }
        if writable:
            members["weights"] = Out(WritePort.Signature(addr_width=plan.addr_bits,
                                                         shape=pair_row(plan.lanes),
                                                         granularity=1))
            members["pairs"] = In(PairReadSignature(plan.addr_bits, plan.lanes))
        stage_members = self._read_stage.signature.members
        if "config" in stage_members:
            members["read_config"] = stage_members["config"]
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        layers = plan.model.layers
        tag_shape = tag_layout(plan)

        m.submodules.weights = weights = WeightMemory(self._codes, kind=self._memory,
                                                      writable=self._writable)
        if self._writable:
            wiring.connect(m, wiring.flipped(self.weights), weights.write)
        m.submodules.read_stage = read_stage = self._read_stage
        if "read_config" in self.signature.members:
            wiring.connect(m, wiring.flipped(self.read_config), read_stage.config)
        m.submodules.popcount = popcount = GXNORPopcount(plan.lanes, plan.x_bits, tag_shape,
                                                         pe=plan.pe)

        # Group parameters: one row per hidden group, one per group of classes (``pe`` neurons'
        # worth each; padding neurons get zeros).
        aw = plan.acc_bits
        zero_thr = {"t_hi": 0, "t_lo": 0}
        thr_init = [row for ly in layers[:-1] for row in _groups_of(plan, [
            {"t_hi": int(ly.t_hi[j]), "t_lo": int(ly.t_lo[j] if ly.t_lo is not None
                                                  else ly.t_hi[j])}
            for j in range(ly.n_out)], zero_thr)] or [[zero_thr] * plan.pe]
        attrs = {"ram_style": "logic" if self._memory == "logic" else "block"}
        m.submodules.thresholds = thr_mem = Memory(
            shape=data.ArrayLayout(threshold_layout(plan), plan.pe), depth=len(thr_init),
            init=thr_init, attrs=attrs)
        thr_port = thr_mem.read_port()
        last = layers[-1]
        aff_init = _groups_of(plan, [{"scale": int(last.scale[j]), "offset": int(last.offset[j])}
                                     for j in range(last.n_out)], {"scale": 0, "offset": 0})
        m.submodules.affine = aff_mem = Memory(
            shape=data.ArrayLayout(affine_layout(plan), plan.pe), depth=len(aff_init),
            init=aff_init, attrs={"ram_style": "logic"})
        aff_port = aff_mem.read_port()

        # -- stage 1: read the weight row and the activation chunk --------------------------------
        cmd = self.cmd.payload
        m.d.comb += [self.acts.chunk.eq(cmd.chunk), self.acts.bank.eq(cmd.bank),
                     self.acts.layer.eq(cmd.tag.layer), self.acts.plane.eq(cmd.tag.plane)]
        if plan.has_conv:
            m.d.comb += self.acts.zero.eq(cmd.zero)
        if self._writable:
            # Reads from outside (while idle) share the port; the engine's own reads come first.
            peek = self.pairs
            m.d.comb += [weights.read.addr.eq(Mux(self.cmd.valid, cmd.addr, peek.addr)),
                         weights.read.en.eq(self.cmd.valid | peek.en)]
            peek1, peek2 = Signal(), Signal()
            m.d.sync += [peek1.eq(peek.en & ~self.cmd.valid), peek2.eq(peek1)]
            m.d.comb += peek.valid.eq(peek2)
        else:
            m.d.comb += [weights.read.addr.eq(cmd.addr), weights.read.en.eq(self.cmd.valid)]
        s1_valid = Signal()
        s1_tag = Signal(tag_shape)
        s1_addr = Signal.like(cmd.addr)
        m.d.sync += [s1_valid.eq(self.cmd.valid), s1_tag.eq(cmd.tag), s1_addr.eq(cmd.addr)]

        # -- stage 2: register the block RAM output (the store registers its own): the row's codes
        # and its activations arrive together, ``ActivationStore.read_latency`` cycles after the
        # command (checked against the plan's stages in tests/test_rtl_seams.py) ----------------
        s2_valid = Signal()
        s2_tag = Signal(tag_shape)
        s2_addr = Signal.like(cmd.addr)
        s2_codes = Signal(weights.read.data.shape().size)       # plain bits: see activations
        m.d.sync += [s2_valid.eq(s1_valid), s2_tag.eq(s1_tag), s2_addr.eq(s1_addr),
                     s2_codes.eq(weights.read.data)]
        if self._writable:
            m.d.comb += self.pairs.data.eq(s2_codes)

        # -- stage 3: the read stage; the activations and the tag wait for it. A row's later
        # digits (a digit-serial first layer) do not read again: the read stage sees the row once,
        # so the read-error injector draws once per row, as its twin does --------------------------
        m.d.comb += [
            read_stage.i.valid.eq(s2_valid & (s2_tag.plane == 0)),
            read_stage.i.payload.codes.eq(s2_codes),
            read_stage.i.payload.addr.eq(s2_addr),
        ]
        x, tag, valid = self.acts.x, s2_tag, s2_valid
        for n in range(plan.read_latency):
            x_next = data.View(x.shape(), Signal(x.shape().size, name=f"x_read{n}"))
            tag_next = Signal.like(tag, name=f"tag_read{n}")
            valid_next = Signal(name=f"valid_read{n}")
            m.d.sync += [x_next.eq(x), tag_next.eq(tag), valid_next.eq(valid)]
            x, tag, valid = x_next, tag_next, valid_next
        # The later digits take the weights the read stage holds from the row's read (its
        # contract, ReadStageSignature): no register of a row's weights here.
        weights_read = read_stage.o.payload

        # -- stage 4: GXNOR lanes and popcount tree ------------------------------------------------
        m.d.comb += [
            popcount.i.valid.eq(valid),
            popcount.i.payload.weights.eq(weights_read),
            popcount.i.payload.x.eq(x),
            popcount.i.payload.tag.eq(tag),
        ]

        # -- stage 5: accumulate the rows of a group; read its parameters at its last row ---------
        accs = [Signal(signed(aw), name=f"acc{q}") for q in range(plan.pe)]
        done = Signal()
        done_tag = Signal(tag_shape)
        row = popcount.o.payload
        with m.If(popcount.o.valid):
            if plan.digit_serial:           # a digit's sum, weighted by its place
                place = row.tag.plane * plan.first_layer_bits
                m.d.sync += [acc.eq((row.sums[q] << place) + Mux(row.tag.first, 0, acc))
                             for q, acc in enumerate(accs)]
            else:
                m.d.sync += [acc.eq(row.sums[q] + Mux(row.tag.first, 0, acc))
                             for q, acc in enumerate(accs)]
        m.d.sync += [done.eq(popcount.o.valid & row.tag.last), done_tag.eq(row.tag)]
        m.d.comb += [
            thr_port.addr.eq(row.tag.hidden), thr_port.en.eq(popcount.o.valid & row.tag.last),
            aff_port.addr.eq(row.tag.group), aff_port.en.eq(popcount.o.valid & row.tag.last),
        ]

        # -- stage 6: the group with its parameters (registered block RAM outputs) -----------------
        out = self.o.payload
        m.d.sync += [
            self.o.valid.eq(done), out.final.eq(done_tag.layer == plan.n_layers - 1),
            out.tag.eq(done_tag), out.thr.eq(thr_port.data), out.aff.eq(aff_port.data),
        ]
        m.d.sync += [out.acc[q].eq(acc) for q, acc in enumerate(accs)]
        return m
