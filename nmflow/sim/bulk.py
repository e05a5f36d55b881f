# amaranth: UnusedElaboratable=no
"""The engine in a bulk testbench: stimulus, backpressure and captures in gateware.

:class:`BulkBench` wraps the engine's Verilog module (``nmflow_engine`` of ``engine.v``, the very
bytes the ``verilog`` step wrote, as an instance) with what a testbench's coroutines would
otherwise do a clock at a time:

* an input memory the simulator loads from a file, and a :class:`BulkStimulus` that streams its
  words into the engine's input stream ``i`` after random gaps, following
  ``amaranth.lib.stream``'s rules (``valid`` raised without waiting for ``ready``, the beat held
  until taken);
* random backpressure on the result stream ``o``, from an LFSR;
* capture memories of every result beat (its payload: index, score, class, last), every trace
  beat (layer, group, activations), the cycle of each inference's first input beat and of its
  last result beat (:class:`StreamCapture`);
* a cycle counter, the images done and a ``done`` flag.

The memories are instances of ``nmflow_bulk_memory`` (``bulk_memory.v``, beside this file): a
rising edge of ``load`` fills the input memory from ``bulk_inputs.hex``, a rising edge of
``dump`` writes each capture memory to its file (:data:`CAPTURES`), in the simulator's folder.
The testbench (:mod:`nmflow.sim.tb_engine_bulk`) then wakes a few times per run, not per clock.

The gateware depends on the engine's ports and :attr:`BulkBench.capacity` (images a run holds)
only: the number of images, the probabilities and the seeds are ports, so one compiled
simulation serves every run of an engine (:func:`nmflow.sim.runner.cached_build`).
"""

from pathlib import Path

from amaranth.hdl import ClockSignal, Instance, Module, Mux, ResetSignal, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import NmflowError
from ..lfsr import Lfsr

__all__ = ["BulkStimulus", "StreamCapture", "BulkBench", "bulk_verilog", "MEMORY_VERILOG",
           "TOPLEVEL", "CAPTURES", "INPUTS_FILE", "probability_threshold", "PROBABILITY_BITS",
           "capacity_for", "COUNT_BITS", "CYCLE_BITS", "BULK_LFSR"]

#: Module name of the bulk testbench's top.
TOPLEVEL = "nmflow_bulk"
#: The Verilog of the memories the simulator loads and dumps.
MEMORY_VERILOG = Path(__file__).with_name("bulk_memory.v")
#: The file the input memory is loaded from (in the simulator's folder).
INPUTS_FILE = "bulk_inputs.hex"
#: The capture memories and the files they are written to.
CAPTURES = {"results": "bulk_results.hex", "traces": "bulk_traces.hex",
            "starts": "bulk_starts.hex", "finishes": "bulk_finishes.hex"}
#: Draws are compared with a threshold of this many bits: probability ``t / 2**16``.
PROBABILITY_BITS = 16
#: Width of the image and beat counters, and of the cycle counter.
COUNT_BITS, CYCLE_BITS = 32, 40

#: The source of the gaps and of the backpressure: a 32-bit Galois LFSR (taps 32, 22, 2, 1, as
#: the EqProp unit's), a draw of 16 bits every 16 steps.
BULK_LFSR = Lfsr(32, 0x80200003, "galois", draw_steps=PROBABILITY_BITS, draw_bits=PROBABILITY_BITS)


def probability_threshold(p, name="probability"):
    """The threshold a draw of :data:`PROBABILITY_BITS` bits is compared with so that it is
    below it with probability ``p`` (0 < p <= 1): ``round(p * 2**16)``, at least 1."""
    if not 0 < p <= 1:
        raise NmflowError(f"{name} must be a probability above 0 and at most 1, not {p!r}")
    return max(1, round(p * (1 << PROBABILITY_BITS)))


def capacity_for(images):
    """Images a bulk testbench is built for: ``images`` rounded up to a power of two (16 at
    least), so that runs of about as many images share a compiled simulation."""
    capacity = 16
    while capacity < images:
        capacity *= 2
    return capacity


def _draws(m, name, go, seed, threshold):
    """Whether a cycle's draw is below ``threshold``: an LFSR register that takes ``seed``
    while ``go`` is low and draws every cycle after; it stands still when ``threshold`` lets
    every draw through (``2**16``), so that a run without gaps or backpressure simulates no
    LFSR at all."""
    register = BULK_LFSR.register()
    m.submodules[name] = register
    always = threshold[PROBABILITY_BITS]
    m.d.comb += [register.seed.eq(seed), register.load.eq(~go), register.en.eq(go & ~always)]
    return always | (register.draw < threshold)


class BulkStimulus(wiring.Component):
    """Streams ``images`` images of ``n_inputs`` words each from a memory into ``o``.

    Parameters
    ----------
    width : int
        Bits of a word.
    n_inputs : int
        Words of an image.
    addr_bits : int
        Address bits of the memory.

    Members
    -------
    o : Out(stream.Signature(width))
        The words in memory order. ``valid`` rises, with its payload, whenever a word is due
        and the gap draw allows (it never waits for ``ready``), and stays, payload unchanged,
        until the beat is taken.
    first : Out(1)
        High while ``o`` offers the first word of an image.
    addr : Out(addr_bits)
        Read address of the memory (one cycle of read latency): the word the next beat takes.
    data : In(width)
        The memory's read data.
    go : In(1)
        Starts the stream (and the gap draws from ``seed``); low: idle, seed loaded.
    images : In(COUNT_BITS)
        Images to send.
    valid_threshold : In(PROBABILITY_BITS + 1)
        A word due is offered in a cycle when the cycle's draw is below it (random gaps;
        ``2**16``: never a gap).
    seed : In(32)
        The gap source's seed (not 0).
    sent : Out(COUNT_BITS)
        Images whose words have all been taken.

    Latency: the first word is offered in the cycle after ``go`` rises (after gaps); back to
    back, one word per cycle while ``ready`` stays high.
    """

    def __init__(self, width, n_inputs, addr_bits):
        self._n_inputs = n_inputs
        super().__init__({
            "o": Out(stream.Signature(width)), "first": Out(1),
            "addr": Out(addr_bits), "data": In(width),
            "go": In(1), "images": In(COUNT_BITS), "valid_threshold": In(PROBABILITY_BITS + 1),
            "seed": In(32), "sent": Out(COUNT_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        pointer = Signal.like(self.addr)
        word = Signal(range(max(2, self._n_inputs)))      # of the next word to offer
        image = Signal(COUNT_BITS)                        # of the next word to offer
        due = self.go & (image < self.images)
        free = ~self.o.valid | self.o.ready               # the output register may take a word
        offer = free & due & _draws(m, "gaps", self.go, self.seed, self.valid_threshold)
        taken = self.o.valid & self.o.ready

        m.d.comb += self.addr.eq(Mux(offer, pointer + 1, pointer))
        with m.If(offer):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.data),
                         self.first.eq(word == 0), pointer.eq(pointer + 1)]
            with m.If(word == self._n_inputs - 1):
                m.d.sync += [word.eq(0), image.eq(image + 1)]
            with m.Else():
                m.d.sync += word.eq(word + 1)
        with m.Elif(taken):
            m.d.sync += self.o.valid.eq(0)
        # An image is sent when its last word is taken: the last word offered, taken now.
        last_offered = Signal()
        with m.If(offer):
            m.d.sync += last_offered.eq(word == self._n_inputs - 1)
        with m.If(taken & last_offered):
            m.d.sync += self.sent.eq(self.sent + 1)
        return m


class StreamCapture(wiring.Component):
    """Takes the beats of a stream and writes each payload to a capture memory, in order.

    Parameters
    ----------
    width : int
        Bits of a payload.
    addr_bits : int
        Address bits of the memory; beats past its depth are counted, not written.
    ready : bool
        Whether the stream has ``ready`` (then driven high in a cycle when the cycle's draw is
        below ``ready_threshold``, random backpressure), or is always ready.

    Members
    -------
    i : In(stream.Signature(width, always_ready=not ready))
    go : In(1)
        Starts taking beats (and the draws from ``seed``).
    ready_threshold : In(PROBABILITY_BITS + 1), seed : In(32)
        With ``ready`` only.
    taken : Out(1)
        A beat moves in this cycle.
    count : Out(COUNT_BITS)
        Beats taken.
    we, waddr, wdata : Out
        The memory's write port.
    """

    def __init__(self, width, addr_bits, *, ready=True):
        self._ready, self._addr_bits = ready, addr_bits
        members = {"i": In(stream.Signature(width, always_ready=not ready)), "go": In(1),
                   "taken": Out(1), "count": Out(COUNT_BITS),
                   "we": Out(1), "waddr": Out(addr_bits), "wdata": Out(width)}
        if ready:
            members.update(ready_threshold=In(PROBABILITY_BITS + 1), seed=In(32))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        if self._ready:
            m.d.comb += self.i.ready.eq(self.go & _draws(m, "backpressure", self.go, self.seed,
                                                         self.ready_threshold))
        m.d.comb += [
            self.taken.eq(self.i.valid & self.i.ready),
            self.we.eq(self.taken & (self.count < (1 << self._addr_bits))),
            self.waddr.eq(self.count), self.wdata.eq(self.i.payload),
        ]
        with m.If(self.taken):
            m.d.sync += self.count.eq(self.count + 1)
        return m


def _memory(m, name, width, addr_bits, file, load, dump, count, read=False):
    """An ``nmflow_bulk_memory`` instance (with its read port if ``read``); returns its ports
    (raddr, rdata, we, waddr, wdata)."""
    ports = {"raddr": Signal(addr_bits, name=f"{name}_raddr"),
             "rdata": Signal(width, name=f"{name}_rdata"),
             "we": Signal(name=f"{name}_we"), "waddr": Signal(addr_bits, name=f"{name}_waddr"),
             "wdata": Signal(width, name=f"{name}_wdata")}
    m.submodules[name] = Instance(
        "nmflow_bulk_memory", p_WIDTH=width, p_ABITS=addr_bits, p_FILE=file, p_READ=int(read),
        i_clk=ClockSignal(), i_load=load, i_dump=dump, i_count=count,
        i_raddr=ports["raddr"], o_rdata=ports["rdata"], i_we=ports["we"],
        i_waddr=ports["waddr"], i_wdata=ports["wdata"])
    return ports


def _bits(n):
    """Address bits of a memory of ``n`` words (1 at least)."""
    return max(1, (n - 1).bit_length())


class BulkBench(wiring.Component):
    """The engine's Verilog module with the bulk testbench around it (see the module's text).

    Parameters
    ----------
    engine : :class:`~nmflow.rtl.engine.InferenceEngine`
        Its ports (the signature: names, widths, directions) are those of the instance; it is
        not elaborated.
    capacity : int
        Images a run may hold (the memories' depths).
    engine_module : str
        The engine's module name in its Verilog.

    Members
    -------
    go : In(1)
        Starts the run: inputs, gaps and backpressure. Raise it after ``load``.
    images : In(COUNT_BITS)
        Images to run (up to ``capacity``).
    valid_threshold, ready_threshold : In(PROBABILITY_BITS + 1)
        Gaps and backpressure (:func:`probability_threshold`).
    gap_seed, ready_seed : In(32)
        Their LFSRs' seeds (not 0).
    load, dump : In(1)
        Rising edges load the input memory from :data:`INPUTS_FILE`, and write the captures to
        their files (:data:`CAPTURES`).
    done : Out(1)
        Every image's last result beat came.
    cycle : Out(CYCLE_BITS)
        Cycles since reset; the captured cycles are its value in the cycle a beat moved.
    finished, results, traces : Out(COUNT_BITS)
        Inferences finished, result beats and trace beats taken.
    The engine's other ports (``idle``; ``weights`` and ``pairs`` of a writable engine,
    ``errors`` of one with an injector) are the bench's own, under the same names.
    """

    def __init__(self, engine, capacity, engine_module="nmflow_engine"):
        self._engine, self._module = engine, engine_module
        self._capacity = capacity
        plan = engine.plan
        self._n_inputs, self._n_classes = plan.n_inputs, plan.n_classes
        self._per_inference = sum(w.out_pixels * w.groups for w in plan.walks[:-1])
        passed = {name: member for name, member in engine.signature.members.items()
                  if name not in ("i", "o", "trace")}
        super().__init__({
            "go": In(1), "images": In(COUNT_BITS),
            "valid_threshold": In(PROBABILITY_BITS + 1),
            "ready_threshold": In(PROBABILITY_BITS + 1),
            "gap_seed": In(32), "ready_seed": In(32), "load": In(1), "dump": In(1),
            "done": Out(1), "cycle": Out(CYCLE_BITS), "finished": Out(COUNT_BITS),
            "results": Out(COUNT_BITS), "traces": Out(COUNT_BITS), **passed,
        })

    capacity = property(lambda self: self._capacity)
    n_inputs = property(lambda self: self._n_inputs)
    n_classes = property(lambda self: self._n_classes)
    traces_per_inference = property(lambda self: self._per_inference)
    """Trace beats of an inference: a beat per group of ``pe`` hidden neurons."""

    def elaborate(self, platform):
        m = Module()
        engine = self._engine
        signature = engine.signature
        ports = signature.create(path=("engine",))
        m.submodules.engine = Instance(self._module, *self._instance_ports(ports))
        for name, member in signature.members.items():        # the engine's other ports
            if name in ("i", "o", "trace"):
                continue
            ours, theirs = getattr(self, name), getattr(ports, name)
            if member.is_signature:
                wiring.connect(m, wiring.flipped(ours), theirs)
            else:
                m.d.comb += theirs.eq(ours) if member.flow == In else ours.eq(theirs)

        m.d.sync += self.cycle.eq(self.cycle + 1)
        capacity = self._capacity
        input_width = len(Value.cast(ports.i.payload))
        inputs = _memory(m, "inputs", input_width, _bits(capacity * self._n_inputs), INPUTS_FILE,
                         self.load, 0, self.images * self._n_inputs, read=True)
        m.submodules.stimulus = stimulus = BulkStimulus(input_width, self._n_inputs,
                                                        len(inputs["raddr"]))
        m.d.comb += [stimulus.go.eq(self.go), stimulus.images.eq(self.images),
                     stimulus.valid_threshold.eq(self.valid_threshold),
                     stimulus.seed.eq(self.gap_seed),
                     inputs["raddr"].eq(stimulus.addr), stimulus.data.eq(inputs["rdata"])]
        wiring.connect(m, stimulus.o, ports.i)

        results = self._capture(m, "results", ports.o, capacity * self._n_classes, ready=True)
        m.d.comb += [results.ready_threshold.eq(self.ready_threshold),
                     results.seed.eq(self.ready_seed)]
        traces = self._capture(m, "traces", ports.trace,
                               capacity * max(1, self._per_inference), ready=False)
        m.d.comb += [self.results.eq(results.count), self.traces.eq(traces.count)]

        # The cycle of each inference's first input beat and of its last result beat.
        started = Signal(COUNT_BITS)
        for name, strobe, count in (
                ("starts", stimulus.o.valid & stimulus.o.ready & stimulus.first, started),
                ("finishes", results.taken & ports.o.payload.last, self.finished)):
            memory = _memory(m, name, CYCLE_BITS, _bits(capacity), CAPTURES[name], 0, self.dump,
                             Mux(count < capacity, count, capacity))
            m.d.comb += [memory["we"].eq(strobe & (count < capacity)),
                         memory["waddr"].eq(count), memory["wdata"].eq(self.cycle)]
            with m.If(strobe):
                m.d.sync += count.eq(count + 1)
        m.d.comb += self.done.eq(self.go & (self.finished >= self.images))
        return m

    def _capture(self, m, name, port, depth, *, ready):
        """A :class:`StreamCapture` of ``port`` into a capture memory of ``depth`` words."""
        width = len(Value.cast(port.payload))
        addr_bits = _bits(depth)
        capture = StreamCapture(width, addr_bits, ready=ready)
        m.submodules[f"{name}_capture"] = capture
        memory = _memory(m, name, width, addr_bits, CAPTURES[name], 0, self.dump,
                         Mux(capture.count < (1 << addr_bits), capture.count, 1 << addr_bits))
        m.d.comb += [capture.go.eq(self.go), memory["we"].eq(capture.we),
                     memory["waddr"].eq(capture.waddr), memory["wdata"].eq(capture.wdata)]
        wiring.connect(m, port, capture.i)
        return capture

    def _instance_ports(self, ports):
        """The ``(kind, name, value)`` ports of the engine's instance: clock, reset and every
        member of its signature, named as Amaranth flattens them (``i__payload``)."""
        yield ("i", "clk", ClockSignal())
        yield ("i", "rst", ResetSignal())
        for path, member, value in self._engine.signature.flatten(ports):
            value = Value.cast(value)
            if isinstance(value, Signal):       # not the constant ready of an always-ready port
                yield ("i" if member.flow == In else "o", "__".join(map(str, path)), value)


def bulk_verilog(engine_config, model, capacity, path):
    """Write the bulk testbench's top (:data:`TOPLEVEL`) around the engine ``engine.json``
    (``engine_config``) describes to ``path``; return the Verilog as written (bytes).

    The engine comes from its own ``engine.v`` (an instance of its ``toplevel``); simulate
    ``engine.v``, :data:`MEMORY_VERILOG` and this file together.
    """
    from ..golden.injector import ErrorInjection
    from ..rtl.engine import InferenceEngine
    from ..rtl.verilog import to_verilog

    errors = engine_config.get("errors")
    engine = InferenceEngine(model, lanes=engine_config["lanes"], pe=engine_config.get("pe", 1),
                             first_layer_bits=engine_config.get("first_layer_bits"),
                             memory=engine_config.get("memory", "block"),
                             errors=None if errors is None else ErrorInjection.from_dict(errors))
    bench = BulkBench(engine, capacity, engine_config["toplevel"])
    _, text = to_verilog(bench, TOPLEVEL, path)
    return text
