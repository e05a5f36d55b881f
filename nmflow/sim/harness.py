"""One cocotb harness for the ``amaranth.lib.stream`` ports of nmflow's designs: a :class:`Driver`,
a :class:`Monitor` and an in-order :class:`Scoreboard`, with beats in the port's typed layout.

Ports. :class:`Stream` holds the cocotb handles of one stream port as Amaranth names them in
Verilog (``i__valid``, ``i__ready``, ``i__payload``; no ``ready`` for an ``always_ready`` port)
and the payload's shape, the layout the port was built with: a
:class:`~amaranth.lib.data.Layout` (or a ``data.Struct`` class) or a plain shape.

Beats. A :class:`Codec` (:func:`encode`, :func:`decode`) turns a beat into the payload's bits
with Amaranth's ``Layout.const`` and bits back with ``Layout.from_bits``: a dict for a struct
layout, a list for an array layout, nested as the layout is, an integer for a plain shape; decoded
members are integers, signed ones in two's complement. Nothing is packed by hand: the layout is
the one the port was built with. A beat is compared with ``==`` against an expected beat written
the same way.

Timing. Every part drives at the falling edge of ``clk`` and samples in the read-only phase of
that time step: the values the coming rising edge sees, so a ``ready`` that depends on the payload
is seen after the payload is set. A beat moves at the rising edge where ``valid`` and ``ready``
are high (an ``always_ready`` port takes every valid beat). :func:`cycle` numbers that edge
(rising edges fall on multiples of :data:`~nmflow.sim.tbutil.PERIOD_NS`). While nothing moves,
the coroutines sleep on the rising edge of a ``valid`` or a ``ready`` instead of waking every
cycle.

The stream rules (``amaranth.lib.stream``): a producer raises ``valid`` with its payload without
looking at ``ready`` and holds both until the beat is taken; a consumer may raise and lower
``ready`` as it likes. The :class:`Driver` is such a producer, with random gaps between beats if
asked; the :class:`Monitor` is a consumer with random backpressure if asked, or, ``passive``, an
observer of a port someone else drives (the driver's input port, say).
"""

import enum
import numbers
from collections import deque
from collections.abc import Mapping

import cocotb
from amaranth import hdl
from amaranth.hdl import Shape
from amaranth.lib import data
from cocotb.simtime import get_sim_time
from cocotb.triggers import Event, FallingEdge, First, ReadOnly, RisingEdge, Timer

from .tbutil import PERIOD_NS

__all__ = ["port_shape", "Codec", "encode", "decode", "cycle", "within", "Stream", "Driver",
           "Monitor", "Scoreboard"]


def port_shape(component, name):
    """The payload shape of stream port ``name`` of an Amaranth ``component``."""
    return component.signature.members[name].signature.members["payload"].shape


def _layout(shape):
    """``shape`` as a data layout, or None for a plain shape."""
    try:
        return data.Layout.cast(shape)
    except TypeError:
        return None


def _plain(value):
    """A member read from a ``data.Const`` as plain Python (dicts, lists, integers)."""
    if isinstance(value, data.Const):
        layout = data.Layout.cast(value.shape())
        if isinstance(layout, data.ArrayLayout):
            return [_plain(value[index]) for index in range(layout.length)]
        return {name: _plain(value[name]) for name, _ in layout}
    if isinstance(value, enum.Enum):
        return value.value
    return int(value)


def _freeze(beat):
    """A hashable key of a beat (dicts, lists, integers), or None."""
    if isinstance(beat, numbers.Integral):
        return int(beat)
    if isinstance(beat, Mapping):
        items = tuple((key, _freeze(value)) for key, value in beat.items())
        return None if any(v is None for _, v in items) else ("d", items)
    if isinstance(beat, (list, tuple)):
        items = tuple(_freeze(value) for value in beat)
        return None if any(v is None for v in items) else ("l", items)
    return None


class Codec:
    """Encodes beats of one ``shape`` into payload bits and decodes payload bits into beats.

    A beat is what Amaranth's ``Layout.const`` takes and ``Layout.from_bits`` gives, read into
    plain Python: a dict for a struct layout (or ``data.Struct`` class), a list for an array
    layout, nested as the layout is, an integer for a plain shape (signed ones in two's
    complement). Every bit is placed and read by Amaranth.

    Made for tens of thousands of beats of wide arrays, where ``Layout.const`` of the whole beat
    costs milliseconds (a lane's ``data.Struct`` constant alone costs tens of microseconds): a
    struct or array layout is handled member by member through its *raw view*, a
    ``FlexibleLayout`` with the layout's own members and offsets, each member an unsigned
    integer of its width. The constant of a beat is the bitwise OR of the raw view's constants
    ``raw.const({member: bits})`` of its members (members of struct and array layouts do not
    overlap), each made once per member and value; ``raw.from_bits(bits)[member]`` gives a
    member's bits back. Each member has its own codec; a beat of at most :attr:`SMALL` bits is
    encoded once per value, and decoded beats are remembered (up to :attr:`LIMIT` of each
    kind): they are shared, read them, do not change them.
    """

    SMALL = 16
    LIMIT = 1 << 16

    def __init__(self, shape):
        self.shape, self.layout = shape, _layout(shape)
        self.width = Shape.cast(shape).width
        self.raw = None
        if isinstance(shape, (data.StructLayout, data.ArrayLayout)):
            self.raw = data.FlexibleLayout(self.width, {
                key: data.Field(hdl.unsigned(field.width), field.offset)
                for key, field in shape})
        self._children, self._parts, self._encoded, self._decoded = {}, {}, {}, {}

    def _child(self, key):
        """The codec of member ``key`` (one for all the elements of an array layout)."""
        slot = None if isinstance(self.layout, data.ArrayLayout) else key
        child = self._children.get(slot)
        if child is None:
            try:
                shape = self.layout[key].shape
            except KeyError:
                raise ValueError(f"a beat of {self.layout!r} has no member {key!r}") from None
            child = self._children[slot] = Codec(shape)
        return child

    def encode(self, beat):
        """The payload bits (an integer) of ``beat``: ``shape.const(beat)``'s bits for a layout
        (``beat`` a dict, a list or a ``data.Const``), two's complement for a plain shape."""
        key = _freeze(beat) if self.width <= self.SMALL else None
        bits = self._encoded.get(key) if key is not None else None
        if bits is None:
            bits = self._encode(beat)
            if key is not None and len(self._encoded) < self.LIMIT:
                self._encoded[key] = bits
        return bits

    def _encode(self, beat):
        if self.layout is None:
            return hdl.Const(beat, hdl.unsigned(self.width)).value
        if self.raw is None or not isinstance(beat, (Mapping, list, tuple)):
            return self.shape.const(beat).as_bits()       # Struct classes fill their defaults
        bits = 0
        for key, value in (beat.items() if isinstance(beat, Mapping) else enumerate(beat)):
            sub = self._child(key).encode(value)
            part = self._parts.get((key, sub))
            if part is None:
                part = self.raw.const({key: sub}).as_bits()
                if len(self._parts) < self.LIMIT:
                    self._parts[(key, sub)] = part
            bits |= part
        return bits

    def decode(self, bits):
        """The beat in payload ``bits``: dicts (struct layouts), lists (array layouts) and
        integers (signed ones in two's complement), as ``shape.from_bits(bits)`` reads."""
        beat = self._decoded.get(bits)
        if beat is None:
            beat = self._decode(bits)
            if len(self._decoded) < self.LIMIT:
                self._decoded[bits] = beat
        return beat

    def _decode(self, bits):
        if self.layout is None:
            return hdl.Const(bits, Shape.cast(self.shape)).value
        if self.raw is None:
            return _plain(self.layout.from_bits(bits))
        raw = self.raw.from_bits(bits)
        members = {key: self._child(key).decode(raw[key]) for key, _ in self.raw}
        return list(members.values()) if isinstance(self.layout, data.ArrayLayout) else members


def encode(shape, beat):
    """The payload bits (an integer) of ``beat`` for ``shape`` (see :class:`Codec`)."""
    return Codec(shape).encode(beat)


def decode(shape, bits):
    """The beat in payload ``bits`` of ``shape`` (see :class:`Codec`)."""
    return Codec(shape).decode(bits)


def cycle():
    """The number of the coming rising edge (of the current one, at a rising edge)."""
    return -(-int(get_sim_time("ns")) // PERIOD_NS)


async def _low(clk):
    """Return in a time step where ``clk`` is low (at once if it is), where the harness drives."""
    if clk.value:
        await FallingEdge(clk)


async def _sleep_until_high(signal, clk):
    """Sleep until ``signal`` rises, then return in a time step where ``clk`` is low."""
    await RisingEdge(signal)
    await _low(clk)


async def within(trigger, cycles, message):
    """Wait for ``trigger`` (an :class:`~cocotb.triggers.Event`'s ``wait()``, a
    :meth:`Monitor.reached`), failing with ``message`` (a string, or a function that makes it)
    if ``cycles`` clock periods pass first."""
    timer = Timer(cycles * PERIOD_NS, "ns")
    fired = await First(trigger, timer)
    assert fired is not timer, message() if callable(message) else message


class Stream:
    """The handles of stream port ``name`` of ``dut`` and its payload ``shape``.

    Members: ``clk``, ``valid``, ``ready`` (None for an ``always_ready`` port), ``payload``,
    ``name``, ``shape``. Refuses a payload whose width is not the shape's (the design and the
    testbench disagree on the layout).
    """

    def __init__(self, dut, name, shape):
        self.clk, self.name, self.shape = dut.clk, name, shape
        self.valid = getattr(dut, f"{name}__valid")
        self.payload = getattr(dut, f"{name}__payload")
        try:
            self.ready = getattr(dut, f"{name}__ready")
        except AttributeError:
            self.ready = None
        self.codec = Codec(shape)
        width = self.codec.width
        assert len(self.payload) == width, (
            f"{name}: the design's payload has {len(self.payload)} bits, the testbench's layout "
            f"{width}")


class Driver:
    """The producer of an input :class:`Stream`: offers beats one after the other.

    ``valid`` goes high with the next beat's payload whenever the driver has one, without
    looking at ``ready``, and stays high, the payload unchanged, until the rising edge that takes
    the beat. With ``rng`` (a :class:`random.Random`), each beat is preceded by idle cycles, each
    with probability ``1 - valid``: gaps, never a retraction. :attr:`sent` counts beats taken.
    """

    def __init__(self, stream, *, rng=None, valid=1.0):
        self.stream, self.rng, self.p_valid = stream, rng, valid
        self.gaps = rng is not None and valid < 1.0
        self.sent = 0

    def start(self, beats):
        """Send ``beats`` in a new task (returned)."""
        return cocotb.start_soon(self.send(beats))

    async def send(self, beats):
        """Offer each beat until it is taken; return at the falling edge after the last one
        was taken, ``valid`` low."""
        s = self.stream
        await _low(s.clk)
        high = False
        for beat in beats:
            bits = s.codec.encode(beat)
            while self.gaps and self.rng.random() >= self.p_valid:
                if high:
                    s.valid.value, high = 0, False
                await FallingEdge(s.clk)
            s.payload.value = bits
            if not high:
                s.valid.value, high = 1, True
            await self._taken()
            self.sent += 1
        if high:
            s.valid.value = 0

    async def _taken(self):
        """Return at the falling edge after the rising edge that took the beat on offer."""
        s = self.stream
        if s.ready is not None:
            await ReadOnly()
            while not s.ready.value:                  # the consumer is busy: sleep
                await _sleep_until_high(s.ready, s.clk)
                await ReadOnly()
        await FallingEdge(s.clk)


class Monitor:
    """Takes (or watches) the beats of a :class:`Stream` and hands each, decoded, to
    ``callback(beat, cycle)``: the beat as :func:`decode` gives it and the :func:`cycle` of the
    rising edge that moved it.

    A consumer by default: it drives ``ready``, high in each cycle with probability ``ready``
    drawn from ``rng`` (random backpressure), always high without ``rng``. ``passive``: it only
    watches (``ready`` is someone else's: the design's for an input port). An ``always_ready``
    port's beats move whenever ``valid`` is high. :attr:`count` counts the beats; with ``keep``,
    :attr:`beats` lists them.

    It also holds the producer to the stream rules: a beat offered and not taken must still be
    offered, its payload unchanged, when the monitor looks again (the next cycle; for a passive
    monitor, when ``ready`` rises). If not, its task fails the test with an ``AssertionError``.
    """

    def __init__(self, stream, callback=None, *, rng=None, ready=1.0, passive=False,
                 keep=False):
        self.stream, self.callback = stream, callback
        self.rng, self.p_ready = (rng, ready) if rng is not None and ready < 1.0 else (None, 1.0)
        self.drive = stream.ready is not None and not passive
        self.count, self.beats = 0, [] if keep else None
        self._target, self._reached = None, Event()

    def start(self):
        """Run the monitor for ever in a new task (returned)."""
        return cocotb.start_soon(self._run())

    def reached(self, count):
        """A trigger that fires once ``count`` beats have moved (at once if they have); it fires
        in the read-only phase before the rising edge that moves the last of them."""
        if self._target is None or count > self._target:
            self._target, self._reached = count, Event()
        if self.count >= count:
            self._reached.set()
        return self._reached.wait()

    async def wait(self, count, cycles, message):
        """Wait until ``count`` beats have moved, failing with ``message`` if ``cycles`` clock
        periods pass first; return at once if they have, else at the falling edge after the
        rising edge that moved the last of them (where the testbench may drive again)."""
        if self.count < count:
            await within(self.reached(count), cycles, message)
            await FallingEdge(self.stream.clk)

    async def _run(self):
        s = self.stream
        await _low(s.clk)
        accept, held = None, None           # held: the bits of a beat offered, not yet taken
        while True:
            if self.drive:
                want = self.rng is None or self.rng.random() < self.p_ready
                if want != accept:
                    s.ready.value, accept = int(want), want
            await ReadOnly()
            valid = bool(s.valid.value)
            bits = s.payload.value.to_unsigned() if valid else None
            if held is not None and bits != held:
                self._broken(held, bits)
            held = None
            if not valid:
                await _sleep_until_high(s.valid, s.clk)
                continue
            if s.ready is None or (accept if self.drive else s.ready.value):
                self._take(s.codec.decode(bits))
            else:
                held = bits
                if not self.drive:
                    await _sleep_until_high(s.ready, s.clk)
                    continue
            await FallingEdge(s.clk)

    def _broken(self, held, bits):
        """The producer broke the stream rules: it dropped ``valid`` or changed the payload of a
        beat before it was taken."""
        s = self.stream
        what = "dropped valid" if bits is None else (
            f"changed the payload to {s.codec.decode(bits)!r}")
        raise AssertionError(f"{s.name}: the producer {what} before its beat "
                             f"{s.codec.decode(held)!r} was taken (cycle {cycle()})")

    def _take(self, beat):
        self.count += 1
        if self.beats is not None:
            self.beats.append(beat)
        if self.callback is not None:
            self.callback(beat, cycle())
        if self._target is not None and self.count >= self._target:
            self._reached.set()


class Scoreboard:
    """Compares observed beats with expected ones, in order, with ``==``; counts and keeps every
    mismatch.

    Each stream (any name) has its queue of expected beats, each with a label naming it in
    messages (``"image 3: result beat 2"``): :meth:`expect` appends to it, :meth:`observe` compares
    an observed beat with its head (a beat nobody expected is a mismatch). :meth:`check` compares
    any other pair of values. :meth:`finish` counts every expected beat never observed as a
    mismatch; :meth:`assert_clean` then fails on any mismatch with :meth:`failure`. ``reference``
    names what the expectations come from (``"golden model"``, ``"twin"``); the first ``logged``
    mismatches also go to ``log``.
    """

    def __init__(self, reference="model", *, log=None, logged=20):
        self.reference, self.log, self.logged = reference, log, logged
        self.queues, self.observed = {}, {}
        self.compared = self.errors = 0
        self.mismatches = []            # (label, got, expected)

    def expect(self, stream, beat, label):
        self.queues.setdefault(stream, deque()).append((beat, label))

    def observe(self, stream, beat):
        """Compare ``beat``, observed on ``stream``, with the next one expected there; True if
        equal."""
        index = self.observed[stream] = self.observed.get(stream, 0) + 1
        queue = self.queues.get(stream)
        if not queue:
            self._mismatch(f"{stream} beat {index - 1}", beat, "no beat")
            return False
        expected, label = queue.popleft()
        return self.check(label, beat, expected)

    def check(self, label, got, expected):
        """Compare ``got`` with ``expected`` with ``==``; True if equal, a mismatch if not."""
        self.compared += 1
        if got == expected:
            return True
        self._mismatch(label, got, expected)
        return False

    def pending(self, stream):
        """The number of beats still expected on ``stream``."""
        return len(self.queues.get(stream, ()))

    def finish(self):
        """Count every expected beat not observed as a mismatch (``got`` is ``"nothing"``)."""
        for queue in self.queues.values():
            while queue:
                expected, label = queue.popleft()
                self._mismatch(label, "nothing", expected)

    def _mismatch(self, label, got, expected):
        self.errors += 1
        self.mismatches.append((label, got, expected))
        if self.log is not None and self.errors <= self.logged:
            self.log.error("%s", self.message(self.mismatches[-1]))

    def message(self, mismatch):
        label, got, expected = mismatch
        return f"{label} is {got!r}, {self.reference} {expected!r}"

    def messages(self, limit=None):
        return [self.message(m) for m in self.mismatches[:limit]]

    def failure(self):
        """``"<errors> mismatches against the <reference>, the first: <message>"``."""
        if not self.errors:
            return f"no mismatches against the {self.reference}"
        return (f"{self.errors} mismatches against the {self.reference}, the first: "
                f"{self.message(self.mismatches[0])}")

    def assert_clean(self):
        assert self.errors == 0, self.failure()
