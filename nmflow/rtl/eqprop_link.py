"""The EP learning unit behind a UART host link (protocol: :mod:`nmflow.protocol.eqprop`,
specified in docs/eqprop_protocol.md).

:class:`EqPropLinkCore` is the link's state machine with the :class:`~nmflow.rtl.eqprop.EqPropUnit`
inside, on byte streams (the tests drive it directly); :class:`EqPropHostTop` adds the UART
receiver and transmitter and has the pin ports ``rx`` and ``tx`` of a
:class:`~nmflow.boards.top.BoardTop` core.

The link buffers a request's payload (one block RAM of :data:`~nmflow.protocol.eqprop.BUFFER_BYTES` bytes, or ``n0 + 1`` if more) and acts on it only once its CRC and its values have
checked: a refused LOAD writes nothing, a refused TRAIN does not touch the unit. TRAIN and INFER
feed the buffered inputs to the unit ``L`` per beat and wait for its prediction; LOAD copies the
buffer into the weight banks (one row of ``L`` words per write) or the biases through the unit's
host port (binary weights: their pair codes with them); READ streams words from that port into
the reply (READ_C: the pair codes, binary units only); INFER's output states are read
from the free phase's region of the state banks.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.eqprop_layout import EqPropLayout
from ..protocol.eqprop import BUFFER_BYTES, EqCommand, LinkGeometry, encode_info
from ..protocol.framing import BAUD
from .eqprop import EqPropUnit
from .eqprop_memories import HOST_CODES
from .framing import add_framing, check_timeout
from .top import UARTTop, uart_timing

__all__ = ["EqPropLinkCore", "EqPropHostTop", "link_geometry"]


def link_geometry(config, lanes, buffer_bytes=BUFFER_BYTES):
    """The :class:`~nmflow.protocol.eqprop.LinkGeometry` of the link in front of the unit built
    for ``config`` (a :class:`~nmflow.golden.eqprop_fixed.FixedEqPropConfig`) and ``lanes``."""
    layout = EqPropLayout(config.sizes, lanes)
    return LinkGeometry(sizes=config.sizes, lanes=lanes, state_format=config.state,
                        weight_format=config.weight, T=config.T, K=config.K,
                        beta_shift=config.beta_shift, half=config.half,
                        lr_shifts=config.lr_shifts, wdepth=layout.wdepth, bdepth=layout.bdepth,
                        binary=config.weights == "binary", buffer_bytes=buffer_bytes)


class EqPropLinkCore(wiring.Component):
    """Frame parser, payload buffer, command sequencer and reply serializer around an
    :class:`~nmflow.rtl.eqprop.EqPropUnit` (built here with its host port).

    Parameters
    ----------
    config : FixedEqPropConfig
    lanes : int
    timeout : int
        Inter-byte timeout and quiet time, in cycles (>= 1).
    params : dict, optional
        The weights after reset (the twin's ``init_params`` if None).
    buffer_bytes : int
    board : :class:`~nmflow.boards.board.Board`, optional
        The board built for: the unit's memories must fit its block RAM (see ``EqPropUnit``).

    Members
    -------
    rx : In(stream.Signature(8))
        Received bytes (taken at most every other cycle).
    tx : Out(stream.Signature(8))
    idle : Out(1)
        Waiting for a frame, nothing pending.
    receiving : Out(1)
        A frame is being received.
    """

    def __init__(self, config, lanes=4, *, timeout, params=None, buffer_bytes=BUFFER_BYTES,
                 board=None, storage=None):
        check_timeout(timeout)
        self.geometry = link_geometry(config, lanes, buffer_bytes)
        self.unit = EqPropUnit(config, lanes=lanes, params=params, host_port=True, board=board,
                               storage=storage)
        self.config, self.lanes, self.timeout = config, lanes, timeout
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "idle": Out(1), "receiving": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = self.unit
        receiver, sender, start = add_framing(m, self, self.timeout)
        handler = _EqPropRequests(m, self, receiver, sender, start)
        handler.receive()
        handler.header()
        handler.execute()
        return m


class _EqPropRequests:
    """The EqProp link's command handler: the verdicts on each field of a frame, the payload
    buffer, and the execution and reply of a checked request, between the shared frame receiver
    and sender (:mod:`nmflow.rtl.framing`)."""

    def __init__(self, m, core, receiver, sender, start):
        self.m, self.core, self.receiver, self.sender = m, core, receiver, sender
        self.start = start                  # the reply goes out
        g, cfg, L = core.geometry, core.config, core.lanes
        self.g, self.cfg, self.L, self.unit = g, cfg, L, core.unit
        self.lay = core.unit.layout
        self.wb, self.ww, self.sw = g.word_bytes, cfg.weight.width, cfg.state.width
        self.row_bytes = L * self.wb
        self.rb_shift = self.row_bytes.bit_length() - 1     # row_bytes is a power of two
        self.wb_shift = self.wb.bit_length() - 1
        self.info_bytes = encode_info(g.info)
        # -- frame registers ------------------------------------------------------------------
        self.cmd = Signal(8)
        self.is_ = {c: Signal(name=f"is_{c.name.lower()}") for c in EqCommand}
        for c, flag in self.is_.items():
            m.d.comb += flag.eq(self.cmd == c)
        is_ = self.is_
        self.is_load = is_[EqCommand.LOAD_W] | is_[EqCommand.LOAD_B]
        self.is_read = is_[EqCommand.READ_W] | is_[EqCommand.READ_B] | is_[EqCommand.READ_C]
        self.is_bias = is_[EqCommand.LOAD_B] | is_[EqCommand.READ_B]
        self.is_sample = is_[EqCommand.TRAIN] | is_[EqCommand.INFER]
        self.last_count = Signal(16)        # the payload's last byte: length - 1
        self.count = Signal(16)
        self.arg = Signal(32)               # payload bytes 0..3 (start, count or seed)
        self.nrows = Signal(16)             # rows or biases of a LOAD or READ
        self.label = Signal(8)
        self.pred = Signal(8)
        self.reply_byte = Signal(8)         # a body byte, loaded before it is offered
        self.reply_last = Signal()
        self.buf = Memory(shape=8, depth=g.buffer_bytes, init=[])
        m.submodules.buffer = self.buf
        self.bw, self.br = self.buf.write_port(), self.buf.read_port()
        self.ridx = Signal(range(g.buffer_bytes + 1))
        m.d.comb += [self.bw.addr.eq(self.count), self.bw.data.eq(receiver.byte),
                     self.br.addr.eq(self.ridx)]
        self.k = Signal(range(self.row_bytes + 1))      # byte within a row / word
        self.lane = Signal(range(L + 1))
        self.j = Signal(range(max(g.n_classes, L) + 1))
        self.idx = Signal(range(max(len(self.info_bytes), 4) + 1))
        self._host_port()

    def _host_port(self):
        """The unit's host port: addresses, write data from the row buffer, input beats."""
        m, unit, L = self.m, self.unit, self.L
        self.paddr = Signal(unit.p_addr_bits)
        self.psel = Signal(2)
        m.d.comb += [unit.p_addr.eq(self.paddr), unit.p_sel.eq(self.psel),
                     unit.p_seed.eq(self.arg)]
        self.wrow = Signal(8 * self.row_bytes)          # bytes shifted in at the top
        wb = self.wb
        slots = [self.wrow[8 * wb * b:8 * wb * (b + 1)][:self.ww] for b in range(L)]
        for b in range(L):
            m.d.comb += unit.p_wdata[b].eq(Mux(self.is_bias, slots[L - 1], slots[b]) if b == 0
                                           else slots[b])
        self.xrow = Signal(8 * L)
        for b in range(L):
            m.d.comb += unit.i.payload.x[b].eq(self.xrow[8 * b:8 * b + self.sw])
        m.d.comb += [unit.i.payload.label.eq(self.label),
                     unit.i.payload.train.eq(self.is_[EqCommand.TRAIN])]

    # -- receiving ----------------------------------------------------------------------------

    def receive(self):
        """The verdicts on each field, and the payload into the buffer."""
        m, receiver, g, byte = self.m, self.receiver, self.g, self.receiver.byte
        is_ = self.is_
        # the checks of a byte are registered in the cycle it is taken (``incoming``) and read
        # in the cycle of its strobe (the count and the command do not change in between)
        incoming = receiver.incoming
        length = Signal(16)
        m.d.comb += length.eq(Cat(receiver.len_lo, incoming))
        body = Signal(17)
        m.d.comb += body.eq(length - 2)
        value_bad = Signal()
        sw, n0 = self.sw, g.n_inputs
        m.d.comb += value_bad.eq(self.is_sample & (
            ((self.count < n0) & (incoming >> sw != 0) if sw < 8 else Const(0))
            | (is_[EqCommand.TRAIN] & (self.count == n0) & (incoming >= g.n_classes))))
        checks = {"cmd_ok": (incoming >= min(g.commands)) & (incoming <= max(g.commands)),
                  "len_ok": self._length_ok(length, body), "has_payload": length != 0,
                  "value_ok": ~value_bad, "last": self.count == self.last_count}
        last_count, nrows = Signal(16), Signal(16)
        with m.If(receiver.take):
            m.d.sync += [getattr(receiver, name).eq(check) for name, check in checks.items()]
            m.d.sync += [last_count.eq(length - 1),
                         nrows.eq(Mux(is_[EqCommand.LOAD_W], body >> self.rb_shift,
                                      body >> self.wb_shift))]
        # the argument check, registered (see _arg_bad)
        args_bad = Signal()
        m.d.sync += args_bad.eq(self._arg_bad())
        m.d.comb += receiver.args_ok.eq(~args_bad)
        with m.If(receiver.start):
            m.d.sync += [self.count.eq(0), self.arg.eq(0)]
        with m.If(receiver.at_cmd):
            m.d.sync += self.cmd.eq(byte)
        with m.If(receiver.at_len_hi):
            m.d.sync += [self.last_count.eq(last_count), self.nrows.eq(nrows)]
        with m.If(receiver.at_payload):
            m.d.comb += self.bw.en.eq(1)
            with m.Switch(self.count):
                for n in range(4):
                    with m.Case(n):
                        m.d.sync += self.arg[8 * n:8 * n + 8].eq(byte)
            with m.If(self.count == n0):
                m.d.sync += self.label.eq(byte)
            m.d.sync += self.count.eq(self.count + 1)

    def _length_ok(self, length, body):
        """The BAD_LENGTH rule of :meth:`~nmflow.protocol.eqprop.LinkGeometry.length_ok`."""
        m, g = self.m, self.g
        ok = Signal()
        with m.Switch(self.cmd):
            with m.Case(EqCommand.INFO):
                m.d.comb += ok.eq(length == 0)
            with m.Case(EqCommand.READ_W, EqCommand.READ_B, EqCommand.READ_C, EqCommand.SEED):
                m.d.comb += ok.eq(length == 4)
            with m.Case(EqCommand.INFER):
                m.d.comb += ok.eq(length == g.n_inputs)
            with m.Case(EqCommand.TRAIN):
                m.d.comb += ok.eq(length == g.n_inputs + 1)
            for command, shift, most in ((EqCommand.LOAD_W, self.rb_shift, g.rows_per_frame),
                                         (EqCommand.LOAD_B, self.wb_shift, g.biases_per_frame)):
                with m.Case(command):
                    whole = (body[:shift] == 0) if shift else Const(1)
                    m.d.comb += ok.eq((length > 2) & whole & ((body >> shift) <= most))
        return ok

    def _arg_bad(self):
        """The BAD_VALUE rule after the CRC (``LinkGeometry.argument_problem``, SEED of 0), in
        two registered steps: the room left after ``start`` in the memory addressed (``start``
        is complete two bytes before the count of a READ, or from the LOAD's length), then the
        comparisons with the count (the CRC byte comes two cycles after the last argument
        byte at the earliest)."""
        m, g, lay = self.m, self.g, self.lay
        start, rcount = self.arg[:16], self.arg[16:]
        room_w, room_b = Signal(signed(18)), Signal(signed(18))     # depth - start
        m.d.sync += [room_w.eq(lay.wdepth - start), room_b.eq(lay.bdepth - start)]
        bad = Signal()
        with m.Switch(self.cmd):
            with m.Case(EqCommand.LOAD_W):
                m.d.comb += bad.eq(self.nrows > room_w)
            with m.Case(EqCommand.LOAD_B):
                m.d.comb += bad.eq(self.nrows > room_b)
            with m.Case(EqCommand.READ_W, EqCommand.READ_C):
                m.d.comb += bad.eq((rcount == 0) | (rcount > g.rows_per_frame)
                                   | (rcount > room_w))
            with m.Case(EqCommand.READ_B):
                m.d.comb += bad.eq((rcount == 0) | (rcount > g.biases_per_frame)
                                   | (rcount > room_b))
            with m.Case(EqCommand.SEED):
                m.d.comb += bad.eq(self.arg == 0)
        return bad

    # -- replying -----------------------------------------------------------------------------

    def header(self):
        """The reply's command (the request's with bit 7 set) and length."""
        m, sender, is_ = self.m, self.sender, self.is_
        length = Signal(16)
        with m.If(is_[EqCommand.INFO]):
            m.d.comb += length.eq(len(self.info_bytes))
        with m.Elif(is_[EqCommand.READ_W] | is_[EqCommand.READ_C]):
            m.d.comb += length.eq(self.nrows << self.rb_shift)
        with m.Elif(is_[EqCommand.READ_B]):
            m.d.comb += length.eq(self.nrows << self.wb_shift)
        with m.Elif(is_[EqCommand.TRAIN]):
            m.d.comb += length.eq(1)
        with m.Elif(is_[EqCommand.INFER]):
            m.d.comb += length.eq(1 + self.g.n_classes)
        # registered: the sender needs LEN two header bytes after the reply starts
        length_r = Signal(16)
        m.d.sync += length_r.eq(length)
        m.d.comb += [sender.cmd.eq(self.cmd | 0x80), sender.length.eq(length_r),
                     sender.empty.eq(self.is_load | is_[EqCommand.SEED])]

    def send(self, data, last, then):
        """Offer ``data`` as a body byte (``last`` ends the body); ``then()`` once taken."""
        self.sender.offer(self.m, data, last, then)

    def execute(self):
        m, receiver, unit, is_ = self.m, self.receiver, self.unit, self.is_
        # the host port's write strobes are registers (set on entering the cycle they write
        # in), not decoded from the request's state or the receiver's verdict: they reach the
        # unit's memories and its LFSR across the die (the ULX3S build's longest path at 16
        # lanes ran from this state machine into the write enables of the code banks)
        self.p_we, seed_we = Signal(name="p_we"), Signal(name="p_seed_we")
        m.d.comb += [unit.p_we.eq(self.p_we), unit.p_seed_we.eq(seed_we)]
        m.d.sync += seed_we.eq(0)
        with m.FSM(name="eqprop_request"):
            with m.State("IDLE"):
                with m.If(receiver.accepted):
                    m.d.sync += [self.idx.eq(0), self.k.eq(0), self.lane.eq(0),
                                 self.paddr.eq(self.arg[:16]),
                                 self.psel.eq(Mux(is_[EqCommand.READ_C], HOST_CODES,
                                                  self.is_bias))]
                    with m.If(self.is_read):
                        m.d.sync += self.nrows.eq(self.arg[16:])
                    with m.If(is_[EqCommand.SEED]):
                        m.d.sync += seed_we.eq(1)       # the seed (``arg``) is held
                    with m.If(self.is_load):
                        m.d.sync += self.ridx.eq(2)
                        m.next = "LD_READ"
                    with m.Elif(self.is_sample):
                        m.d.sync += [self.ridx.eq(0), self.count.eq(0)]
                        m.next = "F_READ"
                    with m.Else():
                        self._reply_body_next()
            self._load()
            self._sample()
            self._bodies()

    def _reply_body_next(self):
        """Start the reply and go to the state that offers its body (none for LOAD and SEED)."""
        m, is_ = self.m, self.is_
        m.d.comb += self.start.eq(1)
        m.next = "IDLE"                     # LOAD and SEED: the reply has no body
        for flag, state in ((is_[EqCommand.INFO], "INFO_BODY"), (self.is_sample, "PRED"),
                            (self.is_read, "RD_WAIT")):
            with m.If(flag):                # one command: the flags exclude each other
                m.next = state

    def _gather(self, read, take, register, end, then, entering=()):
        """States ``read`` and ``take``: shift payload bytes from the buffer into the top of
        ``register``, one every other cycle, until ``end`` (on ``k``); then state ``then``
        (with the statements ``entering``)."""
        m, br = self.m, self.br
        with m.State(read):
            m.next = take
        with m.State(take):
            m.d.sync += [register.eq(Cat(register[8:], br.data)), self.ridx.eq(self.ridx + 1),
                         self.k.eq(self.k + 1)]
            with m.If(end):
                m.d.sync += [self.k.eq(0), *entering]
                m.next = then
            with m.Else():
                m.next = read

    def _load(self):
        """LOAD: buffer -> weight rows / biases, through the unit's host port."""
        m = self.m
        self._gather("LD_READ", "LD_TAKE", self.wrow,
                     self.k == Mux(self.is_bias, self.wb, self.row_bytes) - 1, "LD_WRITE",
                     entering=[self.p_we.eq(1)])
        with m.State("LD_WRITE"):
            m.d.sync += self.p_we.eq(0)             # high in this state only
            m.d.sync += [self.paddr.eq(self.paddr + 1), self.nrows.eq(self.nrows - 1)]
            with m.If(self.nrows == 1):
                self._reply_body_next()
            with m.Else():
                m.next = "LD_READ"

    def _sample(self):
        """TRAIN / INFER: buffer -> input beats -> prediction."""
        m, unit = self.m, self.unit
        # the beat's valid is a register, set on entering F_BEAT and cleared as the unit takes
        # the beat; the state moves on in the cycle after (the unit's ready reaches only the
        # register, not the request's state machine)
        beat = Signal()
        m.d.comb += unit.i.valid.eq(beat)
        self._gather("F_READ", "F_TAKE", self.xrow, self.k == self.L - 1, "F_BEAT",
                     entering=[beat.eq(1)])
        with m.State("F_BEAT"):
            with m.If(unit.i.ready):
                m.d.sync += beat.eq(0)
            with m.If(~beat):
                with m.If(self.ridx == self.g.n_inputs):
                    m.next = "F_WAIT"
                with m.Else():
                    m.next = "F_READ"
        with m.State("F_WAIT"):
            m.d.comb += unit.o.ready.eq(1)
            with m.If(unit.o.valid):
                m.d.sync += self.pred.eq(unit.o.payload.label)
                self._reply_body_next()

    def _bodies(self):
        """The reply bodies: INFO's bytes, the prediction and INFER's output states, READ's
        words (weights sign-extended to whole bytes, biases in lane 0)."""
        m, unit, L, lay, nN = self.m, self.unit, self.L, self.lay, self.g.n_classes
        is_, wb, lg = self.is_, self.wb, L.bit_length() - 1
        with m.State("PRED"):
            def after_pred():
                with m.If(is_[EqCommand.INFER]):
                    m.d.sync += [self.j.eq(0), self.paddr.eq(lay.region_base(0) + lay.soff[lay.N]),
                                 self.psel.eq(2)]
                    m.next = "ST_WAIT"
                with m.Else():
                    m.next = "IDLE"
            self.send(self.pred, is_[EqCommand.TRAIN], after_pred)

        def after_info():
            m.d.sync += self.idx.eq(self.idx + 1)
            with m.If(self.reply_last):
                m.next = "IDLE"
        self._load_and_send("INFO_BODY", "INFO_SEND",
                            Array(Const(v, 8) for v in self.info_bytes)[self.idx],
                            self.idx == len(self.info_bytes) - 1, after_info)
        # the unit's read data: a row's address is set on entering *_WAIT and held; its words
        # are in the host port's registers from *_LOAD on (the weight banks' registered once
        # more, the other memories' by their read ports), and its bytes are loaded from them
        rdata = unit.p_rdata
        with m.State("ST_WAIT"):
            m.next = "ST_WAIT2"
        with m.State("ST_WAIT2"):
            m.next = "ST_LOAD"

        state_row_end = Signal(name="reply_state_row_end")     # registered with the byte

        def after_state():
            m.d.sync += self.j.eq(self.j + 1)
            with m.If(self.reply_last):
                m.next = "IDLE"
            with m.Elif(state_row_end):
                m.d.sync += self.paddr.eq(self.paddr + 1)
                m.next = "ST_WAIT"
        state_byte = Array(rdata[b][:8] for b in range(L))[self.j[:lg]] if lg \
            else rdata[0][:8]
        self._load_and_send("ST_LOAD", "ST_SEND", state_byte, self.j == nN - 1, after_state,
                            [state_row_end.eq(self.j[:lg] == L - 1 if lg else 1)])
        with m.State("RD_WAIT"):
            m.next = "RD_WAIT2"
        with m.State("RD_WAIT2"):
            m.next = "RD_LOAD"
        word_end = self.k == wb - 1
        row_end = self.is_bias | (self.lane == L - 1)
        # both registered with the byte
        rd_word_end, rd_row_end = Signal(name="reply_word_end"), Signal(name="reply_row_end")

        def after_word_byte():
            m.d.sync += self.k.eq(self.k + 1)
            with m.If(rd_word_end):
                m.d.sync += [self.k.eq(0), self.lane.eq(self.lane + 1)]
                with m.If(rd_row_end):
                    m.d.sync += [self.lane.eq(0), self.paddr.eq(self.paddr + 1),
                                 self.nrows.eq(self.nrows - 1)]
                    with m.If(self.reply_last):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "RD_WAIT"
        words = [rdata[b][:self.ww].as_signed() for b in range(L)]
        word = Signal(8 * wb)
        m.d.comb += word.eq(Mux(self.is_bias, words[0], Array(words)[self.lane]))
        self._load_and_send("RD_LOAD", "RD_SEND",
                            word.word_select(self.k[:max(self.wb_shift, 1)], 8) if wb > 1
                            else word, word_end & row_end & (self.nrows == 1), after_word_byte,
                            [rd_word_end.eq(word_end), rd_row_end.eq(row_end)])

    def _load_and_send(self, load, send, data, last, then, flags=()):
        """States ``load`` (register the body byte ``data``, ``last`` and the statements
        ``flags``, which register what ``then`` tests) and ``send`` (offer them; once taken,
        ``then()``, else back to ``load`` for the next byte): the byte's multiplexers end in a
        register, not in the sender's CRC and shift register, and what ``then()`` does next
        is decided from registers (the UART's ``ready`` is its only late input; the counters'
        comparisons after it were the ULX3S build's longest path at 16 lanes, routed between
        the link and the transmitter at the pin)."""
        m = self.m
        with m.State(load):
            m.d.sync += [self.reply_byte.eq(data), self.reply_last.eq(last), *flags]
            m.next = send
        with m.State(send):
            def taken():
                m.next = load
                then()
            self.send(self.reply_byte, self.reply_last, taken)


class EqPropHostTop(UARTTop):
    """The EP unit reachable over a UART: ``UARTRx -> EqPropLinkCore -> UARTTx`` (the core in a
    :class:`~nmflow.rtl.top.UARTTop`).

    ``EqPropHostTop(config, lanes=4, clk_freq=..., baud=BAUD, timeout=0.02, params=None,
    board=None, storage=None)``; ``clk_freq`` is the ``sync`` clock (a
    :class:`~nmflow.boards.top.BoardTop` factory passes the board's), ``board`` the board built
    for and ``storage`` where binary hidden weights live (as for the unit).
    Members: ``rx: In(1)``, ``tx: Out(1)``, ``idle``, ``receiving: Out(1)``.
    """

    def __init__(self, config, *, lanes=4, clk_freq, baud=BAUD, timeout=0.02, params=None,
                 board=None, storage=None):
        divisor, self.timeout_cycles = uart_timing(clk_freq, baud, timeout)   # NmflowError
        super().__init__(EqPropLinkCore(config, lanes, timeout=self.timeout_cycles,
                                        params=params, board=board, storage=storage), divisor)

    @property
    def geometry(self):
        return self.core.geometry
