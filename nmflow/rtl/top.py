# amaranth: UnusedElaboratable=no
"""The platform-free host tops: a unit's link behind a UART and two pins.

:class:`UARTTop` is the one wrapper every unit's top is: any link core with byte streams ``rx``
and ``tx`` (and the status outputs ``idle`` and ``receiving``) behind a UART receiver and
transmitter, for a clock, a baud rate and a timeout (:func:`uart_timing`). :class:`HostTop` wraps
the engine's core (:class:`HostCore`: inference engine, host link, the optional read-error
injector and metaplastic unit); :class:`~nmflow.rtl.eqprop_link.EqPropHostTop` wraps the EqProp
unit's link.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.hwmodel import HardwareModel
from ..golden.plan import WEIGHT_KINDS, EnginePlan, check_pe
from ..errors import NmflowError, check_choice, check_number
from ..protocol import BatchInfo, Info, MetaplasticInfo, WeightsInfo, link_version, score_bytes
from ..protocol.framing import BAUD
from .engine import InferenceEngine
from .hostlink import HostLink, check_parameters
from .lanes import check_lanes
from .pipe import StreamRegister
from .store import STORE_KINDS
from .uart import UARTRx, UARTTx

__all__ = ["UARTTop", "HostCore", "HostTop", "check_host_top", "batch_info", "uart_divisor", "uart_timing",
           "BAUD_TOLERANCE", "MIN_TIMEOUT_CHARS"]

#: Largest relative baud error accepted between the requested and the generated baud rate.
BAUD_TOLERANCE = 0.02
#: Smallest inter-byte timeout, in character times (10 bits each).
MIN_TIMEOUT_CHARS = 2


def _num(value):
    """``value`` for a message: integral floats without their ``.0``."""
    return int(value) if float(value).is_integer() else value


def uart_divisor(clk_freq, baud):
    """Clock cycles per bit, ``round(clk_freq / baud)``, checked against :data:`BAUD_TOLERANCE`.

    Raises
    ------
    NmflowError
        If either rate is not a positive number, a bit would last fewer than 4 cycles, or the
        generated baud rate ``clk_freq / divisor`` is more than 2 % away from ``baud``.
    """
    check_number("clk_freq", clk_freq, above=0, unit="hertz")
    check_number("baud", baud, above=0, unit="bits per second")
    divisor = round(clk_freq / baud)
    if divisor < 4:
        raise NmflowError(f"baud must be at most clk_freq / 4 = {_num(clk_freq / 4)} (4 cycles per "
                         f"bit), not {_num(baud)} at clk_freq {_num(clk_freq)}")
    actual = clk_freq / divisor
    error = abs(actual - baud) / baud
    if error > BAUD_TOLERANCE:
        raise NmflowError(f"baud {_num(baud)} is out of reach from clk_freq {_num(clk_freq)}: "
                         f"the nearest divisor {divisor} gives {actual:.0f} baud, {error:.1%} off "
                         f"(the limit is {BAUD_TOLERANCE:.0%})")
    return divisor


def uart_timing(clk_freq, baud, timeout):
    """``(divisor, timeout_cycles)`` of a UART link at ``baud`` on a ``clk_freq`` clock with an
    inter-byte ``timeout`` in seconds.

    Raises
    ------
    NmflowError
        As :func:`uart_divisor`, or if ``timeout`` is not a positive number of seconds of at least
        :data:`MIN_TIMEOUT_CHARS` character times.
    """
    divisor = uart_divisor(clk_freq, baud)
    check_number("timeout", timeout, above=0, unit="seconds")
    timeout_cycles = round(timeout * clk_freq)
    minimum = MIN_TIMEOUT_CHARS * 10 * divisor
    if timeout_cycles < minimum:
        raise NmflowError(f"timeout must be at least {MIN_TIMEOUT_CHARS} character times "
                         f"({minimum / clk_freq:g} s at baud {_num(baud)}), not {timeout!r}")
    return divisor, timeout_cycles


def check_host_top(model, *, lanes=16, pe=1, first_layer_bits=None, clk_freq, baud=BAUD,
                   timeout=0.02, memory="block", batch=None, batch_memory="block"):
    """Check the parameters of :class:`HostTop` without building it.

    Returns
    -------
    (divisor, timeout_cycles) : (int, int)

    Raises
    ------
    TypeError, NmflowError
        Naming the first parameter that is wrong, its rule and its value.
    """
    if not isinstance(model, HardwareModel):
        raise TypeError(f"model must be a HardwareModel, not {type(model).__name__}")
    check_lanes(lanes)
    check_pe(pe, lanes)
    if first_layer_bits is not None and (
            not isinstance(first_layer_bits, int) or isinstance(first_layer_bits, bool)
            or not 1 <= first_layer_bits <= model.input_bits):
        raise NmflowError(f"first_layer_bits must be an integer from 1 to input_bits = "
                          f"{model.input_bits}, not {first_layer_bits!r}")
    check_choice("memory", memory, WEIGHT_KINDS)
    if memory == "spram":
        rows = EnginePlan(model, lanes, pe=pe).weight_rows
        problem = WeightsInfo(rows, lanes, pe).problem()
        if problem is not None:
            raise NmflowError(f"the weights cannot be loaded over the link: {problem}")
    divisor, timeout_cycles = uart_timing(clk_freq, baud, timeout)
    check_parameters(model.n_inputs, model.input_bits, model.n_classes, model.score_bits,
                     timeout=timeout_cycles)
    if batch is not None:
        check_choice("batch_memory", batch_memory, STORE_KINDS)
        problem = batch_info(batch, clk_freq).problem(
            model.n_inputs, 1 + model.n_classes * score_bytes(model.score_bits))
        if problem is not None:
            raise NmflowError(problem)
    return divisor, timeout_cycles


def batch_info(capacity, clk_freq):
    """The :class:`~nmflow.protocol.BatchInfo` of a board's batch memory of ``capacity`` vectors
    on a ``clk_freq`` clock."""
    if not isinstance(capacity, int) or isinstance(capacity, bool):
        raise NmflowError(f"batch must be a whole number of vectors, not {capacity!r}")
    return BatchInfo(capacity, round(clk_freq))


class UARTTop(wiring.Component):
    """A link core behind a UART: the one wrapper of every unit's top.

    Parameters
    ----------
    core : wiring.Component
        The link: ``rx: In(stream.Signature(8))``, ``tx: Out(stream.Signature(8))``, ``idle`` and
        ``receiving: Out(1)``.
    divisor : int
        Clock cycles per UART bit.

    Members
    -------
    rx : In(1)
        UART input pin (idle high).
    tx : Out(1)
        UART output pin (idle high).
    idle, receiving : Out(1)
        The link's ``idle`` and ``receiving`` status (for simulation bridges and status LEDs;
        board tops leave them unconnected).
    """

    def __init__(self, core, divisor):
        self._core, self._divisor = core, divisor
        super().__init__({"rx": In(1), "tx": Out(1), "idle": Out(1), "receiving": Out(1)})

    core = property(lambda self: self._core)
    divisor = property(lambda self: self._divisor)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self._core
        m.submodules.uart_rx = uart_rx = UARTRx(self._divisor)
        m.submodules.uart_tx = uart_tx = UARTTx(self._divisor)
        m.d.comb += [uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx),
                     self.idle.eq(core.idle), self.receiving.eq(core.receiving)]
        wiring.connect(m, uart_rx.o, core.rx)
        wiring.connect(m, core.tx, uart_tx.i)
        return m


class HostCore(wiring.Component):
    """The engine's link core: ``HostLink -> InferenceEngine -> HostLink`` on byte streams, with
    the optional read-error injector and metaplastic unit (arguments as :class:`HostTop`, the
    timeout in cycles).

    Members
    -------
    rx : In(stream.Signature(8))
    tx : Out(stream.Signature(8))
    idle, receiving : Out(1)
    """

    def __init__(self, model, *, lanes, timeout_cycles, errors, metaplastic, buffers, pe=1,
                 first_layer_bits=None, memory="block", batch=None, batch_memory="block"):
        self._model, self._lanes, self._errors = model, lanes, errors
        self._batch, self._batch_memory = batch, batch_memory
        self._memory = memory
        self._weights = None
        if memory == "spram":
            if metaplastic is not None:
                raise NmflowError("the metaplastic unit needs the engine's weights in block RAM "
                                  "(it writes single lanes; an SPRAM nibble holds two), not "
                                  "memory 'spram'")
            self._weights = WeightsInfo(EnginePlan(model, lanes, pe=pe).weight_rows, lanes, pe)
        self._pe, self._first_layer_bits = pe, first_layer_bits
        self._buffers = buffers
        self._timeout_cycles = timeout_cycles
        self._engine = self._unit = self._unit_info = None
        self._buffer = "block"
        if metaplastic is not None:
            self._add_unit(metaplastic)
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "idle": Out(1), "receiving": Out(1)})

    def _add_unit(self, metaplastic):
        from .metaplastic import MetaplasticUnit
        if not isinstance(metaplastic, dict):
            raise TypeError(f"metaplastic must be a dict of MetaplasticUnit arguments, not "
                            f"{type(metaplastic).__name__}")
        self._engine = InferenceEngine(self._model, lanes=self._lanes, pe=self._pe,
                                       first_layer_bits=self._first_layer_bits, errors=self._errors,
                                       writable=True, buffers=self._buffers)
        # The link hands the unit one beat and waits for its result before the next: a 4-deep
        # result FIFO is plenty (the unit's default keeps a stream of beats at full rate).
        self._unit = MetaplasticUnit(self._engine.plan, **{"fifo_depth": 4, **metaplastic})
        self._unit_info = MetaplasticInfo.of_unit(self._unit)
        # Built here to check the configuration and to tell INFO's sizes, elaborated with
        # the top (the first line of this file keeps an unused top from warning about them).
        if self._unit.storage == "spram":
            # The iCE40UP5K's block RAMs are all taken by the engine and the unit's tables.
            self._buffer = "logic"
        if self._unit_info.problem() is not None:
            raise NmflowError(f"the metaplastic unit cannot be reached over the link: "
                              f"{self._unit_info.problem()}")

    unit = property(lambda self: self._unit)
    metaplastic = property(lambda self: self._unit_info)
    link_buffer = property(lambda self: self._buffer)
    buffers = property(lambda self: self._buffers)
    memory = property(lambda self: self._memory)
    weights = property(lambda self: self._weights)
    """The :class:`~nmflow.protocol.WeightsInfo` of run-time weights (SPRAM), or ``None``."""
    batch = property(lambda self: self._batch)
    """The :class:`~nmflow.protocol.BatchInfo` of the batch memory, or ``None``."""

    def link(self):
        """The :class:`~nmflow.rtl.hostlink.HostLink` this core builds (a new one each call)."""
        model = self._model
        return HostLink(model.n_inputs, model.input_bits, model.n_classes, model.score_bits,
                        timeout=self._timeout_cycles,
                        rate_bits=None if self._errors is None else self._errors.rate_bits,
                        metaplastic=self._unit_info, weights=self._weights, batch=self._batch,
                        buffer=self._batch_memory if self._batch is not None else self._buffer)

    def elaborate(self, platform):
        m = Module()
        model = self._model
        engine = self._engine or InferenceEngine(model, lanes=self._lanes, pe=self._pe,
                                                 first_layer_bits=self._first_layer_bits,
                                                 errors=self._errors, buffers=self._buffers,
                                                 memory=self._memory)
        m.submodules.engine = engine
        m.submodules.link = link = self.link()
        wiring.connect(m, wiring.flipped(self.rx), link.rx)
        wiring.connect(m, link.tx, wiring.flipped(self.tx))
        # The link's input beats come out of its state machine; the engine acts on them with its
        # own: a register between the two keeps that path short.
        m.submodules.feed = feed = StreamRegister(model.input_bits)
        wiring.connect(m, link.engine_i, feed.i)
        if self._unit is None:
            wiring.connect(m, feed.o, engine.i)
        else:
            # The unit writes the engine's weights only while the engine is idle, and no
            # inference starts while the unit's writes are pending.
            m.submodules.unit = unit = self._unit
            wiring.connect(m, unit.weights, engine.weights)
            # The link's beat reaches the unit through a register whose ready is a register
            # too (~held): the unit's issue decision (the engine's idle, its hazards and
            # credits) no longer runs into the link's state machine, nor the link's payload
            # into the unit. It takes a beat every other cycle; the link sends one a request.
            beat, held = Signal.like(unit.i.payload), Signal()
            mi = link.metaplastic_i
            m.d.comb += [mi.ready.eq(~held), unit.i.valid.eq(held), unit.i.payload.eq(beat)]
            with m.If(~held & mi.valid):
                m.d.sync += [held.eq(1), beat.eq(mi.payload)]
            with m.Elif(held & unit.i.ready):
                m.d.sync += held.eq(0)
            wiring.connect(m, unit.o, link.metaplastic_o)
            wiring.connect(m, link.pairs, engine.pairs)
            busy = unit.busy | held
            m.d.comb += [unit.idle.eq(engine.idle),
                         engine.i.valid.eq(feed.o.valid & ~busy),
                         engine.i.payload.eq(feed.o.payload),
                         feed.o.ready.eq(engine.i.ready & ~busy)]
        wiring.connect(m, engine.o, link.engine_o)
        if self._weights is not None:
            wiring.connect(m, link.weights, engine.weights)
            m.d.comb += link.engine_idle.eq(engine.idle)
        if self._errors is not None:
            wiring.connect(m, link.errors, engine.errors)
        m.d.comb += [self.idle.eq(link.idle), self.receiving.eq(link.receiving)]
        return m


class HostTop(UARTTop):
    """An inference engine reachable over a UART: the core every engine board top wraps.

    ``UARTRx -> HostLink -> InferenceEngine -> HostLink -> UARTTx`` (:class:`HostCore` in a
    :class:`UARTTop`), speaking the protocol of :mod:`nmflow.protocol`. Platform-free: the board
    top owns the pins and the clock.

    Parameters
    ----------
    model : :class:`~nmflow.golden.hwmodel.HardwareModel`
    lanes : int
        GXNOR lanes of the engine.
    pe : int
        Neurons the engine computes side by side (each over ``lanes / pe`` lanes).
    first_layer_bits : int or None
        Input bits the engine's first layer takes per cycle (None: all; 1: bit-serial over 2-bit
        lanes).
    clk_freq : float
        Frequency of the ``sync`` clock, in Hz.
    baud : float
        UART baud rate; ``divisor = round(clk_freq / baud)`` must come within 2 %.
    timeout : float
        Inter-byte timeout of the link in seconds (at least 2 character times).
    errors : :class:`~nmflow.golden.injector.ErrorInjection` or None
        Build the engine with the read-error injector, in this configuration after reset; the
        host can change its rates, seed and mode with the ERRORS request (the link then reports
        the injector's ``rate_bits`` in INFO).
    metaplastic : dict or None
        Add the :class:`~nmflow.rtl.metaplastic.MetaplasticUnit` on the engine's write port (the
        engine is built ``writable``): the keyword arguments of the unit (``m`` required;
        ``lanes``, ``storage``, ``w_format``, ``u_format``, ``table_size`` ... as the unit). The
        link then speaks protocol version 3 (UPDATE, LOAD and READ requests) and no inference
        starts while the unit is busy. The unit's formats must be whole bytes wide and it must
        have at most 65535 groups and 8 lanes. With ``storage="spram"`` (the iCE40UP5K), the
        link's input buffer is kept in flip-flops: the engine and the unit's tables take every
        block RAM.
    buffers : str, dict or None
        The engine's ``buffers`` (where its activation store's buffers live; see
        :class:`~nmflow.rtl.engine.InferenceEngine`).
    memory : ``"block"``, ``"logic"`` or ``"spram"``
        The engine's weight memory kind. With ``"spram"`` (the iCE40UP5K's SPRAMs, empty after
        configuration) the link reports protocol version 5 and takes WEIGHTS requests, one row
        each, which the host sends before the first INFER (not with ``metaplastic``).
    batch : int or None
        A batch memory of this many input vectors: the link reports protocol version 6 with the
        capacity and ``clk_freq`` and takes BATCH requests, run back to back on the board and
        timed by its cycle counter. ``None`` (the default): no batch memory.
    batch_memory : ``"block"``, ``"logic"`` or ``"spram"``
        Where the batch memory (the link's input buffer and result store) lives.

    Members
    -------
    As :class:`UARTTop`.
    """

    def __init__(self, model, *, lanes=16, pe=1, first_layer_bits=None, clk_freq, baud=BAUD,
                 timeout=0.02, errors=None, metaplastic=None, buffers=None, memory="block",
                 batch=None, batch_memory="block"):
        divisor, self._timeout_cycles = check_host_top(model, lanes=lanes, pe=pe,
                                                       first_layer_bits=first_layer_bits,
                                                       clk_freq=clk_freq, baud=baud,
                                                       timeout=timeout, memory=memory,
                                                       batch=batch, batch_memory=batch_memory)
        self._model, self._lanes, self._errors = model, lanes, errors
        self._pe, self._first_layer_bits = pe, first_layer_bits
        super().__init__(HostCore(model, lanes=lanes, pe=pe, first_layer_bits=first_layer_bits,
                                  timeout_cycles=self._timeout_cycles,
                                  errors=errors, metaplastic=metaplastic, buffers=buffers,
                                  memory=memory, batch_memory=batch_memory,
                                  batch=None if batch is None else batch_info(batch, clk_freq)),
                         divisor)

    model = property(lambda self: self._model)
    lanes = property(lambda self: self._lanes)
    pe = property(lambda self: self._pe)
    injection = property(lambda self: self._errors)
    unit = property(lambda self: self.core.unit)
    """The :class:`~nmflow.rtl.metaplastic.MetaplasticUnit`, or ``None``."""
    link_buffer = property(lambda self: self.core.link_buffer)
    """Where the link's input buffer lives: ``"block"`` or ``"logic"``."""
    buffers = property(lambda self: self.core.buffers)
    """The engine's ``buffers``, as given."""
    memory = property(lambda self: self.core.memory)
    """The engine's weight memory kind."""
    timeout_cycles = property(lambda self: self._timeout_cycles)

    @property
    def info(self):
        """The :class:`~nmflow.protocol.Info` the board reports to INFO."""
        model, unit, tail = self._model, self.core.metaplastic, self.core.weights
        batch = self.core.batch
        return Info(link_version(unit, tail, batch), model.n_inputs, model.n_classes,
                    model.input_bits, score_bytes(model.score_bits),
                    0 if self._errors is None else self._errors.rate_bits, unit, tail, batch)

    def batch_cycles(self, count):
        """The cycles a BATCH of ``count`` vectors reports: the engine's
        (:meth:`~nmflow.golden.plan.EnginePlan.batch_cycles`), counted from the first input
        value the link hands out, one register (:class:`~nmflow.rtl.pipe.StreamRegister`)
        before the engine takes it."""
        plan = EnginePlan(self._model, self._lanes, pe=self._pe,
                          first_layer_bits=self._first_layer_bits)
        return plan.batch_cycles(count) + StreamRegister.latency

    @property
    def sprams(self):
        """SPRAMs the link's batch memory takes (with ``batch_memory="spram"``)."""
        return self.core.link().sprams if self.core.batch is not None else 0
