"""Formal harnesses of the control blocks, proved with :func:`nmflow.sim.formal.prove`.

Each harness instantiates a block from a *class* it is given (so that a test can hand it a
deliberately broken copy), drives the block's inputs from free inputs of its own (listed in
:attr:`ports`) or from a small well-behaved model of the neighbour, and states the properties on
the block's ports only, with reference trackers kept in the harness. The configurations are
small on purpose: bounded model checking grows steeply with the state of the design.

:class:`LinkProof` (the host link, :class:`~nmflow.rtl.hostlink.HostLink`):

``"engine"``
    An ``engine_i`` beat only comes from an INFER frame that checked: the harness follows every
    byte the link takes from the SYNC it takes while idle, computes the frame's CRC-8 with its own
    CRC unit, and records the command, the length, the payload values and the CRC byte. While
    ``engine_i.valid`` is high the frame being answered (begun since the link was last idle) had
    CMD = INFER, LEN = ``n_inputs``, every value below ``2 ** input_bits`` and a matching CRC byte
    at offset ``4 + n_inputs``; the beat carries the payload value the harness recorded at the
    same position; and at most ``n_inputs`` beats go out per frame (the frame is fed at most once).
``"once"``
    The link answers each frame at most once: the harness parses the transmitted bytes into reply
    frames (SYNC, CMD, LEN, LEN bytes, CRC) and asserts that ``tx.valid`` is only ever high after
    a frame has begun and before a whole reply to it has gone out; each reply starts with SYNC.
``"idle"``
    Bounded return to idle, with a transmitter and an engine that are always ready (and an engine
    whose results come at once, ``last`` on the ``n_classes``-th beat): ``bound`` cycles after the
    last byte the link took, it is idle, whatever that byte was (the CRC of a frame, a byte of an
    unfinished frame that then times out, a byte of garbage or a byte that arrived mid-reply).

:class:`SequencerProof` (the engine's :class:`~nmflow.rtl.sequencer.Sequencer`):

``"rows"``
    Every row issued (``cmd.valid``) lies within ``[base, base + rows)`` of the layer in its tag,
    that layer is the one being computed (the harness counts rows issued since the inference
    began: rows go out in memory order, layer after layer), and no row is issued past the plan's
    last row; ``emit`` comes only for an inference whose rows have all been issued, once every
    issued neuron of the last layer has completed (``scored``; the next inference's first layers
    may already run). Completions are free, but never more than the neurons issued.
``"idle"``
    With a datapath that completes each neuron ``latency`` cycles after its last row and a score
    unit that is never busy: at most two complete input vectors are ever held (one computing, one
    waiting); while any is, an ``emit`` comes at most ``bound`` cycles after the last ``emit`` or
    the last complete vector; and in the cycle after an ``emit`` with no other input taken, whole
    or in part, the sequencer is idle (results going out, next inference not begun).
"""

from amaranth.hdl import Array, Assert, Assume, Elaboratable, Module, Mux, ResetInserter, Signal

from .. import protocol

__all__ = ["LinkProof", "SequencerProof"]


class LinkProof(Elaboratable):
    """Properties of a host link of a small configuration (see the module docstring).

    Parameters
    ----------
    link_class : type
        :class:`~nmflow.rtl.hostlink.HostLink` or a broken copy of it.
    check : str
        ``"engine"``, ``"once"`` or ``"idle"``.
    bound : int
        The cycles of ``"idle"``.
    """

    def __init__(self, link_class, check, *, n_inputs=2, input_bits=2, n_classes=2, score_bits=4,
                 timeout=3, bound=None):
        if check not in ("engine", "once", "idle"):
            raise ValueError(f"check must be 'engine', 'once' or 'idle', not {check!r}")
        if check == "idle" and bound is None:
            raise ValueError("the 'idle' check needs a bound")
        self.check = check
        self.bound = bound
        self.link = link_class(n_inputs, input_bits, n_classes, score_bits, timeout=timeout)
        self.rx_valid = Signal()
        self.rx_byte = Signal(8)
        self.tx_ready = Signal()
        self.ei_ready = Signal()
        self.eo_valid = Signal()

    @property
    def ports(self):
        """The harness's free inputs."""
        free = [self.rx_valid, self.rx_byte]
        if self.check != "idle":        # "idle" ties the neighbours ready
            free += [self.tx_ready, self.ei_ready, self.eo_valid]
        return free

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = self.link
        n, bits, n_classes = link.n_inputs, link.input_bits, link.n_classes
        rx, tx, ei, eo = link.rx, link.tx, link.engine_i, link.engine_o
        cooperative = self.check == "idle"
        m.d.comb += [
            rx.valid.eq(self.rx_valid), rx.payload.eq(self.rx_byte),
            tx.ready.eq(1 if cooperative else self.tx_ready),
            ei.ready.eq(1 if cooperative else self.ei_ready),
            eo.valid.eq(1 if cooperative else self.eo_valid),
        ]
        # A well-behaved engine: ``last`` on every ``n_classes``-th result beat.
        eo_count = Signal(range(max(n_classes, 2)))
        m.d.comb += eo.payload.last.eq(eo_count == n_classes - 1)
        with m.If(eo.valid & eo.ready):
            m.d.sync += eo_count.eq(Mux(eo_count == n_classes - 1, 0, eo_count + 1))

        take = Signal()
        m.d.comb += take.eq(rx.valid & rx.ready)
        byte = rx.payload
        frame_start = Signal()
        m.d.comb += frame_start.eq(take & link.idle & (byte == protocol.SYNC))

        if self.check == "engine":
            # Reference of the frame being received: bytes after SYNC, saturating at n + 4.
            pos = Signal(range(n + 5))
            in_frame = Signal()
            cmd_ok, len_ok, values_ok, ref_ok = Signal(), Signal(), Signal(), Signal()
            payload = Array(Signal(8, name=f"ref_payload_{k}") for k in range(n))
            ref_crc = protocol.CRC.create()
            m.submodules.ref_crc = ResetInserter(frame_start)(ref_crc)
            m.d.comb += [ref_crc.data.eq(byte),
                         ref_crc.valid.eq(take & ~frame_start & in_frame & (pos < n + 3))]
            with m.If(frame_start):
                m.d.sync += [pos.eq(0), in_frame.eq(1), ref_ok.eq(0), values_ok.eq(1)]
            with m.Elif(link.idle):
                m.d.sync += ref_ok.eq(0)        # the frame's answer is over
            with m.If(take & ~frame_start & in_frame & (pos < n + 4)):
                m.d.sync += pos.eq(pos + 1)
                with m.Switch(pos):
                    with m.Case(0):
                        m.d.sync += cmd_ok.eq(byte == protocol.Command.INFER)
                    with m.Case(1):
                        m.d.sync += len_ok.eq(byte == (n & 0xFF))
                    with m.Case(2):
                        m.d.sync += len_ok.eq(len_ok & (byte == n >> 8))
                    for k in range(n):
                        with m.Case(3 + k):
                            m.d.sync += [payload[k].eq(byte),
                                         values_ok.eq(values_ok & (byte >> bits == 0))]
                    with m.Case(n + 3):
                        m.d.sync += ref_ok.eq(cmd_ok & len_ok & values_ok & (byte == ref_crc.crc))
            fed = Signal(range(n + 1))
            with m.If(frame_start):
                m.d.sync += fed.eq(0)
            with m.Elif(ei.valid & ei.ready):
                m.d.sync += fed.eq(fed + 1)
            with m.If(ei.valid):
                m.d.comb += [
                    Assert(ref_ok),
                    Assert(fed < n),
                    Assert(ei.payload == payload[fed]),
                ]

        if self.check == "once":
            max_len = max(protocol.INFO_BYTES, 1 + n_classes * protocol.score_bytes(link.score_bits),
                          1)
            tpos = Signal(range(max_len + 6))
            tlen = Signal(16)
            seen, answered = Signal(), Signal()
            with m.If(frame_start):
                m.d.sync += [seen.eq(1), answered.eq(0)]
            with m.If(tx.valid & tx.ready):
                m.d.sync += tpos.eq(tpos + 1)
                with m.If(tpos == 2):
                    m.d.sync += tlen[:8].eq(tx.payload)
                with m.If(tpos == 3):
                    m.d.sync += tlen[8:].eq(tx.payload)
                with m.If((tpos >= 4) & (tpos == 4 + tlen)):
                    m.d.sync += [tpos.eq(0), answered.eq(1)]
            with m.If(tx.valid):
                m.d.comb += [
                    Assert(seen & ~answered),
                    Assert(tpos <= max_len + 4),
                ]
                with m.If(tpos == 0):
                    m.d.comb += Assert(tx.payload == protocol.SYNC)

        if self.check == "idle":
            since = Signal(range(self.bound + 1))
            with m.If(take):
                m.d.sync += since.eq(0)
            with m.Elif(since != self.bound):
                m.d.sync += since.eq(since + 1)
            with m.If(since == self.bound):
                m.d.comb += Assert(link.idle)
        return m


class SequencerProof(Elaboratable):
    """Properties of a sequencer of a small plan (see the module docstring).

    Parameters
    ----------
    sequencer_class : type
        :class:`~nmflow.rtl.sequencer.Sequencer` or a broken copy of it.
    plan : :class:`~nmflow.golden.plan.EnginePlan`
    check : str
        ``"rows"`` or ``"idle"``.
    latency, bound : int
        The datapath's latency and the cycles of ``"idle"``.
    """

    def __init__(self, sequencer_class, plan, check, *, latency=2, bound=None):
        if check not in ("rows", "idle"):
            raise ValueError(f"check must be 'rows' or 'idle', not {check!r}")
        if check == "idle" and bound is None:
            raise ValueError("the 'idle' check needs a bound")
        self.check = check
        self.plan = plan
        self.latency = latency
        self.bound = bound
        self.seq = sequencer_class(plan)
        self.i_valid = Signal()
        self.completed = Signal()
        self.scored = Signal()
        self.busy = Signal()

    @property
    def ports(self):
        free = [self.i_valid]
        if self.check == "rows":
            free += [self.completed, self.scored, self.busy]
        return free

    def elaborate(self, platform):
        m = Module()
        m.submodules.seq = seq = self.seq
        plan = self.plan
        mmap = plan.mmap
        rows = mmap.rows
        n_layers = len(mmap.bases)
        ends = [mmap.layer_rows(k).stop for k in range(n_layers)]
        cmd = seq.cmd.payload
        m.d.comb += [seq.i.valid.eq(self.i_valid), seq.i.payload.eq(0)]
        group_done = seq.cmd.valid & cmd.tag.last   # a neuron's last row
        final = cmd.tag.layer == n_layers - 1
        issued, issued_last = group_done & ~final, group_done & final
        completed, scored = Signal(), Signal()
        if self.check == "rows":
            m.d.comb += [completed.eq(self.completed), scored.eq(self.scored),
                         seq.busy.eq(self.busy)]
        else:
            delay, delay_last = Signal(self.latency), Signal(self.latency)
            m.d.sync += [delay.eq((delay << 1) | issued),
                         delay_last.eq((delay_last << 1) | issued_last)]
            m.d.comb += [completed.eq(delay[-1]), scored.eq(delay_last[-1]), seq.busy.eq(0)]
        m.d.comb += [seq.completed.eq(completed), seq.scored.eq(scored)]

        # Neurons issued and not yet completed, hidden and last layer apart; completions never
        # outnumber issues.
        outstanding = Signal(range(plan.max_out + 2))
        outstanding_last = Signal(range(plan.max_out + 2))
        m.d.sync += [outstanding.eq(outstanding + issued - completed),
                     outstanding_last.eq(outstanding_last + issued_last - scored)]
        m.d.comb += [Assume(~completed | (outstanding != 0)),
                     Assume(~scored | (outstanding_last != 0))]

        # Rows issued since the inference began (the next one may begin before the results of
        # the last go out), and inferences whose rows are all issued but not yet emitted.
        row = Signal(range(rows + 2))
        unemitted = Signal(range(4))
        ended = seq.cmd.valid & (row == rows - 1)
        with m.If(ended):
            m.d.sync += row.eq(0)
        with m.Elif(seq.cmd.valid & (row < rows)):
            m.d.sync += row.eq(row + 1)
        m.d.sync += unemitted.eq(unemitted + ended - seq.emit)

        if self.check == "rows":
            with m.If(seq.cmd.valid):
                m.d.comb += Assert(row < rows)
                m.d.comb += Assert(cmd.tag.layer < n_layers)
                for k in range(n_layers):
                    with m.If(cmd.tag.layer == k):
                        m.d.comb += [
                            Assert((cmd.addr >= mmap.bases[k]) & (cmd.addr < ends[k])),
                            Assert((row >= mmap.bases[k]) & (row < ends[k])),
                        ]
                m.d.comb += Assert(cmd.addr == row)
            with m.If(seq.emit):
                m.d.comb += Assert((unemitted != 0) & (outstanding_last == 0))

        if self.check == "idle":
            # Vectors whose last beat was taken and whose results have not been emitted (the
            # next one loads while the current one computes: at most two; with two input banks,
            # while the one before that finishes as well: three), and beats taken of a vector not
            # yet complete.
            most = plan.input_banks + 1
            loaded = Signal(range(most + 2))
            partial = Signal(range(max(plan.n_inputs, 2)))
            last_input = seq.load.valid & (seq.load.payload.index == plan.n_inputs - 1)
            m.d.sync += loaded.eq(loaded + last_input - seq.emit)
            with m.If(seq.load.valid):
                m.d.sync += partial.eq(Mux(last_input, 0, partial + 1))
            m.d.comb += Assert(loaded <= most)
            # Progress: while a complete vector waits or computes, an emit comes within
            # ``bound`` cycles of the last emit or last complete vector.
            count = Signal(range(self.bound + 1))
            with m.If(seq.emit | last_input):
                m.d.sync += count.eq(0)
            with m.Elif((loaded != 0) & (count != self.bound)):
                m.d.sync += count.eq(count + 1)
            m.d.comb += Assert((loaded == 0) | (count != self.bound))
            # Back to idle: in the cycle after an emit, with no other vector taken in whole or
            # in part, the sequencer is idle (results going out, nothing else begun).
            after_emit = Signal()
            m.d.sync += after_emit.eq(seq.emit)
            with m.If(after_emit & (loaded == 0) & (partial == 0)):
                m.d.comb += Assert(seq.idle)
        return m
