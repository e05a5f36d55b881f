"""The EP learning unit behind a UART host link (protocol: :mod:`nmflow.golden.eqprop_protocol`).

:class:`EqPropLinkCore` is the link's state machine with the :class:`~nmflow.rtl.eqprop.EqPropUnit`
inside, on byte streams (the tests drive it directly); :class:`EqPropHostTop` adds the UART
receiver and transmitter and has the pin ports ``rx`` and ``tx`` of a
:class:`~nmflow.boards.top.BoardTop` core.

The link buffers a request's payload (one block RAM of :data:`~nmflow.golden.eqprop_protocol.
BUFFER_BYTES` bytes, or ``n0 + 1`` if more) and acts on it only once its CRC and its values have
checked: a refused LOAD writes nothing, a refused TRAIN does not touch the unit. TRAIN and INFER
feed the buffered inputs to the unit ``L`` per beat and wait for its prediction; LOAD copies the
buffer into the weight banks (one row of ``L`` words per write) or the biases through the unit's
host port; READ streams words from that port into the reply; INFER's output states are read
from the free phase's region of the state banks.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.eqprop_protocol import BUFFER_BYTES, EqCommand, LinkGeometry, encode_info
from ..errors import NmflowError
from ..protocol import CRC, SYNC, ErrorCode
from .eqprop import EqPropUnit
from .top import MIN_TIMEOUT_CHARS, uart_divisor
from .uart import UARTRx, UARTTx

__all__ = ["EqPropLinkCore", "EqPropHostTop"]


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
                 board=None):
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
            raise NmflowError(f"timeout must be an integer number of cycles >= 1, not "
                              f"{timeout!r}")
        self.geometry = LinkGeometry(config, lanes, buffer_bytes)
        self.unit = EqPropUnit(config, lanes=lanes, params=params, host_port=True, board=board)
        self.config, self.lanes, self.timeout = config, lanes, timeout
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "idle": Out(1), "receiving": Out(1)})

    def elaborate(self, platform):
        m = Module()
        g, cfg, L = self.geometry, self.config, self.lanes
        lay = g.layout
        m.submodules.unit = unit = self.unit
        rx, tx = self.rx, self.tx
        lg = L.bit_length() - 1
        wb, ww, sw = g.word_bytes, cfg.weight.width, cfg.state.width
        n0, nN = g.n_inputs, g.n_classes
        row_bytes = L * wb
        rb_shift = row_bytes.bit_length() - 1          # row_bytes is a power of two
        wb_shift = wb.bit_length() - 1
        info_bytes = encode_info(g.info)

        # -- CRC of the frame in flight (cleared through its flip-flops' reset) --------------
        crc_clear = Signal()
        crc_unit = CRC.create()
        m.submodules.crc = ResetInserter(crc_clear)(crc_unit)
        crc = crc_unit.crc
        crc_in = Signal(8)
        m.d.comb += crc_unit.data.eq(crc_in)

        # -- received bytes and the inter-byte timer ------------------------------------------
        byte, got = Signal(8), Signal()
        take = Signal()
        m.d.comb += [rx.ready.eq(~got), take.eq(rx.valid & rx.ready)]
        m.d.sync += got.eq(take)
        with m.If(take):
            m.d.sync += byte.eq(rx.payload)
        idle_time = Signal(range(self.timeout + 1))
        quiet = Signal()
        with m.If(take):
            m.d.sync += [idle_time.eq(0), quiet.eq(0)]
        with m.Elif(~quiet):
            m.d.sync += [idle_time.eq(idle_time + 1), quiet.eq(idle_time == self.timeout - 1)]

        # -- frame registers ------------------------------------------------------------------
        cmd = Signal(8)
        is_ = {c: Signal(name=f"is_{c.name.lower()}") for c in EqCommand}
        for c, flag in is_.items():
            m.d.comb += flag.eq(cmd == c)
        is_load = is_[EqCommand.LOAD_W] | is_[EqCommand.LOAD_B]
        is_read = is_[EqCommand.READ_W] | is_[EqCommand.READ_B]
        is_bias = is_[EqCommand.LOAD_B] | is_[EqCommand.READ_B]
        is_sample = is_[EqCommand.TRAIN] | is_[EqCommand.INFER]
        len_lo = Signal(8)
        length = Signal(16)
        count = Signal(16)
        arg = Signal(32)                    # payload bytes 0..3 (start, count or seed)
        nrows = Signal(16)                  # rows or biases of a LOAD or READ
        label = Signal(8)
        error = Signal()
        code = Signal(8, init=int(ErrorCode.TIMEOUT))
        dirty = Signal()
        pred = Signal(8)

        buf = Memory(shape=8, depth=g.buffer_bytes, init=[])
        m.submodules.buffer = buf
        bw, br = buf.write_port(), buf.read_port()
        ridx = Signal(range(g.buffer_bytes + 1))
        m.d.comb += [bw.addr.eq(count), bw.data.eq(byte), br.addr.eq(ridx)]

        # -- unit host port ---------------------------------------------------------------------
        paddr = Signal(unit.p_addr_bits)
        psel = Signal(2)
        m.d.comb += [unit.p_addr.eq(paddr), unit.p_sel.eq(psel), unit.p_seed.eq(arg)]
        wrow = Signal(8 * row_bytes)        # bytes shifted in at the top
        slots = [wrow[8 * wb * b:8 * wb * (b + 1)][:ww] for b in range(L)]
        for b in range(L):
            m.d.comb += unit.p_wdata[b].eq(Mux(is_bias, slots[L - 1], slots[b]) if b == 0
                                           else slots[b])
        xrow = Signal(8 * L)
        for b in range(L):
            m.d.comb += unit.i.payload.x[b].eq(xrow[8 * b:8 * b + sw])
        m.d.comb += [unit.i.payload.label.eq(label), unit.i.payload.train.eq(is_[EqCommand.TRAIN])]

        k = Signal(range(row_bytes + 1))    # byte within a row / word, lane
        lane = Signal(range(L + 1))
        j = Signal(range(max(nN, L) + 1))

        # -- length rule (LEN_HI) and value rules ------------------------------------------------
        len16 = Signal(16)
        m.d.comb += len16.eq(Cat(len_lo, byte))
        body = Signal(17)
        m.d.comb += body.eq(len16 - 2)
        len_ok = Signal()
        with m.Switch(cmd):
            with m.Case(EqCommand.INFO):
                m.d.comb += len_ok.eq(len16 == 0)
            with m.Case(EqCommand.READ_W, EqCommand.READ_B, EqCommand.SEED):
                m.d.comb += len_ok.eq(len16 == 4)
            with m.Case(EqCommand.INFER):
                m.d.comb += len_ok.eq(len16 == n0)
            with m.Case(EqCommand.TRAIN):
                m.d.comb += len_ok.eq(len16 == n0 + 1)
            with m.Case(EqCommand.LOAD_W):
                m.d.comb += len_ok.eq((len16 > 2) & (body[:rb_shift] == 0)
                                      & ((body >> rb_shift) <= g.rows_per_frame)
                                      if rb_shift else
                                      (len16 > 2) & (body <= g.rows_per_frame))
            with m.Case(EqCommand.LOAD_B):
                m.d.comb += len_ok.eq((len16 > 2) & (body[:wb_shift] == 0)
                                      & ((body >> wb_shift) <= g.biases_per_frame)
                                      if wb_shift else
                                      (len16 > 2) & (body <= g.biases_per_frame))
        value_bad = Signal()
        m.d.comb += value_bad.eq(is_sample & (
            ((count < n0) & (byte >> sw != 0) if sw < 8 else Const(0))
            | (is_[EqCommand.TRAIN] & (count == n0) & (byte >= nN))))
        start = arg[:16]
        rcount = arg[16:]
        arg_bad = Signal()
        with m.Switch(cmd):
            with m.Case(EqCommand.LOAD_W):
                m.d.comb += arg_bad.eq(start + nrows > lay.wdepth)
            with m.Case(EqCommand.LOAD_B):
                m.d.comb += arg_bad.eq(start + nrows > lay.bdepth)
            with m.Case(EqCommand.READ_W):
                m.d.comb += arg_bad.eq((rcount == 0) | (rcount > g.rows_per_frame)
                                       | (start + rcount > lay.wdepth))
            with m.Case(EqCommand.READ_B):
                m.d.comb += arg_bad.eq((rcount == 0) | (rcount > g.biases_per_frame)
                                       | (start + rcount > lay.bdepth))
            with m.Case(EqCommand.SEED):
                m.d.comb += arg_bad.eq(arg == 0)

        # -- reply header ------------------------------------------------------------------------
        reply_len = Signal(16)
        with m.If(error):
            m.d.comb += reply_len.eq(1)
        with m.Elif(is_[EqCommand.INFO]):
            m.d.comb += reply_len.eq(len(info_bytes))
        with m.Elif(is_[EqCommand.READ_W]):
            m.d.comb += reply_len.eq(nrows << rb_shift)
        with m.Elif(is_[EqCommand.READ_B]):
            m.d.comb += reply_len.eq(nrows << wb_shift)
        with m.Elif(is_[EqCommand.TRAIN]):
            m.d.comb += reply_len.eq(1)
        with m.Elif(is_[EqCommand.INFER]):
            m.d.comb += reply_len.eq(1 + nN)
        reply_cmd = Mux(error, 0xFF, cmd | 0x80)
        header = Array([Const(SYNC, 8), reply_cmd, reply_len[:8], reply_len[8:]])
        info_rom = Array(Const(v, 8) for v in info_bytes)
        idx = Signal(range(max(len(info_bytes), 4) + 1))

        # words read back: weights sign-extended to wb bytes, biases in lane 0
        rd_words = [unit.p_rdata[b][:ww].as_signed() for b in range(L)]
        rd_word = Signal(8 * wb)
        m.d.comb += rd_word.eq(Mux(is_bias, rd_words[0], Array(rd_words)[lane]))
        st_byte = Signal(8)
        m.d.comb += st_byte.eq(Array(unit.p_rdata[b][:8] for b in range(L))[j[:lg]] if lg
                               else unit.p_rdata[0][:8])
        out_base = lay.region_base(0) + lay.soff[lay.N]

        def fail(error_code):
            m.d.sync += [code.eq(int(error_code)), error.eq(1)]
            m.next = "DRAIN"

        def receive(then):
            m.d.comb += [self.receiving.eq(1), crc_in.eq(byte)]
            with m.If(got):
                m.d.comb += crc_unit.valid.eq(1)
                then()
            with m.Elif(quiet):
                fail(ErrorCode.TIMEOUT)

        def busy():
            with m.If(got):
                m.d.sync += dirty.eq(1)

        def send(value, then, covered=True):
            m.d.comb += [tx.payload.eq(value), tx.valid.eq(1)]
            if covered:
                m.d.comb += crc_in.eq(value)
            busy()
            with m.If(tx.ready):
                if covered:
                    m.d.comb += crc_unit.valid.eq(1)
                then()

        with m.FSM(name="eqlink"):
            with m.State("HUNT"):
                m.d.comb += self.idle.eq(1)
                with m.If(got & (byte == SYNC)):
                    m.d.comb += crc_clear.eq(1)
                    m.d.sync += [count.eq(0), arg.eq(0)]
                    m.next = "CMD"

            with m.State("CMD"):
                def on_cmd():
                    m.d.sync += cmd.eq(byte)
                    with m.If((byte >= min(EqCommand)) & (byte <= max(EqCommand))):
                        m.next = "LEN_LO"
                    with m.Else():
                        fail(ErrorCode.BAD_COMMAND)
                receive(on_cmd)

            with m.State("LEN_LO"):
                def on_len_lo():
                    m.d.sync += len_lo.eq(byte)
                    m.next = "LEN_HI"
                receive(on_len_lo)

            with m.State("LEN_HI"):
                def on_len_hi():
                    m.d.sync += [length.eq(len16),
                                 nrows.eq(Mux(is_[EqCommand.LOAD_W], body >> rb_shift,
                                              body >> wb_shift))]
                    with m.If(~len_ok):
                        fail(ErrorCode.BAD_LENGTH)
                    with m.Elif(len16 == 0):
                        m.next = "CHECK"
                    with m.Else():
                        m.next = "PAYLOAD"
                receive(on_len_hi)

            with m.State("PAYLOAD"):
                def on_payload():
                    with m.If(value_bad):
                        fail(ErrorCode.BAD_VALUE)
                    with m.Else():
                        m.d.comb += bw.en.eq(1)
                        with m.Switch(count):
                            for n in range(4):
                                with m.Case(n):
                                    m.d.sync += arg[8 * n:8 * n + 8].eq(byte)
                        with m.If(count == n0):
                            m.d.sync += label.eq(byte)
                        m.d.sync += count.eq(count + 1)
                        with m.If(count == length - 1):
                            m.next = "CHECK"
                receive(on_payload)

            with m.State("CHECK"):
                def on_check():
                    with m.If(byte != crc):
                        fail(ErrorCode.BAD_CHECKSUM)
                    with m.Elif(arg_bad):
                        fail(ErrorCode.BAD_VALUE)
                    with m.Else():
                        m.d.sync += [idx.eq(0), k.eq(0), lane.eq(0), paddr.eq(start),
                                     psel.eq(is_bias)]
                        with m.If(is_read):
                            m.d.sync += nrows.eq(rcount)
                        with m.If(is_[EqCommand.SEED]):
                            m.d.comb += unit.p_seed_we.eq(1)
                        with m.If(is_load):
                            m.d.sync += ridx.eq(2)
                            m.next = "LD_READ"
                        with m.Elif(is_sample):
                            m.d.sync += [ridx.eq(0), count.eq(0)]
                            m.next = "F_READ"
                        with m.Else():
                            m.next = "HEAD"
                receive(on_check)

            # LOAD: buffer -> weight rows / biases
            with m.State("LD_READ"):
                busy()
                m.next = "LD_TAKE"
            with m.State("LD_TAKE"):
                busy()
                m.d.sync += [wrow.eq(Cat(wrow[8:], br.data)), ridx.eq(ridx + 1), k.eq(k + 1)]
                with m.If(k == Mux(is_bias, wb, row_bytes) - 1):
                    m.d.sync += k.eq(0)
                    m.next = "LD_WRITE"
                with m.Else():
                    m.next = "LD_READ"
            with m.State("LD_WRITE"):
                busy()
                m.d.comb += unit.p_we.eq(1)
                m.d.sync += [paddr.eq(paddr + 1), nrows.eq(nrows - 1)]
                with m.If(nrows == 1):
                    m.next = "HEAD"
                with m.Else():
                    m.next = "LD_READ"

            # TRAIN / INFER: buffer -> input beats -> prediction
            with m.State("F_READ"):
                busy()
                m.next = "F_TAKE"
            with m.State("F_TAKE"):
                busy()
                m.d.sync += [xrow.eq(Cat(xrow[8:], br.data)), ridx.eq(ridx + 1), k.eq(k + 1)]
                with m.If(k == L - 1):
                    m.d.sync += k.eq(0)
                    m.next = "F_BEAT"
                with m.Else():
                    m.next = "F_READ"
            with m.State("F_BEAT"):
                busy()
                m.d.comb += unit.i.valid.eq(1)
                with m.If(unit.i.ready):
                    with m.If(ridx == n0):
                        m.next = "F_WAIT"
                    with m.Else():
                        m.next = "F_READ"
            with m.State("F_WAIT"):
                busy()
                m.d.comb += unit.o.ready.eq(1)
                with m.If(unit.o.valid):
                    m.d.sync += pred.eq(unit.o.payload.label)
                    m.next = "HEAD"

            with m.State("DRAIN"):
                with m.If(quiet):
                    m.d.sync += [dirty.eq(0), idx.eq(0)]
                    with m.If(error):
                        m.next = "HEAD"
                    with m.Else():
                        m.next = "HUNT"

            with m.State("HEAD"):
                def after_head():
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 0):
                        m.d.comb += [crc_clear.eq(1), crc_unit.valid.eq(0)]
                    with m.If(idx == 3):
                        m.d.sync += idx.eq(0)
                        with m.If(error):
                            m.next = "ERR_BODY"
                        with m.Elif(is_[EqCommand.INFO]):
                            m.next = "INFO_BODY"
                        with m.Elif(is_sample):
                            m.next = "PRED"
                        with m.Elif(is_read):
                            m.next = "RD_WAIT"
                        with m.Else():
                            m.next = "CRC"
                send(header[idx], after_head)

            with m.State("ERR_BODY"):
                send(code, lambda: setattr(m, "next", "CRC"))

            with m.State("INFO_BODY"):
                def after_info():
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == len(info_bytes) - 1):
                        m.next = "CRC"
                send(info_rom[idx], after_info)

            with m.State("PRED"):
                def after_pred():
                    with m.If(is_[EqCommand.INFER]):
                        m.d.sync += [j.eq(0), paddr.eq(out_base), psel.eq(2)]
                        m.next = "ST_WAIT"
                    with m.Else():
                        m.next = "CRC"
                send(pred, after_pred)

            with m.State("ST_WAIT"):
                busy()
                m.next = "ST_SEND"
            with m.State("ST_SEND"):
                def after_state():
                    m.d.sync += j.eq(j + 1)
                    with m.If(j == nN - 1):
                        m.next = "CRC"
                    with m.Elif(j[:lg] == L - 1 if lg else Const(1)):
                        m.d.sync += paddr.eq(paddr + 1)
                        m.next = "ST_WAIT"
                send(st_byte, after_state)

            with m.State("RD_WAIT"):
                busy()
                m.next = "RD_SEND"
            with m.State("RD_SEND"):
                def after_word_byte():
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == wb - 1):
                        m.d.sync += [k.eq(0), lane.eq(lane + 1)]
                        with m.If(is_bias | (lane == L - 1)):
                            m.d.sync += [lane.eq(0), paddr.eq(paddr + 1),
                                         nrows.eq(nrows - 1)]
                            with m.If(nrows == 1):
                                m.next = "CRC"
                            with m.Else():
                                m.next = "RD_WAIT"
                send(rd_word.word_select(k[:max(wb_shift, 1)], 8) if wb > 1 else rd_word,
                     after_word_byte)

            with m.State("CRC"):
                def after_crc():
                    m.d.sync += [error.eq(0), dirty.eq(0)]
                    with m.If(dirty | got | take):
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "HUNT"
                send(crc, after_crc, covered=False)
        return m


class EqPropHostTop(wiring.Component):
    """The EP unit reachable over a UART: ``UARTRx -> EqPropLinkCore -> UARTTx``.

    ``EqPropHostTop(config, lanes=4, clk_freq=..., baud=115200, timeout=0.02, params=None,
    board=None)``; ``clk_freq`` is the ``sync`` clock (a :class:`~nmflow.boards.top.BoardTop`
    factory passes the board's), ``board`` the board built for (as for the link core).
    Members: ``rx: In(1)``, ``tx: Out(1)``, ``idle``, ``receiving: Out(1)``.
    """

    def __init__(self, config, *, lanes=4, clk_freq, baud=115200, timeout=0.02, params=None,
                 board=None):
        try:
            self.divisor = uart_divisor(clk_freq, baud)
        except ValueError as error:
            raise NmflowError(str(error)) from None
        cycles = round(timeout * clk_freq)
        minimum = MIN_TIMEOUT_CHARS * 10 * self.divisor
        if cycles < minimum:
            raise NmflowError(f"timeout must be at least {MIN_TIMEOUT_CHARS} character times "
                              f"({minimum / clk_freq:g} s), not {timeout!r}")
        self.core = EqPropLinkCore(config, lanes, timeout=cycles, params=params, board=board)
        self.timeout_cycles = cycles
        super().__init__({"rx": In(1), "tx": Out(1), "idle": Out(1), "receiving": Out(1)})

    @property
    def geometry(self):
        return self.core.geometry

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.uart_rx = urx = UARTRx(self.divisor)
        m.submodules.uart_tx = utx = UARTTx(self.divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        wiring.connect(m, urx.o, core.rx)
        wiring.connect(m, core.tx, utx.i)
        m.d.comb += [self.idle.eq(core.idle), self.receiving.eq(core.receiving)]
        return m
