"""The engine's command set (protocol version 2): INFO, INFER and the read-error injector's
ERRORS, on the shared framing (:mod:`nmflow.protocol.framing`); a board with the metaplastic unit
adds :mod:`nmflow.protocol.metaplastic` (version 4). The specification is docs/contracts.md,
section 5; this module and its twin :class:`LinkModel` follow it byte for byte.

:class:`nmflow.rtl.hostlink.HostLink` implements it in gateware,
:class:`nmflow.boards.host.EngineLink` speaks it from the host, and :class:`LinkModel` is its
plain-Python twin, which the tests compare with the gateware's reply bytes using ``==``. The
commands and reply commands are :mod:`amaranth.lib.enum` enumerations with an 8-bit shape, so the
same members are Python ints on the host and constants in the gateware.

Requests and replies::

    CMD   name    LEN        PAYLOAD                                 reply (CMD | 0x80)
    0x01  INFO    0          -                                       Info (8 bytes; 17 with the
                                                                     metaplastic unit)
    0x02  INFER   n_inputs   one byte per input, < 2**input_bits     class, then every score
    0x03  ERRORS  17         t1, t2, t3, seed (u32 LE), mode (u8)    - (applied)
    0x07  WEIGHTS 2 + rb     row (u16 LE), the row's pair codes      - (written)
    0x08  BATCH   k*n_inputs k input vectors, one byte per input     cycles (u32 LE), then each
                                                                     vector's class and scores

ERRORS exists on boards built with the read-error injector (INFO's ``rate_bits`` is not 0): the
injector then holds ``t1``, ``t12 = t1 + t2`` and ``t3`` (fractions of ``2**rate_bits``) and its
sources restart from ``seed``, so the next inference draws exactly as a fresh
:class:`~nmflow.golden.injector.InjectedRead` of the same configuration.

WEIGHTS exists on boards whose weight memory is written at run time (SPRAM on the iCE40UP5K,
which the bitstream cannot initialise): INFO then reports version :data:`WEIGHTS_VERSION` with the
memory's ``rows``, ``lanes`` and ``pe`` (:class:`WeightsInfo`), and the host writes every row before the
first INFER. A row's ``rb = ceil(lanes / 4)`` bytes hold lane ``p``'s pair code at bits
``2p + 1 : 2p`` (little-endian), the layout of :func:`nmflow.golden.pairs.pack_rows`.

BATCH exists on boards built with a batch memory (INFO version :data:`BATCH_VERSION`, whose
:class:`BatchInfo` gives its ``capacity`` in vectors): the board stores the ``k`` vectors of the
payload (``1 <= k <= capacity``; a length outside ``n_inputs .. capacity * n_inputs`` is
``BAD_LENGTH``, one that is not a multiple of ``n_inputs`` ``BAD_VALUE`` after the CRC), runs them
through the engine back to back at the engine's clock, and replies with the cycles from the first
input value the engine took to the last result beat it gave (both counted, so one inference alone
takes the engine's ``cycles_per_inference``), then each vector's INFER reply payload in order.
The board thus measures the engine's own rate, which the link (far slower) cannot show.

INFO versions: 2 (the engine's commands), 4 (with the metaplastic unit's tail), 5 (with the
run-time weights' tail), and :data:`BATCH_VERSION` for a board with a batch memory: the 8 bytes
of version 2, a byte of :data:`FEATURES` flags, then the tail of each feature present, in the
order of the flags (metaplastic, weights, batch).
"""

from dataclasses import dataclass

from amaranth.lib import enum

from ..errors import NmflowError
from .framing import ErrorCode, FrameModel, encode_frame, reply_enum, signed_words, u16
from .metaplastic import (METAPLASTIC_INFO_BYTES, METAPLASTIC_VERSION, MetaplasticCommand,
                          MetaplasticInfo, MetaplasticReply, decode_group, encode_hidden,
                          encode_rows)

__all__ = ["VERSION", "Command", "Reply", "Info", "INFO_BYTES", "MAX_CLASSES", "MAX_INPUTS",
           "MAX_SCORE_BITS", "score_bytes", "info_request", "infer_request", "info_reply",
           "infer_reply", "encode_info", "decode_info", "encode_result", "decode_result",
           "LinkModel", "ErrorsConfig", "ERRORS_BYTES", "MODES", "SEED_BITS", "encode_errors",
           "decode_errors", "errors_request", "errors_reply", "WEIGHTS_VERSION",
           "WEIGHTS_INFO_BYTES", "WeightsInfo", "encode_weight_row", "weights_request",
           "weights_reply", "BATCH_VERSION", "FEATURES", "BatchInfo", "link_version",
           "batch_request", "encode_batch", "decode_batch", "batch_reply", "MAX_CYCLES"]

#: Protocol version reported by INFO (a board with the metaplastic unit reports
#: :data:`~nmflow.protocol.metaplastic.METAPLASTIC_VERSION`).
VERSION = 2
#: Payload bytes of an INFO reply.
INFO_BYTES = 8
#: Protocol version reported by a board whose weight memory is written at run time (the engine's
#: version 2 plus WEIGHTS and the INFO tail of :class:`WeightsInfo`), and its INFO payload bytes.
WEIGHTS_VERSION = 5
WEIGHTS_INFO_BYTES = INFO_BYTES + 5
#: Protocol version reported by a board with a batch memory (BATCH); its INFO payload is the
#: version 2 bytes, a byte of :data:`FEATURES` flags and the tail of each feature present.
BATCH_VERSION = 6
#: The features of a version 6 INFO reply, by their flag bit (bit 0 first), in the order their
#: tails follow the flags byte.
FEATURES = ("metaplastic", "weights", "batch")
#: The largest cycle count a BATCH reply carries (u32); the board's counter wraps beyond it.
MAX_CYCLES = 0xFFFFFFFF
#: Payload bytes of an ERRORS request: t1, t2, t3, seed (u32 LE each) and mode (u8).
ERRORS_BYTES = 17
#: ERRORS modes, by their byte value.
MODES = ("per_read", "static")
#: Bits of the injector's seed.
SEED_BITS = 31
#: Limits of the link: the class travels in one byte, lengths in two, scores in at most 8 bytes.
MAX_CLASSES = 256
MAX_INPUTS = 0xFFFF
MAX_SCORE_BITS = 64


class Command(enum.IntEnum, shape=8):
    """The engine's requests (host to board); the metaplastic unit's are
    :class:`~nmflow.protocol.metaplastic.MetaplasticCommand`."""
    INFO = 0x01
    INFER = 0x02
    ERRORS = 0x03
    WEIGHTS = 0x07
    BATCH = 0x08


#: Reply commands (board to host): a request's command with bit 7 set, or ``ERROR``.
Reply = reply_enum("Reply", Command, error=True, module=__name__)


def score_bytes(score_bits):
    """Bytes per score on the link: ``ceil(score_bits / 8)``, sign-extended two's complement."""
    return (score_bits + 7) // 8


@dataclass(frozen=True)
class WeightsInfo:
    """What a board whose weights are written at run time tells in the tail of its INFO reply.

    Members
    -------
    rows : int
        Rows of the weight memory, 1 to 65535 (WEIGHTS addresses ``0 .. rows - 1``).
    lanes : int
        Pair codes per row, 1 to 1024.
    pe : int
        Neurons per row (the memory map's layout, :class:`~nmflow.golden.pairs.MemoryMap`), 1
        to 255.
    """
    rows: int
    lanes: int
    pe: int = 1

    @property
    def row_bytes(self):
        """Bytes of a row on the link: ``ceil(lanes / 4)``."""
        return -(-self.lanes // 4)

    @property
    def length(self):
        """Payload bytes of a WEIGHTS request."""
        return 2 + self.row_bytes

    def problem(self):
        """Why this cannot be a link's tail (one line), or ``None``."""
        if not 1 <= self.rows <= 0xFFFF:
            return f"weight rows must be 1 to 65535 on the link, not {self.rows}"
        if not 1 <= self.lanes <= 1024:
            return f"weight lanes must be 1 to 1024 on the link, not {self.lanes}"
        if not 1 <= self.pe <= 255:
            return f"weight pe must be 1 to 255 on the link, not {self.pe}"
        return None

    def encode(self):
        return (self.rows.to_bytes(2, "little") + self.lanes.to_bytes(2, "little")
                + bytes([self.pe]))


def encode_weight_row(lanes, codes):
    """A row of ``lanes`` pair codes (0 to 3) as the ``ceil(lanes / 4)`` bytes of WEIGHTS."""
    codes = list(codes)
    if len(codes) != lanes:
        raise NmflowError(f"a weight row must hold lanes = {lanes} pair codes, not {len(codes)}")
    word = 0
    for p, code in enumerate(codes):
        word |= (int(code) & 3) << (2 * p)
    return word.to_bytes(-(-lanes // 4), "little")


def weights_request(row, lanes, codes):
    """A WEIGHTS request writing ``codes`` (``lanes`` pair codes) into row ``row``."""
    return encode_frame(Command.WEIGHTS, int(row).to_bytes(2, "little")
                        + encode_weight_row(lanes, codes))


def weights_reply():
    """The WEIGHTS reply frame (the acknowledgement, empty payload)."""
    return encode_frame(Reply.WEIGHTS)


@dataclass(frozen=True)
class BatchInfo:
    """What a board with a batch memory tells in the tail of its INFO reply (version 6).

    Members
    -------
    capacity : int
        Input vectors a BATCH request may carry, 1 to 65535 (the board also needs
        ``capacity * n_inputs`` and the reply, ``4 + capacity * (1 + n_classes * score_bytes)``
        bytes, within a frame's 65535: :meth:`problem`).
    clock_hz : int
        The engine's clock in Hz (what a BATCH reply's cycles count), 1 to 2**32 - 1: the host
        turns the cycles into seconds with it.
    """
    capacity: int
    clock_hz: int = 1

    def seconds(self, cycles):
        """``cycles`` of the engine's clock in seconds."""
        return cycles / self.clock_hz

    def problem(self, n_inputs=1, reply_length=1):
        """Why a link of ``n_inputs`` inputs and INFER replies of ``reply_length`` bytes cannot
        carry batches of this capacity (one line), or ``None``."""
        if not 1 <= self.capacity <= 0xFFFF:
            return f"batch capacity must be 1 to 65535 vectors, not {self.capacity}"
        if not 1 <= self.clock_hz <= MAX_CYCLES:
            return f"batch clock_hz must be 1 to {MAX_CYCLES} Hz, not {self.clock_hz}"
        if self.capacity * n_inputs > 0xFFFF:
            return (f"batch capacity must be at most 65535 // n_inputs = {0xFFFF // n_inputs} "
                    f"vectors (a request's payload), not {self.capacity}")
        if 4 + self.capacity * reply_length > 0xFFFF:
            return (f"batch capacity must be at most (65535 - 4) // {reply_length} = "
                    f"{(0xFFFF - 4) // reply_length} vectors (a reply's payload), not "
                    f"{self.capacity}")
        return None

    def encode(self):
        return self.capacity.to_bytes(2, "little") + self.clock_hz.to_bytes(4, "little")


def link_version(metaplastic=None, weights=None, batch=None):
    """The INFO version of a link with these features: 6 with a batch memory, else 4 with the
    metaplastic unit, 5 with run-time weights, 2 with neither."""
    if batch is not None:
        return BATCH_VERSION
    if metaplastic is not None:
        return METAPLASTIC_VERSION
    return WEIGHTS_VERSION if weights is not None else VERSION


@dataclass(frozen=True)
class Info:
    """What an INFO reply tells: the protocol version and the engine's sizes.

    Members
    -------
    version : int
        :data:`VERSION`, or :data:`~nmflow.protocol.metaplastic.METAPLASTIC_VERSION` for a board with the metaplastic unit.
    n_inputs : int
        Input values per inference (the INFER payload length).
    n_classes : int
        Scores per inference.
    input_bits : int
        Each input value is below ``2 ** input_bits``.
    score_bytes : int
        Bytes per score in an INFER reply.
    rate_bits : int
        Fraction bits of the read-error injector's rates, 0 if the board has no injector (and
        refuses ERRORS).
    metaplastic : :class:`~nmflow.protocol.metaplastic.MetaplasticInfo` or None
        The metaplastic unit's sizes, ``None`` if the board has no unit (and refuses UPDATE,
        LOAD and READ).
    weights : :class:`WeightsInfo` or None
        The weight memory's rows and lanes if the board's weights are written at run time (it
        then accepts WEIGHTS, and every row must be written before the first INFER), ``None``
        if they come with the bitstream (WEIGHTS refused).
    batch : :class:`BatchInfo` or None
        The batch memory's capacity if the board has one (it then accepts BATCH), ``None`` if
        not (BATCH refused).
    """
    version: int
    n_inputs: int
    n_classes: int
    input_bits: int
    score_bytes: int
    rate_bits: int = 0
    metaplastic: MetaplasticInfo = None
    weights: WeightsInfo = None
    batch: BatchInfo = None

    @property
    def infer_reply_length(self):
        """Payload bytes of an INFER reply: the class and every score."""
        return 1 + self.n_classes * self.score_bytes


def encode_info(info):
    """INFO reply payload: ``version, n_inputs (u16 LE), n_classes (u16 LE), input_bits,
    score_bytes, rate_bits``, then, with a metaplastic unit, ``lanes, groups (u16 LE), w_bits,
    w_frac, u_bits, u_frac, engine_lanes (u16 LE), engine_pe``; with run-time weights, ``rows
    (u16 LE), lanes (u16 LE), pe``; at version 6 the :data:`FEATURES` flags come first, and
    with a batch memory ``capacity (u16 LE), clock_hz (u32 LE)`` last."""
    out = (bytes([info.version]) + info.n_inputs.to_bytes(2, "little")
           + info.n_classes.to_bytes(2, "little")
           + bytes([info.input_bits, info.score_bytes, info.rate_bits]))
    if info.version == BATCH_VERSION:
        out += bytes([sum(1 << k for k, name in enumerate(FEATURES)
                          if getattr(info, name) is not None)])
    if info.metaplastic is not None:
        out += info.metaplastic.encode()
    if info.weights is not None:
        out += info.weights.encode()
    if info.batch is not None:
        out += info.batch.encode()
    return out


def decode_info(payload):
    """The :class:`Info` of an INFO reply payload: 8 bytes, 18 for version 4 (metaplastic
    unit), 13 for version 5 (weights written at run time), 9 plus the tails its flags name for
    version 6 (batch memory); :class:`NmflowError` otherwise."""
    payload = bytes(payload)
    version = payload[0] if payload else None
    if version == BATCH_VERSION:
        return _decode_features(payload)
    expected = {METAPLASTIC_VERSION: METAPLASTIC_INFO_BYTES,
                WEIGHTS_VERSION: WEIGHTS_INFO_BYTES}.get(version, INFO_BYTES)
    if len(payload) != expected:
        what = f"of version {version} " if expected != INFO_BYTES else ""
        raise NmflowError(f"INFO reply payload {what}must hold {expected} bytes, not "
                          f"{len(payload)}")
    tail = MetaplasticInfo.decode(payload[INFO_BYTES:]) \
        if version == METAPLASTIC_VERSION else None
    weights = _decode_weights(payload, INFO_BYTES) if version == WEIGHTS_VERSION else None
    return _base_info(payload, metaplastic=tail, weights=weights)


def _base_info(payload, **tails):
    return Info(version=payload[0], n_inputs=u16(payload, 1), n_classes=u16(payload, 3),
                input_bits=payload[5], score_bytes=payload[6], rate_bits=payload[7], **tails)


def _decode_weights(payload, at):
    return WeightsInfo(u16(payload, at), u16(payload, at + 2), payload[at + 4])


#: Bytes of each feature's INFO tail at version 6.
_TAIL_BYTES = {"metaplastic": METAPLASTIC_INFO_BYTES - INFO_BYTES,
               "weights": WEIGHTS_INFO_BYTES - INFO_BYTES, "batch": 6}


def _decode_features(payload):
    """A version 6 INFO payload: the flags byte, then the tails it names."""
    if len(payload) <= INFO_BYTES:
        raise NmflowError(f"INFO reply payload of version {BATCH_VERSION} must hold at least "
                          f"{INFO_BYTES + 1} bytes, not {len(payload)}")
    flags = payload[INFO_BYTES]
    if flags >> len(FEATURES) or not flags & 4:
        raise NmflowError(f"INFO reply of version {BATCH_VERSION} must flag the batch memory "
                          f"(bit 2) and no bit above {len(FEATURES) - 1}, not flags {flags:#04x}")
    present = [name for k, name in enumerate(FEATURES) if flags >> k & 1]
    expected = INFO_BYTES + 1 + sum(_TAIL_BYTES[name] for name in present)
    if len(payload) != expected:
        raise NmflowError(f"INFO reply payload of version {BATCH_VERSION} with flags "
                          f"{flags:#04x} must hold {expected} bytes, not {len(payload)}")
    tails, at = {}, INFO_BYTES + 1
    for name in present:
        chunk = payload[at:at + _TAIL_BYTES[name]]
        tails[name] = (MetaplasticInfo.decode(chunk) if name == "metaplastic"
                       else _decode_weights(payload, at) if name == "weights"
                       else BatchInfo(u16(payload, at),
                                      int.from_bytes(payload[at + 2:at + 6], "little")))
        at += _TAIL_BYTES[name]
    return _base_info(payload, **tails)


@dataclass(frozen=True)
class ErrorsConfig:
    """The payload of an ERRORS request: thresholds ``t1``, ``t2``, ``t3`` (fractions of
    ``2**rate_bits``), ``seed`` and ``mode`` (0 ``per_read``, 1 ``static``), as integers (not
    range-checked here: see :meth:`problem`)."""
    t1: int
    t2: int
    t3: int
    seed: int
    mode: int = 0

    def problem(self, rate_bits):
        """Why a board with ``rate_bits`` refuses this configuration (BAD_VALUE), or ``None``."""
        one = 1 << rate_bits
        for name in ("t1", "t2", "t3"):
            if getattr(self, name) > one:
                return f"{name} must be at most 2**rate_bits = {one}, not {getattr(self, name)}"
        if self.t1 + self.t2 > one:
            return f"t1 + t2 must be at most 2**rate_bits = {one}, not {self.t1 + self.t2}"
        if self.seed >> SEED_BITS:
            return f"seed must be below 2**{SEED_BITS}, not {self.seed}"
        if self.mode >= len(MODES):
            return f"mode must be 0 (per_read) or 1 (static), not {self.mode}"
        return None


def encode_errors(config):
    """ERRORS request payload: ``t1, t2, t3, seed`` (u32 LE each), ``mode`` (u8)."""
    return (b"".join(int(getattr(config, f)).to_bytes(4, "little")
                     for f in ("t1", "t2", "t3", "seed")) + bytes([config.mode]))


def decode_errors(payload):
    """The :class:`ErrorsConfig` of an ERRORS payload; :class:`NmflowError` if not 17 bytes."""
    payload = bytes(payload)
    if len(payload) != ERRORS_BYTES:
        raise NmflowError(f"ERRORS payload must hold {ERRORS_BYTES} bytes, not {len(payload)}")
    t1, t2, t3, seed = (int.from_bytes(payload[4 * k:4 * k + 4], "little") for k in range(4))
    return ErrorsConfig(t1, t2, t3, seed, payload[16])


def encode_result(cls, scores, n_bytes):
    """INFER reply payload: the class (one byte), then each score as ``n_bytes`` little-endian
    two's complement bytes."""
    return bytes([cls]) + b"".join(int(s).to_bytes(n_bytes, "little", signed=True)
                                   for s in scores)


def decode_result(payload, n_classes, n_bytes):
    """``(cls, scores)`` of an INFER reply payload (scores as a list of Python ints)."""
    payload = bytes(payload)
    expected = 1 + n_classes * n_bytes
    if len(payload) != expected:
        raise NmflowError(f"INFER reply payload must hold {expected} bytes, not {len(payload)}")
    return payload[0], signed_words(payload, n_bytes, n_classes, offset=1)


def encode_batch(cycles, results, n_bytes):
    """BATCH reply payload: ``cycles`` (u32 LE), then each ``(cls, scores)`` of ``results`` as
    an INFER reply payload (:func:`encode_result`)."""
    return (int(cycles).to_bytes(4, "little")
            + b"".join(encode_result(cls, scores, n_bytes) for cls, scores in results))


def decode_batch(payload, n_classes, n_bytes):
    """``(cycles, [(cls, scores), ...])`` of a BATCH reply payload."""
    payload = bytes(payload)
    each = 1 + n_classes * n_bytes
    if len(payload) < 4 + each or (len(payload) - 4) % each:
        raise NmflowError(f"BATCH reply payload must hold 4 + k * {each} bytes for k >= 1 "
                          f"vectors, not {len(payload)}")
    results = [decode_result(payload[at:at + each], n_classes, n_bytes)
               for at in range(4, len(payload), each)]
    return int.from_bytes(payload[:4], "little"), results


def batch_request(vectors):
    """A BATCH request carrying ``vectors`` (each a sequence of input values, one byte each,
    not range-checked here), back to back."""
    return encode_frame(Command.BATCH, b"".join(bytes(int(v) for v in vector)
                                                for vector in vectors))


def batch_reply(cycles, results, n_bytes):
    """The BATCH reply frame for a cycle count and each vector's ``(cls, scores)``."""
    return encode_frame(Reply.BATCH, encode_batch(cycles, results, n_bytes))


def info_request():
    """An INFO request frame."""
    return encode_frame(Command.INFO)


def infer_request(values):
    """An INFER request carrying ``values`` (one byte each, not range-checked here)."""
    return encode_frame(Command.INFER, bytes(int(v) for v in values))


def errors_request(config):
    """An ERRORS request carrying an :class:`ErrorsConfig`."""
    return encode_frame(Command.ERRORS, encode_errors(config))


def errors_reply():
    """The ERRORS reply frame (the acknowledgement, empty payload)."""
    return encode_frame(Reply.ERRORS)


def info_reply(info):
    """The INFO reply frame for an :class:`Info`."""
    return encode_frame(Reply.INFO, encode_info(info))


def infer_reply(cls, scores, n_bytes):
    """The INFER reply frame for a class and its scores, ``n_bytes`` bytes per score."""
    return encode_frame(Reply.INFER, encode_result(cls, scores, n_bytes))


class LinkModel(FrameModel):
    """What :class:`~nmflow.rtl.hostlink.HostLink` answers, burst by burst (the receiver rules
    of :class:`~nmflow.protocol.framing.FrameModel`) for the engine's command set, with the
    read-error injector's and the metaplastic unit's commands when the board has them.

    Parameters
    ----------
    n_inputs, input_bits, n_classes, score_bits : int
        The engine's sizes, as given to ``HostLink``.
    infer : callable
        ``infer(values) -> (cls, scores)`` for a list of ``n_inputs`` ints: the engine's result
        (e.g. from :func:`nmflow.golden.reference.reference`).
    rate_bits : int
        The injector's ``rate_bits``, 0 (the default) for a link without injector, which refuses
        ERRORS with ``BAD_COMMAND``.
    configure : callable or None
        ``configure(config)`` is called with the :class:`ErrorsConfig` of each accepted ERRORS
        request, before its reply: the twin's ``infer`` should read with the injector's golden
        twin made afresh from it (:class:`~nmflow.golden.injector.InjectedRead`).
    metaplastic : :class:`~nmflow.protocol.metaplastic.MetaplasticInfo` or None
        The metaplastic unit's sizes: the link then reports version 4 with the INFO tail and
        accepts UPDATE, LOAD and READ; ``None`` (the default) refuses them with ``BAD_COMMAND``.
    apply : callable or None
        ``apply(command, group, mask, values) -> hidden`` for each accepted UPDATE or LOAD
        (``command`` a :class:`~nmflow.protocol.metaplastic.MetaplasticCommand`, ``values`` a
        list of ``lanes`` ints): the group's hidden weights after it (e.g. from
        :class:`~nmflow.golden.metafixed.MetaFixedRule`).
    read : callable or None
        ``read(row, count) -> codes`` for each accepted READ: ``count`` rows of
        ``engine_lanes`` pair codes of the engine's memory as it is then.
    weights : :class:`WeightsInfo` or None
        The weight memory's sizes if it is written at run time: the link then reports version
        5 with the INFO tail and accepts WEIGHTS; ``None`` (the default) refuses it.
    write : callable or None
        ``write(row, codes)`` for each accepted WEIGHTS (``codes`` a list of ``lanes`` pair
        codes), before its reply.
    batch : :class:`BatchInfo` or None
        The batch memory's capacity: the link then reports version 6 and accepts BATCH;
        ``None`` (the default) refuses it.
    cycles : callable or None
        ``cycles(k) -> int``: the cycles a batch of ``k`` vectors takes on the engine (its
        plan's figures, :meth:`~nmflow.golden.plan.EnginePlan.batch_cycles`), reported in each
        BATCH reply (modulo ``2**32``, as the board's 32-bit counter); each vector's result comes from ``infer``.
    """

    def __init__(self, n_inputs, input_bits, n_classes, score_bits, infer, *, rate_bits=0,
                 configure=None, metaplastic=None, apply=None, read=None, weights=None,
                 write=None, batch=None, cycles=None):
        if metaplastic is not None and weights is not None:
            raise NmflowError("a link has either the metaplastic unit or run-time weights, "
                              "not both")
        self.info = Info(link_version(metaplastic, weights, batch), n_inputs, n_classes,
                         input_bits, score_bytes(score_bits), rate_bits, metaplastic, weights,
                         batch)
        self._cycles = cycles
        self._write = write
        #: Every accepted WEIGHTS so far, in order: ``(row, codes)``.
        self.written = []
        self._infer = infer
        self._configure = configure
        self._apply = apply
        self._read = read
        #: Every input vector handed to the engine so far, in order.
        self.fed = []
        #: Every ERRORS configuration applied so far, in order.
        self.configured = []
        #: Every accepted UPDATE or LOAD so far, in order: ``(command, group, mask, values)``.
        self.applied = []

    def accepts(self, command):
        if command in (Command.INFO, Command.INFER):
            return True
        if command == Command.ERRORS:
            return bool(self.info.rate_bits)
        if command == Command.WEIGHTS:
            return self.info.weights is not None
        if command == Command.BATCH:
            return self.info.batch is not None
        return self.info.metaplastic is not None and command in set(MetaplasticCommand)

    def length_ok(self, command, length):
        info = self.info
        if command in set(MetaplasticCommand):
            return length == info.metaplastic.length(command)
        if command == Command.BATCH:
            return info.n_inputs <= length <= info.batch.capacity * info.n_inputs
        return length == {Command.INFO: 0, Command.INFER: info.n_inputs,
                          Command.ERRORS: ERRORS_BYTES,
                          Command.WEIGHTS: info.weights and info.weights.length}[command]

    def byte_ok(self, command, index, value):
        return command not in (Command.INFER, Command.BATCH) \
            or not value >> self.info.input_bits

    def execute(self, command, payload):
        info = self.info
        if command == Command.INFO:
            return Reply.INFO, encode_info(info)
        if command == Command.ERRORS:
            config = decode_errors(payload)
            if config.problem(info.rate_bits) is not None:
                return ErrorCode.BAD_VALUE
            self.configured.append(config)
            if self._configure is not None:
                self._configure(config)
            return Reply.ERRORS, b""
        if command == Command.WEIGHTS:
            tail = info.weights
            row, word = u16(payload, 0), int.from_bytes(payload[2:], "little")
            if row >= tail.rows or word >> (2 * tail.lanes):
                return ErrorCode.BAD_VALUE
            codes = [(word >> (2 * p)) & 3 for p in range(tail.lanes)]
            self.written.append((row, codes))
            if self._write is not None:
                self._write(row, codes)
            return Reply.WEIGHTS, b""
        if command == Command.INFER:
            values = list(payload)
            self.fed.append(values)
            cls, scores = self._infer(values)
            return Reply.INFER, encode_result(cls, scores, info.score_bytes)
        if command == Command.BATCH:
            n = info.n_inputs
            if len(payload) % n:
                return ErrorCode.BAD_VALUE
            vectors = [list(payload[at:at + n]) for at in range(0, len(payload), n)]
            results = []
            for values in vectors:
                self.fed.append(values)
                results.append(self._infer(values))
            cycles = int(self._cycles(len(vectors))) & MAX_CYCLES     # the board's counter wraps
            return Reply.BATCH, encode_batch(cycles, results, info.score_bytes)
        return self._execute_metaplastic(MetaplasticCommand(command), payload)

    def _execute_metaplastic(self, command, payload):
        unit = self.info.metaplastic
        if command == MetaplasticCommand.READ:
            row, count = u16(payload, 0), u16(payload, 2)
            if unit.read_problem(row, count) is not None:
                return ErrorCode.BAD_VALUE
            return MetaplasticReply.READ, encode_rows(unit, self._read(row, count))
        group, mask, values = decode_group(unit, command, payload)
        if group >= unit.groups or mask >> unit.lanes:
            return ErrorCode.BAD_VALUE
        hidden = self._apply(command, group, mask, values)
        self.applied.append((command, group, mask, values))
        return MetaplasticReply(command | 0x80), encode_hidden(unit, hidden)
