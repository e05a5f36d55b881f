"""The host link: a framed request/reply protocol between UART byte streams and the engine.

:class:`HostLink` implements, byte for byte, the protocol specified in docs/contracts.md, section
5 (:mod:`nmflow.protocol`: frames ``A5 | CMD | LEN (u16 LE) | PAYLOAD | CRC-8``, commands INFO
and INFER, the optional ERRORS, UPDATE, LOAD and READ, ERROR replies, resynchronisation and the
inter-byte timeout). It takes its commands, reply commands and error codes from the enumerations
there and its CRC from ``protocol.CRC.create()``;
:class:`nmflow.protocol.LinkModel` is the plain-Python twin the tests compare it with.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .. import protocol
from ..protocol import Command, ErrorCode, MetaplasticCommand, MetaplasticReply, Reply
from ..golden.injector import max_rate_bits
from .engine import result_layout
from .injector import error_config_layout
from .metaplastic import OP_LOAD, OP_UPDATE, beat_layout
from .weights import PairReadSignature
from ..golden.plan import index_bits
from .onehot import OneHotFSM

__all__ = ["HostLink", "check_parameters"]


def _check_int(name, value, low, high, rule=None):
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        rule = rule or f"an integer between {low} and {high}"
        raise ValueError(f"{name} must be {rule}, not {value!r}")


def check_parameters(n_inputs, input_bits, n_classes, score_bits, *, timeout):
    """Raise :class:`ValueError` naming the first parameter :class:`HostLink` cannot take."""
    _check_int("n_inputs", n_inputs, 1, protocol.MAX_INPUTS)
    _check_int("input_bits", input_bits, 1, 8)
    _check_int("n_classes", n_classes, 1, protocol.MAX_CLASSES)
    _check_int("score_bits", score_bits, 1, protocol.MAX_SCORE_BITS)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
        raise ValueError(f"timeout must be an integer number of cycles >= 1, not {timeout!r}")


class HostLink(wiring.Component):
    """Frame parser, input buffer and reply serializer between a UART and the engine.

    Implements the protocol specified in :mod:`nmflow.protocol` exactly.

    Parameters
    ----------
    n_inputs : int
        Input values per inference, 1 to 65535.
    input_bits : int
        Width of an input value, 1 to 8.
    n_classes : int
        Classes (scores per inference), 1 to 256.
    score_bits : int
        Width of a signed score, 1 to 64.
    timeout : int
        Inter-byte timeout inside a frame, and the quiet time that ends a discarded burst, in clock
        cycles (at least 1; use a few character times, ``>= 20 * divisor``).
    rate_bits : int or None
        The engine's read-error injector's ``rate_bits``: the link then accepts ERRORS requests
        and has the ``errors`` output. ``None`` (the default): no injector, ERRORS is refused with
        BAD_COMMAND and the link is built exactly as without this option.
    metaplastic : :class:`~nmflow.protocol.MetaplasticInfo` or None
        The metaplastic update unit's sizes: the link then reports protocol version 3 (INFO with
        the unit's tail), accepts UPDATE, LOAD and READ requests and has the ``meta_i``,
        ``meta_o`` and ``pairs`` ports. ``None`` (the default): no unit, UPDATE, LOAD and READ are
        refused with BAD_COMMAND and the link is built exactly as without this option.
    buffer : ``"block"`` or ``"logic"``
        Where the INFER input buffer lives: block RAM (the default) or flip-flops (when the block
        RAMs are all taken, as on the iCE40UP5K with the metaplastic unit).

    Members
    -------
    rx : In(stream.Signature(8))
        Bytes from the UART receiver. Ready except in the cycle after a byte is taken (each byte
        is checked on arrival and acted on a cycle later): one byte per two cycles at most,
        far above a UART's rate.
    tx : Out(stream.Signature(8))
        Bytes to the UART transmitter.
    engine_i : Out(stream.Signature(unsigned(input_bits)))
        Input values to the engine, ``n_inputs`` beats per valid INFER request.
    engine_o : In(stream.Signature(result_layout(n_classes, score_bits)))
        The engine's results, consumed as they are serialized.
    idle : Out(1)
        High while the link waits for a frame and has nothing pending (for simulation bridges and
        status LEDs).
    receiving : Out(1)
        High while a frame is being received (after its SYNC, before its CRC).
    errors : Out(stream.Signature(error_config_layout(rate_bits), always_ready=True)), if rate_bits
        One beat per accepted ERRORS request (after its CRC and range checks, before its reply),
        for the engine's ``errors`` input. The engine is idle then: requests come one at a time.
    meta_i : Out(stream.Signature(beat_layout(lanes, group_bits, value_bits))), if meta
        (``group_bits = index_bits(groups)``, ``value_bits = max(w_bits, u_bits)``, as the unit's)
        One beat per accepted UPDATE or LOAD request (after its CRC and range checks), for the
        :class:`~nmflow.rtl.metaplastic.MetaplasticUnit`'s ``i``; valid until taken.
    meta_o : In(stream.Signature(ArrayLayout(signed(w_bits), lanes))), if meta
        The unit's ``o``: the group's hidden weights after the beat, sent as the reply payload.
    pairs : Out(:class:`~nmflow.rtl.weights.PairReadSignature`), if meta
        To the engine's ``pairs``: one row read per READ row, each after the previous row's
        bytes are out, with the engine idle (no request is then in flight).

    Timing: an INFER payload is fed to the engine at one value per cycle (when the engine is
    ready) right after its CRC byte; the reply header is then handed to the transmitter while the
    engine computes, and each result beat is released as soon as its last score byte is taken.
    An error reply starts once the line has been quiet for ``timeout`` cycles. A round trip on the
    line takes :attr:`request_bytes` + :attr:`reply_bytes` characters plus the engine's latency.
    """

    def __init__(self, n_inputs, input_bits, n_classes, score_bits, *, timeout, rate_bits=None,
                 metaplastic=None, buffer="block"):
        check_parameters(n_inputs, input_bits, n_classes, score_bits, timeout=timeout)
        if rate_bits is not None:
            _check_int("rate_bits", rate_bits, 4, max_rate_bits())
        meta = metaplastic
        if meta is not None:
            if not isinstance(meta, protocol.MetaplasticInfo):
                raise TypeError(f"metaplastic must be a MetaplasticInfo, not "
                                f"{type(meta).__name__}")
            if meta.problem() is not None:
                raise ValueError(meta.problem())
        self._meta = meta
        if buffer not in ("block", "logic"):
            raise ValueError(f"buffer must be 'block' or 'logic', not {buffer!r}")
        self._buffer = buffer
        self._rate_bits = rate_bits
        self._n_inputs = n_inputs
        self._input_bits = input_bits
        self._n_classes = n_classes
        self._score_bits = score_bits
        self._timeout = timeout
        members = {
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "engine_i": Out(stream.Signature(unsigned(input_bits))),
            "engine_o": In(stream.Signature(result_layout(n_classes, score_bits))),
            "idle": Out(1),
            "receiving": Out(1),
        }
        if rate_bits is not None:
            members["errors"] = Out(stream.Signature(error_config_layout(rate_bits),
                                                     always_ready=True))
        if meta is not None:
            members["meta_i"] = Out(stream.Signature(beat_layout(
                meta.lanes, index_bits(meta.groups), max(meta.w_bits, meta.u_bits))))
            members["meta_o"] = In(stream.Signature(data.ArrayLayout(signed(meta.w_bits),
                                                                     meta.lanes)))
            members["pairs"] = Out(PairReadSignature(index_bits(meta.rows), meta.engine_lanes))
        super().__init__(members)

    n_inputs = property(lambda self: self._n_inputs)
    input_bits = property(lambda self: self._input_bits)
    n_classes = property(lambda self: self._n_classes)
    score_bits = property(lambda self: self._score_bits)
    timeout = property(lambda self: self._timeout)
    rate_bits = property(lambda self: self._rate_bits)
    meta = property(lambda self: self._meta)

    @property
    def info(self):
        """The :class:`~nmflow.protocol.Info` this link reports."""
        meta = self._meta
        return protocol.Info(protocol.VERSION if meta is None else protocol.METAPLASTIC_VERSION,
                             self._n_inputs, self._n_classes, self._input_bits,
                             protocol.score_bytes(self._score_bits), self._rate_bits or 0, meta)

    @property
    def request_bytes(self):
        """Bytes of an INFER request frame on the line."""
        return protocol.HEADER_BYTES + self._n_inputs

    @property
    def reply_bytes(self):
        """Bytes of an INFER reply frame on the line."""
        return protocol.HEADER_BYTES + self.info.infer_reply_length

    def elaborate(self, platform):
        m = Module()
        info = self.info
        n_inputs, sb = self._n_inputs, info.score_bytes
        rx, tx, ei, eo = self.rx, self.tx, self.engine_i, self.engine_o
        rb = self._rate_bits
        inj = rb is not None                # the ERRORS command exists
        n_errors = protocol.ERRORS_BYTES
        meta = self._meta
        mt = meta is not None               # the UPDATE, LOAD and READ commands exist
        n_info = len(protocol.encode_info(info))
        n_update = meta.update_length if mt else 0
        n_load = meta.load_length if mt else 0
        n_mreply = meta.reply_length if mt else 0
        n_read = protocol.READ_BYTES if mt else 0
        n_row = meta.row_bytes if mt else 0

        # -- state shared by the receiver and the transmitter ------------------------------------
        # The CRC of the frame being received or sent: ``crc_clear`` clears it (at SYNC), ``valid``
        # adds ``crc_in`` (each byte from CMD to the end of the payload), one byte per cycle.
        # ``crc_clear`` restarts it through the flip-flops' synchronous reset, which costs no logic
        # (the processor's own ``start`` would enter every bit's XOR network).
        crc_clear = Signal()
        crc_unit = protocol.CRC.create()
        m.submodules.crc = ResetInserter(crc_clear)(crc_unit)
        crc = crc_unit.crc
        crc_in = Signal(8)                  # the byte being received or sent, in CMD..PAYLOAD
        m.d.comb += crc_unit.data.eq(crc_in)
        count = Signal(range(max(n_inputs, n_errors if inj else 0, n_update, n_load, n_read, 2)))
        idx = Signal(range(max(8, n_info, n_mreply, n_row)))   # header, INFO, score, row byte
        # End-of-count tests kept in registers, set a cycle ahead with the counters, so that no
        # comparison sits on the paths into the state machine.
        count_last = Signal(init=n_inputs == 1)     # count == n_inputs - 1
        idx_marks = (0, 3, n_info - 1, sb - 1) + ((n_mreply - 1, n_row - 1) if mt else ())
        idx_is = {k: Signal(init=k == 0, name=f"idx_is_{k}") for k in set(idx_marks)}

        def set_count(zero):
            last = count == n_inputs - 2
            if inj:
                last = Mux(is_errors, count == n_errors - 2, last)
            if mt:
                last = Mux(is_meta, count == Mux(is_load, n_load - 2, n_update - 2), last)
                last = Mux(is_read, count == n_read - 2, last)
            m.d.sync += [count.eq(0 if zero else count + 1),
                         count_last.eq(n_inputs == 1 if zero else last)]

        def set_idx(zero):
            m.d.sync += idx.eq(0 if zero else idx + 1)
            m.d.sync += [flag.eq(k == 0 if zero else idx == k - 1) for k, flag in idx_is.items()]
        is_infer = Signal()
        is_errors = Signal()                # stays 0 without injector
        is_meta = Signal()                  # UPDATE or LOAD; stays 0 without the unit
        is_load = Signal()
        is_read = Signal()                  # READ; stays 0 without the unit
        len_lo = Signal(8)
        error = Signal()
        code = Signal(ErrorCode, init=ErrorCode.TIMEOUT)
        dirty = Signal()                    # a byte arrived while busy: drain before hunting

        # -- inter-byte timer: cycles since the last received byte, saturating ------------------
        # ``quiet`` is ``idle_time == timeout`` kept in a register (set a cycle ahead), so the
        # wide comparison is off the paths that decide what the link does next.
        idle_time = Signal(range(self._timeout + 1))
        quiet = Signal()
        got = Signal()                      # a byte was taken last cycle; its flags are ready
        take = Signal()
        m.d.comb += [rx.ready.eq(~got), take.eq(rx.valid & rx.ready)]
        with m.If(take):
            m.d.sync += [idle_time.eq(0), quiet.eq(0)]
        with m.Elif(~quiet):
            m.d.sync += [idle_time.eq(idle_time + 1), quiet.eq(idle_time == self._timeout - 1)]

        # -- received bytes: checked as they arrive, into flags the frame states act on one
        # cycle later (bytes are at least 10 bit times apart), keeping those checks off the
        # paths through the state machine. A byte is taken at most every other cycle ----------
        byte = Signal(8)
        is_sync, is_info_cmd, is_infer_cmd, is_errors_cmd = Signal(), Signal(), Signal(), Signal()
        is_update_cmd, is_load_cmd, is_read_cmd = Signal(), Signal(), Signal()
        len_ok, value_ok, crc_ok = Signal(), Signal(), Signal()
        expected_len = Mux(is_errors, n_errors, 0) if inj else 0
        if mt:
            expected_len = Mux(is_meta, Mux(is_load, n_load, n_update),
                               Mux(is_read, n_read, expected_len))
        m.d.sync += got.eq(take)
        with m.If(take):
            m.d.sync += [
                byte.eq(rx.payload),
                is_sync.eq(rx.payload == protocol.SYNC),
                is_info_cmd.eq(rx.payload == Command.INFO),
                is_infer_cmd.eq(rx.payload == Command.INFER),
                len_ok.eq(Cat(len_lo, rx.payload) == Mux(is_infer, n_inputs, expected_len)),
                value_ok.eq(rx.payload[self._input_bits:] == 0),
                crc_ok.eq(rx.payload == crc),
            ]
            if inj:
                m.d.sync += is_errors_cmd.eq(rx.payload == Command.ERRORS)
            if mt:
                m.d.sync += [is_update_cmd.eq(rx.payload == MetaplasticCommand.UPDATE),
                             is_load_cmd.eq(rx.payload == MetaplasticCommand.LOAD),
                             is_read_cmd.eq(rx.payload == MetaplasticCommand.READ)]

        # -- the UPDATE and LOAD payload: group (u16 LE), mask (u8), one value per lane (LE). The
        # bytes shift in from the top of ``mbuf``, so the payload ends up in its top bytes; the
        # range checks (group < groups, no mask bit above the lanes) are registered every cycle,
        # ready long before the CRC byte arrives.
        if mt:
            n_mbuf = max(n_update, n_load)
            mbuf = Signal(8 * n_mbuf)
            meta_ok = Signal()

            def meta_field(start, width, n_payload):
                base = 8 * (n_mbuf - n_payload) + start
                return mbuf[base:base + width]

            def meta_pick(start, width):
                return Mux(is_load, meta_field(start, width, n_load),
                           meta_field(start, width, n_update))
            m_group, m_mask = meta_pick(0, 16), meta_pick(16, 8)
            m.d.sync += meta_ok.eq((m_group < meta.groups) & (m_mask >> meta.lanes == 0))
            mbeat = self.meta_i.payload
            m.d.comb += [mbeat.addr.eq(m_group), mbeat.en.eq(m_mask),
                         mbeat.op.eq(Mux(is_load, OP_LOAD, OP_UPDATE))]
            for p in range(meta.lanes):
                d = meta_field(24 + p * meta.u_bits, meta.u_bits, n_update).as_signed()
                w = meta_field(24 + p * meta.w_bits, meta.w_bits, n_load).as_signed()
                m.d.comb += mbeat.value[p].eq(Mux(is_load, w, d))
            mres = Signal(meta.lanes * meta.w_bits)     # the unit's result, sent byte by byte
            mheld = Signal()

            # READ: row (u16 LE), count (u16 LE), in the top bytes of ``mbuf`` too. The range
            # check (1 <= count, row + count <= rows, count <= 65535 // row_bytes) is registered
            # like the others. ``r_row`` and ``r_left`` walk the rows; ``prow`` holds the row
            # being sent, shifted out a byte at a time.
            rows, row_shift = meta.rows, (meta.row_bytes - 1).bit_length()
            r_row_in, r_count_in = meta_field(0, 16, n_read), meta_field(16, 16, n_read)
            read_ok = Signal()
            r_end = Signal(17)
            m.d.comb += r_end.eq(r_row_in + r_count_in)
            m.d.sync += read_ok.eq((r_count_in != 0) & (r_end <= rows)
                                   & (r_count_in <= 0xFFFF // meta.row_bytes))
            r_row = Signal(range(max(rows, 2)))
            r_left = Signal(16)
            r_last = Signal()               # r_left == 1, kept in a register
            prow = Signal(2 * meta.engine_lanes)
            pheld = Signal()                # prow holds the row being sent
            preq = Signal()                 # the row's read has been issued

        # -- the ERRORS payload: t1, t2, t3, seed (u32 LE each), mode (u8). Only the bits the
        # injector takes are stored (rate_bits + 1 of each threshold, 31 of the seed, 1 of the
        # mode); a sticky flag records any set bit above them. The range checks are registered
        # every cycle from the stored fields, ready long before the CRC byte arrives.
        if inj:
            one = 1 << rb
            widths = [rb + 1] * 3 + [protocol.SEED_BITS]
            fields = [Signal(w, name=f"cfg_{n}") for w, n in zip(widths, ("t1", "t2", "t3", "seed"))]
            cfg_static = Signal()
            cfg_over = Signal()                 # a bit above a field's width is set
            cfg_ok = Signal()
            over_masks = []                     # per payload byte: the bits that must be zero
            for k in range(n_errors):
                if k < 16:
                    low = max(0, min(8, widths[k // 4] - 8 * (k % 4)))
                else:
                    low = 1
                over_masks.append(0xFF & ~((1 << low) - 1))
            over = Signal()
            with m.If(take):
                m.d.sync += over.eq((rx.payload & Array(Const(v, 8) for v in over_masks)[count])
                                    != 0)
            t1, t2, t3, seed = fields
            t12 = Signal(rb + 2)
            m.d.comb += t12.eq(t1 + t2)
            m.d.sync += cfg_ok.eq(~cfg_over & (t1 <= one) & (t2 <= one) & (t3 <= one)
                                  & (t12 <= one))
            cfg = self.errors.payload
            m.d.comb += [cfg.t1.eq(t1), cfg.t12.eq(t12), cfg.t3.eq(t3), cfg.seed.eq(seed),
                         cfg.static.eq(cfg_static)]

            def store_errors_byte():
                m.d.sync += cfg_over.eq(cfg_over | over)
                with m.Switch(count):
                    for k in range(n_errors):
                        if k < 16:
                            field, at = fields[k // 4], 8 * (k % 4)
                            if at >= len(field):
                                continue
                            with m.Case(k):
                                m.d.sync += field[at:at + 8].eq(byte)
                        else:
                            with m.Case(k):
                                m.d.sync += cfg_static.eq(byte[0])

        # -- input buffer: the engine sees a payload only after its CRC checked ------------------
        m.submodules.buffer = buffer = Memory(shape=unsigned(self._input_bits), depth=n_inputs,
                                              init=[], attrs={"ram_style": self._buffer})
        wr = buffer.write_port()
        rd = buffer.read_port()
        feed = ei.valid & ei.ready
        m.d.comb += [
            wr.addr.eq(count), wr.data.eq(byte),
            rd.addr.eq(count + feed),       # rd.data is buffer[count] in FEED (addr 0 in CHECK)
            ei.payload.eq(rd.data),
        ]

        # -- reply header bytes -----------------------------------------------------------------
        reply_cmd = Signal(8, init=Reply.INFO)
        reply_len = Signal(16)
        with m.If(error):
            m.d.comb += [reply_cmd.eq(Reply.ERROR), reply_len.eq(1)]
        with m.Elif(is_infer):
            m.d.comb += [reply_cmd.eq(Reply.INFER), reply_len.eq(info.infer_reply_length)]
        if inj:
            with m.Elif(is_errors):
                m.d.comb += [reply_cmd.eq(Reply.ERRORS), reply_len.eq(0)]
        if mt:
            with m.Elif(is_meta):
                m.d.comb += [reply_cmd.eq(Mux(is_load, MetaplasticReply.LOAD, MetaplasticReply.UPDATE)),
                             reply_len.eq(n_mreply)]
            with m.Elif(is_read):
                m.d.comb += [reply_cmd.eq(MetaplasticReply.READ),
                             reply_len.eq(r_count_in << row_shift)]
        with m.Else():
            m.d.comb += [reply_cmd.eq(Reply.INFO), reply_len.eq(n_info)]
        header = Array([Const(protocol.SYNC, 8), reply_cmd, reply_len[:8], reply_len[8:]])
        info_bytes = Array(Const(b, 8) for b in protocol.encode_info(info))
        # The engine's result beat being sent, held in registers: the engine's handshake never
        # waits on the byte-level logic of the transmitter.
        beat = Signal()                     # a result beat is held
        beat_score = Signal(signed(8 * sb))
        beat_cls = Signal(8)
        beat_last = Signal()

        def take_beat():
            m.d.comb += eo.ready.eq(1)
            with m.If(eo.valid):
                m.d.sync += [beat.eq(1), beat_score.eq(eo.payload.score),
                             beat_cls.eq(eo.payload.cls), beat_last.eq(eo.payload.last)]

        def fail(error_code):
            m.d.sync += [code.eq(error_code), error.eq(1)]
            fsm.next("DRAIN")

        def receive(then):
            """Common to the frame states: take a byte into the CRC, or time out."""
            m.d.comb += [self.receiving.eq(1), crc_in.eq(byte)]
            with m.If(got):
                m.d.comb += crc_unit.valid.eq(1)
                then()
            with m.Elif(quiet):
                fail(ErrorCode.TIMEOUT)

        def busy():
            with m.If(got):
                m.d.sync += dirty.eq(1)

        def send(byte, *, covered=True):
            """Offer ``byte`` to the transmitter; ``covered``: it goes into the CRC when taken."""
            m.d.comb += tx.payload.eq(byte)
            if covered:
                m.d.comb += crc_in.eq(byte)
            busy()

        def send_low_byte(held, last, done):
            """Send the low byte of ``held`` (a reply field held in a register) and shift it
            down; ``done()`` once the byte sent was the field's last (``last``)."""
            send(held[:8])
            m.d.comb += tx.valid.eq(1)
            with m.If(tx.ready):
                m.d.comb += crc_unit.valid.eq(1)
                m.d.sync += held.eq(held >> 8)
                set_idx(zero=False)
                with m.If(last):
                    done()

        fsm = OneHotFSM(m, ["HUNT", "CMD", "LEN_LO", "LEN_HI", "PAYLOAD", "CHECK", "FEED", "DRAIN",
                             "HEAD", "ERROR_BODY", "INFO_BODY", "CLASS", "SCORE", "CRC"]
                        + (["META", "META_BODY", "ROWS"] if mt else []),
                        init="HUNT", name="link")
        with fsm.State("HUNT"):
            m.d.comb += self.idle.eq(1)
            with m.If(got & is_sync):
                m.d.comb += crc_clear.eq(1)
                set_count(zero=True)
                if inj:
                    m.d.sync += cfg_over.eq(0)
                fsm.next("CMD")

        with fsm.State("CMD"):
            def on_cmd():
                m.d.sync += is_infer.eq(is_infer_cmd)
                accepted = is_info_cmd | is_infer_cmd
                if inj:
                    m.d.sync += is_errors.eq(is_errors_cmd)
                    accepted |= is_errors_cmd
                    if n_inputs == 1:           # count_last was set for a 1-byte payload
                        m.d.sync += count_last.eq(~is_errors_cmd)
                if mt:
                    m.d.sync += [is_meta.eq(is_update_cmd | is_load_cmd),
                                 is_load.eq(is_load_cmd), is_read.eq(is_read_cmd)]
                    accepted |= is_update_cmd | is_load_cmd | is_read_cmd
                    if n_inputs == 1:
                        m.d.sync += count_last.eq(is_infer_cmd)
                with m.If(accepted):
                    fsm.next("LEN_LO")
                with m.Else():
                    fail(ErrorCode.BAD_COMMAND)
            receive(on_cmd)

        with fsm.State("LEN_LO"):
            def on_len_lo():
                m.d.sync += len_lo.eq(byte)
                fsm.next("LEN_HI")
            receive(on_len_lo)

        other = ([is_errors] if inj else []) + ([is_meta, is_read] if mt else [])  # not INFER
        not_infer = None
        for flag in other:
            not_infer = flag if not_infer is None else not_infer | flag
        has_payload = is_infer if not_infer is None else is_infer | not_infer

        with fsm.State("LEN_HI"):
            def on_len_hi():
                with m.If(~len_ok):
                    fail(ErrorCode.BAD_LENGTH)
                with m.Elif(has_payload):
                    fsm.next("PAYLOAD")
                with m.Else():
                    fsm.next("CHECK")
            receive(on_len_hi)

        with fsm.State("PAYLOAD"):
            def on_payload():
                with m.If(~value_ok if not_infer is None else ~value_ok & ~not_infer):
                    fail(ErrorCode.BAD_VALUE)
                with m.Else():
                    if not_infer is None:
                        m.d.comb += wr.en.eq(1)
                    else:
                        m.d.comb += wr.en.eq(~not_infer)
                    if inj:
                        with m.If(is_errors):
                            store_errors_byte()
                    if mt:
                        with m.If(is_meta | is_read):
                            m.d.sync += mbuf.eq(Cat(mbuf[8:], byte))
                    set_count(zero=False)
                    with m.If(count_last):
                        set_count(zero=True)
                        fsm.next("CHECK")
            receive(on_payload)

        with fsm.State("CHECK"):
            def on_check():
                with m.If(~crc_ok):
                    fail(ErrorCode.BAD_CHECKSUM)
                with m.Elif(is_infer):
                    fsm.next("FEED")
                if inj:
                    with m.Elif(is_errors & ~cfg_ok):
                        fail(ErrorCode.BAD_VALUE)
                if mt:
                    with m.Elif(is_meta & ~meta_ok):
                        fail(ErrorCode.BAD_VALUE)
                    with m.Elif(is_meta):
                        fsm.next("META")
                    with m.Elif(is_read & ~read_ok):
                        fail(ErrorCode.BAD_VALUE)
                with m.Else():
                    if inj:
                        m.d.comb += self.errors.valid.eq(is_errors)
                    set_idx(zero=True)
                    fsm.next("HEAD")
            receive(on_check)

        with fsm.State("FEED"):
            busy()
            m.d.comb += ei.valid.eq(1)
            with m.If(feed):
                set_count(zero=False)
                with m.If(count_last):
                    set_count(zero=True)
                    set_idx(zero=True)
                    fsm.next("HEAD")

        if mt:
            with fsm.State("META"):
                # The beat is offered at once and held until the unit takes it.
                busy()
                m.d.comb += self.meta_i.valid.eq(1)
                with m.If(self.meta_i.ready):
                    set_idx(zero=True)
                    fsm.next("HEAD")

            with fsm.State("META_BODY"):
                with m.If(~mheld):
                    busy()
                    m.d.comb += self.meta_o.ready.eq(1)
                    with m.If(self.meta_o.valid):
                        m.d.sync += [mheld.eq(1), mres.eq(self.meta_o.payload.as_value())]
                with m.Else():
                    def done():
                        m.d.sync += mheld.eq(0)
                        fsm.next("CRC")
                    send_low_byte(mres, idx_is[n_mreply - 1], done)

        if mt:
            with fsm.State("ROWS"):
                # Read a row (the engine is idle: no request is in flight), then send its bytes.
                with m.If(~pheld):
                    busy()
                    m.d.comb += [self.pairs.addr.eq(r_row), self.pairs.en.eq(~preq)]
                    m.d.sync += preq.eq(1)
                    with m.If(self.pairs.valid):
                        m.d.sync += [pheld.eq(1), prow.eq(self.pairs.data.as_value())]
                with m.Else():
                    def row_done():
                        set_idx(zero=True)
                        m.d.sync += [pheld.eq(0), preq.eq(0), r_row.eq(r_row + 1),
                                     r_left.eq(r_left - 1), r_last.eq(r_left == 2)]
                        with m.If(r_last):
                            fsm.next("CRC")
                    send_low_byte(prow, idx_is[n_row - 1], row_done)

        with fsm.State("DRAIN"):
            with m.If(quiet):
                m.d.sync += dirty.eq(0)
                set_idx(zero=True)
                with m.If(error):
                    fsm.next("HEAD")
                with m.Else():
                    fsm.next("HUNT")

        with fsm.State("HEAD"):
            send(header[idx])
            m.d.comb += tx.valid.eq(1)
            with m.If(tx.ready):
                set_idx(zero=False)
                with m.If(idx_is[0]):
                    m.d.comb += crc_clear.eq(1)       # SYNC is not covered
                with m.Else():
                    m.d.comb += crc_unit.valid.eq(1)
                with m.If(idx_is[3]):
                    set_idx(zero=True)
                    with m.If(error):
                        fsm.next("ERROR_BODY")
                    with m.Elif(is_infer):
                        fsm.next("CLASS")
                    if inj:
                        with m.Elif(is_errors):
                            fsm.next("CRC")
                    if mt:
                        with m.Elif(is_meta):
                            fsm.next("META_BODY")
                        with m.Elif(is_read):
                            m.d.sync += [r_row.eq(r_row_in), r_left.eq(r_count_in),
                                         r_last.eq(r_count_in == 1), pheld.eq(0), preq.eq(0)]
                            fsm.next("ROWS")
                    with m.Else():
                        fsm.next("INFO_BODY")

        with fsm.State("ERROR_BODY"):
            send(code)
            m.d.comb += tx.valid.eq(1)
            with m.If(tx.ready):
                m.d.comb += crc_unit.valid.eq(1)
                fsm.next("CRC")

        with fsm.State("INFO_BODY"):
            send(info_bytes[idx])
            m.d.comb += tx.valid.eq(1)
            with m.If(tx.ready):
                m.d.comb += crc_unit.valid.eq(1)
                set_idx(zero=False)
                with m.If(idx_is[n_info - 1]):
                    fsm.next("CRC")

        with fsm.State("CLASS"):
            # The class comes with the first result beat, which stays held for SCORE.
            with m.If(~beat):
                busy()
                take_beat()
            with m.Else():
                send(beat_cls)
                m.d.comb += tx.valid.eq(1)
                with m.If(tx.ready):
                    m.d.comb += crc_unit.valid.eq(1)
                    set_idx(zero=True)
                    fsm.next("SCORE")

        with fsm.State("SCORE"):
            with m.If(~beat):
                busy()
                take_beat()
            with m.Else():
                send(beat_score.word_select(idx, 8))
                m.d.comb += tx.valid.eq(1)
                with m.If(tx.ready):
                    m.d.comb += crc_unit.valid.eq(1)
                    set_idx(zero=False)
                    with m.If(idx_is[sb - 1]):
                        set_idx(zero=True)
                        m.d.sync += beat.eq(0)
                        with m.If(beat_last):
                            fsm.next("CRC")

        with fsm.State("CRC"):
            send(crc, covered=False)
            m.d.comb += tx.valid.eq(1)
            with m.If(tx.ready):
                m.d.sync += [error.eq(0), dirty.eq(0)]
                with m.If(dirty | got | take):
                    fsm.next("DRAIN")
                with m.Else():
                    fsm.next("HUNT")
        return m
