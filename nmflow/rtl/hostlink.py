"""The host link: a framed request/reply protocol between UART byte streams and the engine.

:class:`HostLink` implements, byte for byte, the protocol specified in docs/contracts.md, section
5 (:mod:`nmflow.protocol`: frames ``A5 | CMD | LEN (u16 LE) | PAYLOAD | CRC-8``, commands INFO
and INFER, the optional ERRORS, UPDATE, LOAD and READ, ERROR replies, resynchronisation and the
inter-byte timeout). It takes its commands, reply commands and error codes from the enumerations
there and its CRC from ``protocol.CRC.create()``;
:class:`nmflow.protocol.LinkModel` is the plain-Python twin the tests compare it with.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out

from .. import protocol
from ..errors import NmflowError, check_choice, check_int
from ..golden.injector import max_rate_bits
from ..golden.plan import index_bits
from ..protocol import Command, MetaplasticCommand, MetaplasticReply, Reply
from .engine import result_layout
from .framing import add_framing, check_timeout
from .injector import error_config_layout
from .metaplastic import OP_LOAD, OP_UPDATE, beat_layout
from .onehot import OneHotFSM
from .store import STORE_KINDS, Store
from .weights import PairReadSignature, pair_row

__all__ = ["HostLink", "check_parameters"]


def _result_entry_bits(n_classes, score_bits):
    """Bits of a result beat in the batch's result store: score, class, last."""
    return score_bits + index_bits(n_classes) + 1


def check_parameters(n_inputs, input_bits, n_classes, score_bits, *, timeout):
    """Raise :class:`~nmflow.errors.NmflowError` naming the first parameter :class:`HostLink`
    cannot take."""
    check_int("n_inputs", n_inputs, 1, protocol.MAX_INPUTS)
    check_int("input_bits", input_bits, 1, 8)
    check_int("n_classes", n_classes, 1, protocol.MAX_CLASSES)
    check_int("score_bits", score_bits, 1, protocol.MAX_SCORE_BITS)
    check_timeout(timeout)


class HostLink(wiring.Component):
    """The engine's command handler between the shared frame receiver and sender
    (:mod:`nmflow.rtl.framing`), and the input buffer, between a UART and the engine.

    Implements the protocol of docs/contracts.md, section 5, exactly.

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
        The metaplastic update unit's sizes: the link then reports protocol version 4 (INFO with
        the unit's tail), accepts UPDATE, LOAD and READ requests and has the
        ``metaplastic_i``, ``metaplastic_o`` and ``pairs`` ports. ``None`` (the default): no
        unit, UPDATE, LOAD and READ are refused with BAD_COMMAND and the link is built exactly
        as without this option.
    weights : :class:`~nmflow.protocol.WeightsInfo` or None
        The engine's weight memory's rows and lanes when it is written at run time (SPRAM): the
        link then reports protocol version 5 (INFO with the tail), accepts WEIGHTS requests and
        has the ``weights`` and ``engine_idle`` ports. ``None`` (the default): WEIGHTS is
        refused with BAD_COMMAND. Not with ``metaplastic``.
    batch : :class:`~nmflow.protocol.BatchInfo` or None
        The batch memory's capacity in input vectors: the link then reports protocol version 6
        (INFO with the features' flags and the tails) and accepts BATCH requests, whose vectors
        it keeps in its input buffer (``capacity * n_inputs`` values) and whose results it keeps
        in a result store (``capacity * n_classes`` beats) while the engine runs them back to
        back; a 32-bit counter measures the cycles. ``None`` (the default): BATCH is refused
        with BAD_COMMAND and the link is built exactly as without this option.
    buffer : ``"block"``, ``"logic"`` or ``"spram"``
        Where the input buffer (and the batch's result store) lives: block RAM (the default),
        flip-flops (when the block RAMs are all taken, as on the iCE40UP5K with the metaplastic
        unit) or the iCE40UP5K's SPRAMs (a batch memory beside an engine that fills the block
        RAM; :attr:`sprams`).
    spram_depth : int
        Words of each SPRAM bank with ``buffer="spram"`` (:class:`~nmflow.rtl.store.Store`).

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
    metaplastic_i : Out(stream.Signature(beat_layout(lanes, group_bits, value_bits)))
        If metaplastic (``group_bits = index_bits(groups)``, ``value_bits = max(w_bits, u_bits)``, as the unit's)
        One beat per accepted UPDATE or LOAD request (after its CRC and range checks), for the
        :class:`~nmflow.rtl.metaplastic.MetaplasticUnit`'s ``i``; valid until taken.
    metaplastic_o : In(stream.Signature(ArrayLayout(signed(w_bits), lanes))), if metaplastic
        The unit's ``o``: the group's hidden weights after the beat, sent as the reply payload.
    pairs : Out(:class:`~nmflow.rtl.weights.PairReadSignature`), if metaplastic
        To the engine's ``pairs``: one row read per READ row, each after the previous row's
        bytes are out, with the engine idle (no request is then in flight).
    weights : In(WritePort.Signature(index_bits(rows), pair_row(lanes), granularity=1)), if weights
        To the engine's ``weights``: one whole row written per accepted WEIGHTS request (after
        its CRC and range checks, before its reply), in a cycle where ``engine_idle`` is high.
    engine_idle : In(1), if weights
        The engine's ``idle``.

    Timing: an INFER payload is fed to the engine at one value per cycle (when the engine is
    ready) right after its CRC byte; the reply header is then handed to the transmitter while the
    engine computes, and each result beat is released as soon as its last score byte is taken.
    An error reply starts once the line has been quiet for ``timeout`` cycles. A round trip on the
    line takes :attr:`request_bytes` + :attr:`reply_bytes` characters plus the engine's latency.
    """

    def __init__(self, n_inputs, input_bits, n_classes, score_bits, *, timeout, rate_bits=None,
                 metaplastic=None, weights=None, batch=None, buffer="block",
                 spram_depth=None):
        check_parameters(n_inputs, input_bits, n_classes, score_bits, timeout=timeout)
        if rate_bits is not None:
            check_int("rate_bits", rate_bits, 4, max_rate_bits())
        unit = metaplastic
        if unit is not None:
            if not isinstance(unit, protocol.MetaplasticInfo):
                raise TypeError(f"metaplastic must be a MetaplasticInfo, not "
                                f"{type(unit).__name__}")
            if unit.problem() is not None:
                raise NmflowError(unit.problem())
        self._unit_info = unit
        if weights is not None:
            if not isinstance(weights, protocol.WeightsInfo):
                raise TypeError(f"weights must be a WeightsInfo, not {type(weights).__name__}")
            if weights.problem() is not None:
                raise NmflowError(weights.problem())
            if unit is not None:
                raise NmflowError("a link has either the metaplastic unit or run-time weights, "
                                  "not both")
        self._weights_info = weights
        if batch is not None:
            if not isinstance(batch, protocol.BatchInfo):
                raise TypeError(f"batch must be a BatchInfo, not {type(batch).__name__}")
            problem = batch.problem(n_inputs, 1 + n_classes * protocol.score_bytes(score_bits))
            if problem is not None:
                raise NmflowError(problem)
        self._batch = batch
        self._buffer = check_choice("buffer", buffer, STORE_KINDS)
        self._spram_depth = spram_depth
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
        if unit is not None:
            members["metaplastic_i"] = Out(stream.Signature(beat_layout(
                unit.lanes, index_bits(unit.groups), max(unit.w_bits, unit.u_bits))))
            members["metaplastic_o"] = In(stream.Signature(data.ArrayLayout(signed(unit.w_bits),
                                                                     unit.lanes)))
            members["pairs"] = Out(PairReadSignature(index_bits(unit.rows), unit.engine_lanes))
        if weights is not None:
            members["weights"] = In(WritePort.Signature(addr_width=index_bits(weights.rows),
                                                         shape=pair_row(weights.lanes),
                                                         granularity=1))
            members["engine_idle"] = In(1)
        super().__init__(members)

    n_inputs = property(lambda self: self._n_inputs)
    input_bits = property(lambda self: self._input_bits)
    n_classes = property(lambda self: self._n_classes)
    score_bits = property(lambda self: self._score_bits)
    timeout = property(lambda self: self._timeout)
    rate_bits = property(lambda self: self._rate_bits)
    metaplastic = property(lambda self: self._unit_info)
    weights_info = property(lambda self: self._weights_info)
    buffer = property(lambda self: self._buffer)
    batch = property(lambda self: self._batch)

    @property
    def info(self):
        """The :class:`~nmflow.protocol.Info` this link reports."""
        unit, tail, batch = self._unit_info, self._weights_info, self._batch
        return protocol.Info(protocol.link_version(unit, tail, batch), self._n_inputs,
                             self._n_classes, self._input_bits,
                             protocol.score_bytes(self._score_bits), self._rate_bits or 0, unit,
                             tail, batch)

    @property
    def capacity(self):
        """Input vectors the input buffer holds: the batch capacity, or 1."""
        return self._batch.capacity if self._batch is not None else 1

    def stores(self):
        """The link's memories as :class:`~nmflow.rtl.store.Store` s: ``{"inputs": ...}``,
        and ``"results"`` with a batch memory."""
        kw = {} if self._spram_depth is None else {"spram_depth": self._spram_depth}
        out = {"inputs": Store(self.capacity * self._n_inputs, self._input_bits,
                               kind=self._buffer, **kw)}
        if self._batch is not None:
            out["results"] = Store(self._batch.capacity * self._n_classes,
                                   _result_entry_bits(self._n_classes, self._score_bits),
                                   kind=self._buffer, **kw)
        return out

    @property
    def sprams(self):
        """SPRAMs the link's memories take on the silicon (with ``buffer="spram"``)."""
        return sum(store.sprams for store in self.stores().values())

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
        receiver, sender, start = add_framing(m, self, self._timeout)
        frame = _Frame(m, self, receiver)
        requests = _Requests(m, self, receiver, sender, frame, start)
        self._verdicts(m, receiver, frame, requests)
        requests.header()
        requests.execute()
        return m

    def _verdicts(self, m, receiver, frame, requests):
        """The handler's answers to the receiver, field by field (docs/contracts.md, 5.6)."""
        accepted = frame.is_info_cmd | frame.is_infer_cmd
        if requests.batch is not None:
            accepted |= frame.is_batch_cmd
        if requests.errors is not None:
            accepted |= frame.is_errors_cmd
        if requests.unit is not None:
            accepted |= frame.is_update_cmd | frame.is_load_cmd | frame.is_read_cmd
        if requests.weights is not None:
            accepted |= frame.is_weights_cmd
        args_ok = Const(1)
        if requests.errors is not None:
            args_ok = ~frame.is_errors | requests.errors.ok
        if requests.unit is not None:
            args_ok &= ~frame.is_group | requests.unit.group_ok
            args_ok &= ~frame.is_read | requests.unit.read_ok
        if requests.weights is not None:
            args_ok &= ~frame.is_weights | requests.weights.ok
        if requests.batch is not None:
            args_ok &= ~frame.is_batch | requests.batch.whole
        m.d.comb += [
            receiver.cmd_ok.eq(accepted),
            receiver.len_ok.eq(frame.len_ok),
            receiver.has_payload.eq(frame.has_payload),
            receiver.value_ok.eq(frame.value_ok | frame.not_infer),
            receiver.last.eq(frame.count_last),
            receiver.args_ok.eq(args_ok),
        ]


class _Frame:
    """The link's view of the frame being received: the command's flags, the payload counter
    and the checks of each byte, registered when the byte is taken (a cycle before the receiver
    asks for them), so that no comparison sits on the paths into the state machines."""

    def __init__(self, m, link, receiver):
        self.m = m
        n_inputs = link.n_inputs
        has_errors, unit = link.rate_bits is not None, link.metaplastic
        tail, batch = link.weights_info, link.batch
        self.batch = batch
        self.lengths = {"errors": protocol.ERRORS_BYTES if has_errors else 0,
                        "update": unit.update_length if unit else 0,
                        "load": unit.load_length if unit else 0,
                        "read": protocol.READ_BYTES if unit else 0,
                        "weights": tail.length if tail else 0}
        # the command of the frame (set at CMD), and the flags of the byte taken last
        for name in ("infer", "errors", "group", "load", "read", "weights", "batch"):
            setattr(self, f"is_{name}", Signal(name=f"is_{name}"))
        for name in ("info", "infer", "errors", "update", "load", "read", "weights", "batch"):
            setattr(self, f"is_{name}_cmd", Signal(name=f"is_{name}_cmd"))
        self.len_ok, self.value_ok = Signal(), Signal()
        self.count = Signal(range(max(n_inputs * link.capacity, *self.lengths.values(), 2)))
        # a BATCH payload's length less 2, for its last-byte test (kept from LEN on)
        self.length_m2 = Signal(17) if batch else None
        self.count_last = Signal(init=n_inputs == 1)        # count == length - 1
        self.n_inputs = n_inputs
        incoming = receiver.incoming
        with m.If(receiver.take):
            m.d.sync += [
                self.is_info_cmd.eq(incoming == Command.INFO),
                self.is_infer_cmd.eq(incoming == Command.INFER),
                self.len_ok.eq(Cat(receiver.len_lo, incoming)
                               == Mux(self.is_infer, n_inputs, self._expected_length())),
                self.value_ok.eq(incoming[link.input_bits:] == 0),
            ]
            if has_errors:
                m.d.sync += self.is_errors_cmd.eq(incoming == Command.ERRORS)
            if unit:
                m.d.sync += [self.is_update_cmd.eq(incoming == MetaplasticCommand.UPDATE),
                             self.is_load_cmd.eq(incoming == MetaplasticCommand.LOAD),
                             self.is_read_cmd.eq(incoming == MetaplasticCommand.READ)]
            if tail:
                m.d.sync += self.is_weights_cmd.eq(incoming == Command.WEIGHTS)
            if batch:
                length = Cat(receiver.len_lo, incoming)
                m.d.sync += self.is_batch_cmd.eq(incoming == Command.BATCH)
                with m.If(self.is_batch):
                    m.d.sync += self.len_ok.eq((length >= n_inputs)
                                               & (length <= batch.capacity * n_inputs))
        other = ([self.is_errors] if has_errors else []) + \
                ([self.is_group, self.is_read] if unit else []) + \
                ([self.is_weights] if tail else [])
        self.not_infer = Const(0)
        for flag in other:
            self.not_infer = self.not_infer | flag
        self.has_payload = self.is_infer | self.not_infer | self.is_batch
        with m.If(receiver.start):
            self.set_count(zero=True)
        # the request is answered at once when accepted (INFO, ERRORS, READ): known from CMD on,
        # kept in a register so that the reply's start waits on no decoding of the command
        self.direct = Signal()
        waits = self.is_infer_cmd       # (the flags of commands the link lacks stay 0)
        for name in ("update", "load", "weights", "batch"):
            waits = waits | getattr(self, f"is_{name}_cmd")
        with m.If(receiver.at_cmd):
            m.d.sync += self.direct.eq(~waits)
        with m.If(receiver.at_cmd):
            m.d.sync += self.is_infer.eq(self.is_infer_cmd)
            if has_errors:
                m.d.sync += self.is_errors.eq(self.is_errors_cmd)
                if n_inputs == 1:           # count_last was set for a 1-byte payload
                    m.d.sync += self.count_last.eq(~self.is_errors_cmd)
            if unit:
                m.d.sync += [self.is_group.eq(self.is_update_cmd | self.is_load_cmd),
                             self.is_load.eq(self.is_load_cmd), self.is_read.eq(self.is_read_cmd)]
                if n_inputs == 1:
                    m.d.sync += self.count_last.eq(self.is_infer_cmd)
            if tail:
                m.d.sync += self.is_weights.eq(self.is_weights_cmd)
                if n_inputs == 1:
                    m.d.sync += self.count_last.eq(self.is_infer_cmd)
            if batch:
                m.d.sync += self.is_batch.eq(self.is_batch_cmd)
                if n_inputs == 1:
                    m.d.sync += self.count_last.eq(self.is_infer_cmd)
        if batch:
            with m.If(receiver.at_len_hi & self.is_batch):
                length = Cat(receiver.len_lo, receiver.byte)
                m.d.sync += [self.length_m2.eq(length - 2), self.count_last.eq(length == 1)]
        with m.If(receiver.at_payload):
            self.set_count(zero=False)
            with m.If(self.count_last):
                self.set_count(zero=True)

    def _expected_length(self):
        lengths = self.lengths
        expected = Mux(self.is_errors, lengths["errors"], 0) if lengths["errors"] else 0
        if lengths["read"]:
            expected = Mux(self.is_group, Mux(self.is_load, lengths["load"], lengths["update"]),
                           Mux(self.is_read, lengths["read"], expected))
        if lengths["weights"]:
            expected = Mux(self.is_weights, lengths["weights"], expected)
        return expected

    def set_count(self, zero):
        """Restart the payload counter (at a frame's start or its last byte) or advance it,
        with ``count_last`` set a cycle ahead."""
        lengths, count = self.lengths, self.count
        last = count == self.n_inputs - 2
        if lengths["errors"]:
            last = Mux(self.is_errors, count == lengths["errors"] - 2, last)
        if lengths["read"]:
            last = Mux(self.is_group, count == Mux(self.is_load, lengths["load"] - 2,
                                                  lengths["update"] - 2), last)
            last = Mux(self.is_read, count == lengths["read"] - 2, last)
        if lengths["weights"]:
            last = Mux(self.is_weights, count == lengths["weights"] - 2, last)
        if self.batch:
            last = Mux(self.is_batch, count == self.length_m2, last)
        first = self.n_inputs == 1
        if self.batch and zero:                 # a BATCH of one value (its FEED)
            first = Mux(self.is_batch, self.length_m2 == (1 << len(self.length_m2)) - 1,
                        first)
        self.m.d.sync += [count.eq(0 if zero else count + 1),
                          self.count_last.eq(first if zero else last)]


class _ErrorsPayload:
    """The ERRORS payload: t1, t2, t3, seed (u32 LE each), mode (u8). Only the bits the injector
    takes are stored (``rate_bits + 1`` of each threshold, 31 of the seed, 1 of the mode); a
    sticky flag records any set bit above them. The range checks are registered every cycle from
    the stored fields (``ok``), ready long before the CRC byte arrives; the link's ``errors``
    port carries the fields."""

    def __init__(self, m, link, receiver, frame):
        rb, n_errors = link.rate_bits, protocol.ERRORS_BYTES
        one = 1 << rb
        widths = [rb + 1] * 3 + [protocol.SEED_BITS]
        self.fields = [Signal(w, name=f"cfg_{n}") for w, n in zip(widths, ("t1", "t2", "t3",
                                                                          "seed"))]
        self.static = Signal()
        self.over = Signal()                    # a bit above a field's width is set
        self.ok = Signal()
        masks = []                              # per payload byte: the bits that must be zero
        for k in range(n_errors):
            low = max(0, min(8, widths[k // 4] - 8 * (k % 4))) if k < 16 else 1
            masks.append(0xFF & ~((1 << low) - 1))
        over = Signal()
        with m.If(receiver.take):
            m.d.sync += over.eq((receiver.incoming & Array(Const(v, 8) for v in masks)[frame.count])
                                != 0)
        t1, t2, t3, seed = self.fields
        t12 = Signal(rb + 2)
        m.d.comb += t12.eq(t1 + t2)
        m.d.sync += self.ok.eq(~self.over & (t1 <= one) & (t2 <= one) & (t3 <= one)
                               & (t12 <= one))
        cfg = link.errors.payload
        m.d.comb += [cfg.t1.eq(t1), cfg.t12.eq(t12), cfg.t3.eq(t3), cfg.seed.eq(seed),
                     cfg.static.eq(self.static)]
        with m.If(receiver.start):
            m.d.sync += self.over.eq(0)
        with m.If(receiver.at_payload & frame.is_errors):
            m.d.sync += self.over.eq(self.over | over)
            with m.Switch(frame.count):
                for k in range(n_errors):
                    if k >= 16:
                        with m.Case(k):
                            m.d.sync += self.static.eq(receiver.byte[0])
                        continue
                    field, at = self.fields[k // 4], 8 * (k % 4)
                    if at < len(field):
                        with m.Case(k):
                            m.d.sync += field[at:at + 8].eq(receiver.byte)


class _WeightsPayload:
    """The WEIGHTS payload: row (u16 LE), then the row's pair codes. The bytes shift in from the
    top of ``buffer``; the range check (``ok``: row < rows, no bit set above the lanes' codes)
    is registered every cycle, ready long before the CRC byte arrives; the link's ``weights``
    port carries the row."""

    def __init__(self, m, link, receiver, frame):
        tail = link.weights_info
        self.buffer = Signal(8 * tail.length)
        with m.If(receiver.at_payload & frame.is_weights):
            m.d.sync += self.buffer.eq(Cat(self.buffer[8:], receiver.byte))
        row, codes = self.buffer[:16], self.buffer[16:16 + 2 * tail.lanes]
        above = self.buffer[16 + 2 * tail.lanes:]
        self.ok = Signal()
        m.d.sync += self.ok.eq((row < tail.rows) & ((above == 0) if len(above) else 1))
        port = link.weights
        m.d.comb += [port.addr.eq(row), port.data.eq(codes)]


class _BatchPayload:
    """BATCH: the vectors counted as the payload arrives (``whole``: the length is a whole
    number of vectors; :attr:`reply_length`), the results captured into the result store while
    the engine runs them (``capturing``, from the request's acceptance to the last result
    beat), a 32-bit cycle counter from the first input value taken to the last result beat
    (both counted), and the result store read back for the reply, an entry at a time."""

    def __init__(self, m, link, receiver, frame, results):
        self.m, self.results = m, results
        n, capacity = link.n_inputs, link.batch.capacity
        cw = index_bits(link.n_classes)
        self.pix = Signal(range(max(n, 2)))
        self.whole = Signal(init=1)
        self.images = Signal(range(capacity + 1))
        self.reply_length = Signal(16)
        with m.If(receiver.start):
            m.d.sync += [self.pix.eq(0), self.whole.eq(1), self.images.eq(0),
                         self.reply_length.eq(4)]
        with m.If(receiver.at_payload & frame.is_batch):
            wrap = self.pix == n - 1
            m.d.sync += [self.pix.eq(Mux(wrap, 0, self.pix + 1)), self.whole.eq(wrap)]
            with m.If(wrap):
                m.d.sync += [self.images.eq(self.images + 1),
                             self.reply_length.eq(self.reply_length
                                                  + link.info.infer_reply_length)]
        # the run: results captured, cycles counted
        self.capturing, self.armed, self.counting = Signal(), Signal(), Signal()
        self.cycles = Signal(32)
        self.left, self.left_one = Signal(range(capacity + 1)), Signal()
        self.waddr = Signal(range(max(capacity * link.n_classes, 2)))
        self.raddr = Signal.like(self.waddr)
        eo = link.engine_o
        with m.If(self.counting):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        captured = self.capturing & eo.valid
        m.d.comb += [results.we.eq(captured),
                     results.wdata.eq(Cat(eo.payload.score, eo.payload.cls, eo.payload.last)),
                     results.addr.eq(Mux(self.capturing, self.waddr, self.raddr))]
        with m.If(captured):
            m.d.sync += self.waddr.eq(self.waddr + 1)
            with m.If(eo.payload.last):
                self.next_vector()
                with m.If(self.left_one):
                    m.d.sync += [self.capturing.eq(0), self.counting.eq(0)]
        # the reply: each entry read in turn (one cycle) into the link's result registers
        self.asked = Signal()
        self.entry_layout = data.StructLayout({"score": signed(link.score_bits),
                                               "cls": unsigned(cw), "last": 1})

    def start(self):
        """The request is accepted: capture from now on, count from the first value taken."""
        self.m.d.sync += [self.capturing.eq(1), self.armed.eq(1), self.waddr.eq(0),
                          self.left.eq(self.images), self.left_one.eq(self.images == 1)]

    def fed(self):
        """An input value is taken (in FEED): the first one starts the counter."""
        with self.m.If(self.armed):
            self.m.d.sync += [self.armed.eq(0), self.counting.eq(1), self.cycles.eq(1)]

    def rewind(self):
        """The run is over: read the results back from the first."""
        self.m.d.sync += [self.raddr.eq(0), self.asked.eq(0),
                          self.left.eq(self.images), self.left_one.eq(self.images == 1)]

    def next_vector(self):
        self.m.d.sync += [self.left.eq(self.left - 1), self.left_one.eq(self.left == 2)]

    def fetch(self):
        """Read the entry at ``raddr`` (once: ``asked`` is high in the next cycle, with the
        entry on the store's output), then move to the next one. Returns the entry's view."""
        m = self.m
        m.d.comb += self.results.re.eq(~self.asked)
        m.d.sync += self.asked.eq(~self.asked)
        with m.If(self.asked):
            m.d.sync += self.raddr.eq(self.raddr + 1)
        return self.entry_layout(self.results.rdata)


class _UnitPayload:
    """The metaplastic unit's payloads: UPDATE and LOAD (group u16 LE, mask u8, one value per
    lane LE) and READ (row u16 LE, count u16 LE). The bytes shift in from the top of ``buffer``,
    so a payload ends up in its top bytes; the range checks (``group_ok``: group < groups, no
    mask bit above the lanes; ``read_ok``: 1 <= count, row + count <= rows, count <= 65535 //
    row_bytes) are registered every cycle, ready long before the CRC byte arrives."""

    def __init__(self, m, link, receiver, frame):
        unit, lengths = link.metaplastic, frame.lengths
        self.size = max(lengths["update"], lengths["load"])
        self.buffer = Signal(8 * self.size)
        with m.If(receiver.at_payload & (frame.is_group | frame.is_read)):
            m.d.sync += self.buffer.eq(Cat(self.buffer[8:], receiver.byte))
        pick = lambda start, width: Mux(frame.is_load, self.field(start, width, lengths["load"]),
                                        self.field(start, width, lengths["update"]))
        group, mask = pick(0, 16), pick(16, 8)
        self.group_ok = Signal()
        m.d.sync += self.group_ok.eq((group < unit.groups) & (mask >> unit.lanes == 0))
        beat = link.metaplastic_i.payload
        m.d.comb += [beat.addr.eq(group), beat.en.eq(mask),
                     beat.op.eq(Mux(frame.is_load, OP_LOAD, OP_UPDATE))]
        for p in range(unit.lanes):
            d = self.field(24 + p * unit.u_bits, unit.u_bits, lengths["update"]).as_signed()
            w = self.field(24 + p * unit.w_bits, unit.w_bits, lengths["load"]).as_signed()
            m.d.comb += beat.value[p].eq(Mux(frame.is_load, w, d))
        self.first_row = self.field(0, 16, lengths["read"])
        self.row_count = self.field(16, 16, lengths["read"])
        self.read_ok = Signal()
        end = Signal(17)
        m.d.comb += end.eq(self.first_row + self.row_count)
        m.d.sync += self.read_ok.eq((self.row_count != 0) & (end <= unit.rows)
                                    & (self.row_count <= 0xFFFF // unit.row_bytes))

    def field(self, start, width, n_payload):
        base = 8 * (self.size - n_payload) + start
        return self.buffer[base:base + width]


class _Requests:
    """Executing a checked request and handing its reply to the sender: INFER feeds the buffered
    inputs to the engine and sends its result beats as they come; ERRORS hands the configuration
    to the injector; UPDATE and LOAD hand a beat to the metaplastic unit and send its result;
    READ reads rows of the engine's memory and sends them; INFO sends the link's sizes."""

    def __init__(self, m, link, receiver, sender, frame, start):
        self.m, self.link, self.receiver, self.sender, self.frame = m, link, receiver, sender, frame
        self.start = start
        info = link.info
        self.info_bytes = protocol.encode_info(info)
        unit = link.metaplastic
        self.errors = _ErrorsPayload(m, link, receiver, frame) \
            if link.rate_bits is not None else None
        self.unit = _UnitPayload(m, link, receiver, frame) if unit is not None else None
        self.weights = _WeightsPayload(m, link, receiver, frame) \
            if link.weights_info is not None else None
        stores = link.stores()
        for name, store in stores.items():
            m.submodules[name] = store
        self.batch = _BatchPayload(m, link, receiver, frame, stores.get("results")) \
            if link.batch is not None else None
        n_reply = unit.reply_length if unit else 0
        n_row = unit.row_bytes if unit else 0
        # the body byte counter, with its end-of-count tests kept in registers (set a cycle
        # ahead with the counter) so that no comparison sits on the paths into the machine
        # the engine's result is wanted (its ``ready``): from the last input fed to the next beat
        self.want_result = Signal()
        self.want_store = Signal()              # a batch's next result beat, from its store
        self.idx = Signal(range(max(8, len(self.info_bytes), n_reply, n_row)))
        marks = (len(self.info_bytes) - 1, info.score_bytes - 1) + \
            ((n_reply - 1, n_row - 1) if unit else ()) + ((3,) if link.batch else ())
        self.idx_is = {k: Signal(init=k == 0, name=f"idx_is_{k}") for k in set(marks)}
        if unit is not None:                    # READ: the row being read and the rows left
            self.row = Signal(range(max(unit.rows, 2)))
            self.rows_left = Signal(16)
            self.row_last = Signal()            # rows_left == 1, kept in a register
        # the input buffer: the engine sees a payload only after its CRC checked
        buffer = stores["inputs"]
        ei = link.engine_i
        self.feed = ei.valid & ei.ready
        writing = receiver.at_payload & (frame.is_infer | frame.is_batch)
        # buffer[count] in FEED: read at count before FEED (so it is there when FEED begins),
        # then at count + 1 with the read enabled only by a feed (the word stays until then).
        # The engine's ready reaches the read's enable, not its address: with the buffer in
        # flip-flops the address feeds a wide multiplexer. count + 1 comes from a register,
        # `ahead`: it follows count a cycle late outside FEED (count is still for many cycles
        # before FEED, from the payload's last byte through the CRC) and steps with the feeds
        # in FEED, where count does the same. FEED's state bit alone picks the address: no
        # payload byte is written in FEED (the receiver is BUSY while a request executes).
        ahead = Signal.like(frame.count, init=1)
        m.d.sync += ahead.eq(Mux(ei.valid, ahead + self.feed, frame.count + 1))
        m.d.comb += [buffer.we.eq(writing), buffer.wdata.eq(receiver.byte),
                     buffer.re.eq(~ei.valid | ei.ready),
                     buffer.addr.eq(Mux(ei.valid, ahead, frame.count)),
                     ei.payload.eq(buffer.rdata)]

    def set_idx(self, zero):
        self.m.d.sync += self.idx.eq(0 if zero else self.idx + 1)
        self.m.d.sync += [flag.eq(k == 0 if zero else self.idx == k - 1)
                          for k, flag in self.idx_is.items()]

    def reply(self):
        """Start the reply to the frame's command (:meth:`header`)."""
        self.m.d.comb += self.start.eq(1)
        self.set_idx(zero=True)

    def header(self):
        """The reply's command and length, from the frame's flags (held from the frame's CMD
        until the next frame, so through the header), kept in registers: the sender reads them
        from the header's second byte on, at least two cycles after the frame's last byte."""
        m, frame, sender, unit = self.m, self.frame, self.sender, self.link.metaplastic
        d = m.d.sync
        with m.If(frame.is_infer):
            d += [sender.cmd.eq(Reply.INFER), sender.empty.eq(0),
                  sender.length.eq(self.link.info.infer_reply_length)]
        if self.batch is not None:
            with m.Elif(frame.is_batch):
                d += [sender.cmd.eq(Reply.BATCH), sender.empty.eq(0),
                      sender.length.eq(self.batch.reply_length)]
        if self.errors is not None:
            with m.Elif(frame.is_errors):
                d += [sender.cmd.eq(Reply.ERRORS), sender.empty.eq(1), sender.length.eq(0)]
        if unit is not None:
            with m.Elif(frame.is_group):
                d += [sender.cmd.eq(Mux(frame.is_load, MetaplasticReply.LOAD,
                                        MetaplasticReply.UPDATE)),
                      sender.empty.eq(0), sender.length.eq(unit.reply_length)]
            with m.Elif(frame.is_read):
                shift = (unit.row_bytes - 1).bit_length()
                d += [sender.cmd.eq(MetaplasticReply.READ), sender.empty.eq(0),
                      sender.length.eq(self.unit.row_count << shift)]
        if self.weights is not None:
            with m.Elif(frame.is_weights):
                d += [sender.cmd.eq(Reply.WEIGHTS), sender.empty.eq(1), sender.length.eq(0)]
        with m.Else():
            d += [sender.cmd.eq(Reply.INFO), sender.empty.eq(0),
                  sender.length.eq(len(self.info_bytes))]

    def send(self, data, last, then):
        """Offer ``data`` as a body byte (``last`` ends the body); ``then()`` once taken."""
        self.sender.offer(self.m, data, last, then)

    def execute(self):
        m, frame, receiver = self.m, self.frame, self.receiver
        unit = self.unit
        batch = self.batch
        fsm = OneHotFSM(m, ["IDLE", "FEED", "INFO", "CLASS", "SCORE"]
                        + (["GROUP", "GROUP_REPLY", "ROWS"] if unit is not None else [])
                        + (["WRITE"] if self.weights is not None else [])
                        + (["RUN", "CYCLES"] if batch else []),
                        init="IDLE", name="request")
        with fsm.State("IDLE"):
            with m.If(receiver.accepted & ~frame.direct):
                with m.If(frame.is_infer):
                    fsm.next("FEED")
                if batch is not None:
                    with m.Elif(frame.is_batch):
                        batch.start()
                        fsm.next("FEED")
                if unit is not None:
                    with m.Elif(frame.is_group):
                        fsm.next("GROUP")
                if self.weights is not None:
                    with m.Elif(frame.is_weights):
                        fsm.next("WRITE")
            with m.If(receiver.accepted & frame.direct):
                # INFO, ERRORS (no body: the sender ends the reply) or READ
                self.reply()
                is_info = Const(1)
                if self.errors is not None:
                    m.d.comb += self.link.errors.valid.eq(frame.is_errors)
                    is_info = ~frame.is_errors
                if unit is not None:
                    is_info &= ~frame.is_read
                    with m.If(frame.is_read):
                        m.d.sync += [self.row.eq(unit.first_row),
                                     self.rows_left.eq(unit.row_count),
                                     self.row_last.eq(unit.row_count == 1)]
                        fsm.next("ROWS")
                with m.If(is_info):
                    fsm.next("INFO")
        with fsm.State("FEED"):
            m.d.comb += self.link.engine_i.valid.eq(1)
            with m.If(self.feed):
                frame.set_count(zero=False)
                if batch is not None:
                    batch.fed()
                with m.If(frame.count_last):
                    frame.set_count(zero=True)
                    if batch is not None:
                        with m.If(frame.is_batch):
                            fsm.next("RUN")
                        with m.Else():
                            self.reply()
                            m.d.sync += self.want_result.eq(1)
                            fsm.next("CLASS")
                    else:
                        self.reply()
                        m.d.sync += self.want_result.eq(1)
                        fsm.next("CLASS")
        with fsm.State("INFO"):
            last = self.idx_is[len(self.info_bytes) - 1]

            def next_info():
                self.set_idx(zero=False)
                with m.If(last):
                    fsm.next("IDLE")
            self.send(Array(Const(b, 8) for b in self.info_bytes)[self.idx], last, next_info)
        self._result(fsm)
        if batch is not None:
            self._batch(fsm)
        if unit is not None:
            self._metaplastic(fsm)
        if self.weights is not None:
            with fsm.State("WRITE"):
                # The row is written in a cycle where the engine is idle, then acknowledged.
                with m.If(self.link.engine_idle):
                    m.d.comb += self.link.weights.en.eq(-1)
                    self.reply()
                    fsm.next("IDLE")
        return fsm

    def _result(self, fsm):
        """CLASS and SCORE: the result beats, held in registers, sent class first, then every
        score: the engine's, as they come (INFER), or a BATCH's from the result store, each
        vector's class first. The engine's ``ready`` is the register ``want_result`` alone (set
        when the inputs are fed and after each beat's last score byte) or, during a batch, the
        capture's, so no state decoding reaches the engine's handshake (it drives the score
        registers' clock enable)."""
        m, eo, sb, batch = self.m, self.link.engine_o, self.link.info.score_bytes, self.batch
        want = self.want_result
        score, cls, beat_last = Signal(signed(8 * sb)), Signal(8), Signal()
        final = beat_last                       # the beat ends the reply
        waiting = want                          # for the next beat
        if batch is None:
            m.d.comb += eo.ready.eq(want)
        else:
            # a batch's beats come from the result store, each wanted by ``want_store``
            from_store = self.frame.is_batch    # held from the frame's CMD to the next frame
            m.d.comb += eo.ready.eq(want | batch.capturing)
            waiting = want | self.want_store
            final = beat_last & (~from_store | batch.left_one)
            with m.If(self.want_store):
                entry = batch.fetch()
                with m.If(batch.asked):
                    m.d.sync += [self.want_store.eq(0), score.eq(entry.score),
                                 cls.eq(entry.cls), beat_last.eq(entry.last)]
        with m.If(want & eo.valid):
            m.d.sync += [want.eq(0), score.eq(eo.payload.score), cls.eq(eo.payload.cls),
                         beat_last.eq(eo.payload.last)]

        with fsm.State("CLASS"):
            with m.If(~waiting):
                def after_class():
                    self.set_idx(zero=True)
                    fsm.next("SCORE")
                self.send(cls, 0, after_class)
        with fsm.State("SCORE"):
            end = self.idx_is[sb - 1]
            with m.If(~waiting):
                def after_score():
                    self.set_idx(zero=False)
                    with m.If(end):
                        self.set_idx(zero=True)
                        with m.If(final):
                            fsm.next("IDLE")
                        with m.Else():
                            if batch is None:
                                m.d.sync += want.eq(1)
                            else:
                                with m.If(from_store):
                                    m.d.sync += self.want_store.eq(1)
                                with m.Else():
                                    m.d.sync += want.eq(1)
                                with m.If(beat_last):     # a batch's next vector
                                    batch.next_vector()
                                    fsm.next("CLASS")
                self.send(score.word_select(self.idx, 8), final & end, after_score)

    def _batch(self, fsm):
        """RUN and CYCLES: a BATCH's vectors run (fed from the input buffer in FEED, their
        results captured as they come), then its reply begins with the cycle count; CLASS and
        SCORE send each vector's class and scores from the result store (:meth:`_result`)."""
        m, batch = self.m, self.batch
        with fsm.State("RUN"):
            with m.If(~batch.capturing):
                self.reply()
                batch.rewind()
                fsm.next("CYCLES")
        with fsm.State("CYCLES"):
            def counted():
                self.set_idx(zero=False)
                with m.If(self.idx_is[3]):
                    self.set_idx(zero=True)
                    m.d.sync += self.want_store.eq(1)
                    fsm.next("CLASS")
            self.send(batch.cycles.word_select(self.idx[:2], 8), 0, counted)

    def _send_held(self, held, value, end, body_last, then):
        """Send the low byte of ``value`` (a reply field held in a register; ``held`` says it
        is) and shift it down; ``then()`` after the field's last byte (``end``, a registered
        end-of-count flag); ``body_last``: that byte ends the body."""
        m = self.m

        def next_byte():
            m.d.sync += value.eq(value >> 8)
            self.set_idx(zero=False)
            with m.If(end):
                then()
        with m.If(held):
            self.send(value[:8], body_last & end, next_byte)

    def _metaplastic(self, fsm):
        """GROUP, GROUP_REPLY and ROWS: the metaplastic unit's requests."""
        m, link, unit = self.m, self.link, self.link.metaplastic
        with fsm.State("GROUP"):
            # The beat is offered at once and held until the unit takes it.
            m.d.comb += link.metaplastic_i.valid.eq(1)
            with m.If(link.metaplastic_i.ready):
                self.reply()
                fsm.next("GROUP_REPLY")
        hidden, hidden_held = Signal(unit.lanes * unit.w_bits), Signal()
        with fsm.State("GROUP_REPLY"):
            with m.If(~hidden_held):
                m.d.comb += link.metaplastic_o.ready.eq(1)
                with m.If(link.metaplastic_o.valid):
                    m.d.sync += [hidden_held.eq(1), hidden.eq(link.metaplastic_o.payload.as_value())]

            def group_done():
                m.d.sync += hidden_held.eq(0)
                fsm.next("IDLE")
            self._send_held(hidden_held, hidden, self.idx_is[unit.reply_length - 1], 1,
                            group_done)
        row_codes, row_held, row_asked = Signal(2 * unit.engine_lanes), Signal(), Signal()
        with fsm.State("ROWS"):
            # Read a row (the engine is idle: no request is in flight), then send its bytes.
            with m.If(~row_held):
                m.d.comb += [link.pairs.addr.eq(self.row), link.pairs.en.eq(~row_asked)]
                m.d.sync += row_asked.eq(1)
                with m.If(link.pairs.valid):
                    m.d.sync += [row_held.eq(1), row_codes.eq(link.pairs.data.as_value())]

            def row_done():
                self.set_idx(zero=True)
                m.d.sync += [row_held.eq(0), row_asked.eq(0), self.row.eq(self.row + 1),
                             self.rows_left.eq(self.rows_left - 1),
                             self.row_last.eq(self.rows_left == 2)]
                with m.If(self.row_last):
                    fsm.next("IDLE")
            self._send_held(row_held, row_codes, self.idx_is[unit.row_bytes - 1], self.row_last,
                            row_done)
