"""Layer sequencer of the inference engine: input load, row issue, drain, result emission."""

from amaranth.hdl import Array, Const, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.plan import index_bits
from .activations import load_layout
from .convwalk import ConvWalk as _ConvWalk

__all__ = ["Sequencer", "tag_layout", "command_layout"]


def tag_layout(plan):
    """What travels with a row through the datapath: its layer and group (of ``pe`` neurons),
    the group's index among all hidden groups (for its thresholds), whether the row is the
    group's first or last, whether the group is its layer's last (whose padding neurons,
    past the layer's outputs, are not written), and the digit of a digit-serial first layer's
    row (0 otherwise). With a convolution (:attr:`~nmflow.golden.plan.EnginePlan.has_conv`)
    ``first`` and ``last`` mark a window position's rows, ``pool_first`` and ``pool_last`` the
    pooling window's positions (the activation is written at the last), ``end`` the last group
    of an output pixel, and ``row`` is the row of the buffer the group's activations go to."""
    fields = {
        "layer": unsigned(plan.layer_bits), "group": unsigned(plan.group_bits),
        "hidden": unsigned(plan.hidden_bits), "first": 1, "last": 1, "end": 1,
        "plane": unsigned(plan.plane_bits),
    }
    if plan.has_conv:
        fields.update({"pool_first": 1, "pool_last": 1,
                       "row": unsigned(index_bits(plan.hidden_rows))})
    return data.StructLayout(fields)


def command_layout(plan):
    """A row to compute: its weight-memory address, its chunk (row) of activations, whether
    that chunk lies outside the map (a convolution's padding: it reads 0), the input bank the
    first layer reads (0 with one), and its tag."""
    fields = {"addr": unsigned(plan.addr_bits), "chunk": range(max(plan.act_rows, 2)),
              "bank": 1, "tag": tag_layout(plan)}
    if plan.has_conv:
        fields["zero"] = 1
    return data.StructLayout(fields)


def _gap_table(plan):
    """DRAIN's countdown after each layer, ``layer_gaps[k] - 1`` (0 after the last), and the
    counter's shape."""
    shape = range(max(plan.layer_gaps + [2]))
    return Array(Const(g - 1, shape) for g in plan.layer_gaps + [1]), shape


def _finish(m, finishing, handoff, scored_all):
    """``finishing`` falls once every score is stored (the emit); ``handoff`` is the cycle
    after."""
    m.d.sync += handoff.eq(finishing & scored_all)
    with m.If(finishing & scored_all):
        m.d.sync += finishing.eq(0)


def _count_inputs(m, take, count, end, n_inputs):
    """Input beats of a vector: ``count`` goes up on ``take`` and back to 0 after the last;
    ``end`` is ``count == n_inputs - 1`` kept in a register."""
    with m.If(take):
        m.d.sync += [count.eq(count + 1), end.eq(count == n_inputs - 2)]
        with m.If(end):
            m.d.sync += [count.eq(0), end.eq(n_inputs == 1)]


def _count_in_flight(m, count, empty, issued, completed):
    """Groups issued and not yet completed: ``count`` goes up on ``issued``, down on
    ``completed``; ``empty`` is ``count == 0`` kept in a register (computed from the next
    count), off the sequencer's decision paths."""
    following = Signal.like(count)
    with m.If(issued & ~completed):
        m.d.comb += following.eq(count + 1)
    with m.Elif(~issued & completed):
        m.d.comb += following.eq(count - 1)
    with m.Else():
        m.d.comb += following.eq(count)
    m.d.sync += [count.eq(following), empty.eq(following == 0)]


def _load_index(m, plan, take, last_beat, count, index):
    """Where input beat ``count`` goes in the input buffer, ``row * simd + lane``: the beat's
    own index for a fully connected first layer; for a convolution's, whose inputs come channel
    by channel (the dataset's order) and whose buffer holds a pixel's channels in rows of their
    own, ``pixel * chunks * simd + channel`` (a register, counted as the beats come)."""
    walk = plan.walks[0]
    if not walk.conv:
        m.d.comb += index.eq(count)
        return
    channels = plan.model.layers[0].conv["in_shape"][0]
    pixels = walk.height * walk.width
    stride = walk.chunks * plan.simd
    position = Signal(range(max(plan.input_index_bound, 2)))
    pixel = Signal(range(max(pixels, 2)))
    channel = Signal(range(max(channels, 2)))
    pixel_end = Signal(init=pixels == 1)
    m.d.comb += index.eq(position)
    with m.If(last_beat):
        m.d.sync += [position.eq(0), pixel.eq(0), channel.eq(0), pixel_end.eq(pixels == 1)]
    with m.Elif(take & pixel_end):      # the next channel, from the first pixel
        m.d.sync += [position.eq(channel + 1), channel.eq(channel + 1), pixel.eq(0),
                     pixel_end.eq(pixels == 1)]
    with m.Elif(take):
        m.d.sync += [position.eq(position + stride), pixel.eq(pixel + 1),
                     pixel_end.eq(pixel + 1 == pixels - 1)]


def _input_banks(m, plan, last_beat, start, have_next, in_use_next, loading, load, cmd):
    """The loader's ``loading`` register and, with two input banks, the banks of ``load`` and
    ``cmd``. Vectors are loaded and started in order, so the bank being read (from a start on)
    is never the one being loaded while no vector waits: with two banks only a waiting vector
    stops the loader; with one, the running inference's first layer does too."""
    if plan.input_banks == 1:
        m.d.sync += loading.eq(~have_next & ~in_use_next)
        return
    load_bank, read_bank = Signal(), Signal(init=1)
    with m.If(last_beat):
        m.d.sync += load_bank.eq(~load_bank)
    with m.If(start):
        m.d.sync += read_bank.eq(~read_bank)
    m.d.sync += loading.eq(~have_next)
    m.d.comb += [load.bank.eq(load_bank), cmd.bank.eq(read_bank)]


class Sequencer(wiring.Component):
    """Walks the memory map of an :class:`~nmflow.golden.plan.EnginePlan`, one row per cycle
    (one chunk of a group of ``pe`` neurons).

    Two parts. The *loader* takes ``n_inputs`` input beats into the activation store's input
    buffer whenever the buffer is free: not holding a complete vector that has not started yet,
    and, with one input bank (:attr:`~nmflow.golden.plan.EnginePlan.input_banks`), not being
    read (from the start of an inference to the end of its first layer's rows). So the next
    inference's inputs load while the current one computes its later layers. With two banks the
    vectors go to the banks in turn and the next one loads while the first layer reads the
    other bank.

    The *runner* starts an inference as soon as a complete vector is in (``IDLE``), on the cycle
    of its last beat. ``RUN`` issues every row of a layer (layer after layer, group after group,
    chunk after chunk: the weight-memory address counts up, as the memory map lays the rows; in
    a network with convolutions the walk of :class:`~nmflow.rtl.convwalk.ConvWalk`, a
    convolution's group rows once per position of its pooling windows);
    ``DRAIN`` waits :attr:`~nmflow.golden.plan.EnginePlan.layer_gaps` cycles from a layer's last
    row to the next layer's first: the pipeline has a fixed latency, and the next layer's first
    group reads its chunks in order, so it may begin before the last groups of the layer before
    have completed, as long as each chunk is written by the cycle it is read. After the last layer's rows it goes back to ``IDLE`` at once, so that the next
    inference's first layers run while the last layer's groups are still in the pipeline; the
    *finisher* counts those groups apart (``scored``) and, once every one is stored, has the score
    unit send the results (``emit``). The last layer does not begin while the scores of the
    previous inference are still being stored or sent (``finishing``, ``busy``), so that they
    are never overwritten: when the plan says the last layer could come that soon
    (:attr:`~nmflow.golden.plan.EnginePlan.waits_for_results`), ``WAIT`` holds the inference
    before it starts.

    Every end-of-count test the sequencer acts on is a register computed a cycle ahead, so that no
    comparison sits on the paths that decide the next state.

    Parameters
    ----------
    plan : :class:`~nmflow.golden.plan.EnginePlan`

    Members
    -------
    i : In(stream.Signature(unsigned(input_bits)))
        Input values; ready while the input buffer is free (a register).
    load : Out(stream.Signature(:func:`~nmflow.rtl.activations.load_layout`, always_ready=True))
        Each input beat taken, with its index and the input bank it goes to.
    cmd : Out(stream.Signature(command_layout(plan), always_ready=True))
        One row per cycle while running.
    completed : In(1)
        Strobe: a hidden group issued earlier has completed (its activations written). The
        sequencer keeps to the plan's gaps instead; the strobe is for testbenches and probes.
    scored : In(1)
        Strobe: a group of the last layer issued earlier has completed (its scores stored).
    emit : Out(1)
        Strobe: every score is stored; send the results.
    busy : In(1)
        The score unit is still sending results (a register).
    idle : Out(1)
        No inference is running or finishing and no input beat of the next one has been taken:
        nothing reads the weight memory.
    """

    def __init__(self, plan):
        self._plan = plan
        super().__init__({
            "i": In(stream.Signature(unsigned(plan.model.input_bits))),
            "load": Out(stream.Signature(load_layout(plan), always_ready=True)),
            "cmd": Out(stream.Signature(command_layout(plan), always_ready=True)),
            "completed": In(1),
            "scored": In(1),
            "emit": Out(1),
            "busy": In(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        n_layers = plan.n_layers
        walk = (_ConvWalk if plan.has_conv else _DenseWalk)(m, plan)
        layer = walk.layer
        # DRAIN's countdown (it lasts ``layer_gaps[layer]`` cycles): ``wait`` cycles left after
        # this one, ``wait_end`` when none (registers)
        gap_of, wait_shape = _gap_table(plan)
        wait, wait_end = Signal(wait_shape), Signal()
        # the last layer's groups in flight, counted apart; ``finishing`` from its last row to
        # the results' start, and ``handoff`` the cycle after (the score unit not yet ``busy``)
        pending_last = Signal(range(plan.groups[-1] + 2))
        scored_all = Signal(init=1)
        finishing, handoff = Signal(), Signal()
        scores_taken = self.busy | finishing | handoff
        issue = Signal()

        # -- the loader: ``have`` (a complete vector waits), ``in_use`` (the running inference
        # still reads the input buffer: from its start to its first layer's last row) and
        # ``loading`` (neither: the input stream's ready, straight from a flip-flop), each
        # register given its next value below --------------------------------------------------
        in_count = Signal(range(max(plan.n_inputs, 2)))
        in_end = Signal(init=plan.n_inputs == 1)    # in_count == n_inputs - 1
        have, in_use, loading = Signal(), Signal(), Signal(init=1)
        have_next, in_use_next = Signal(), Signal()
        take = Signal()                     # an input beat is taken
        start = Signal()                    # the runner starts an inference (takes the vector)
        first_done = Signal()               # the first layer's last row is issued
        last_beat = take & in_end
        m.d.comb += [take.eq(self.i.valid & loading),
                     self.load.valid.eq(take),
                     self.load.payload.value.eq(self.i.payload),
                     self.i.ready.eq(loading)]
        _count_inputs(m, take, in_count, in_end, plan.n_inputs)
        _load_index(m, plan, take, last_beat, in_count, self.load.payload.index)
        m.d.comb += [have_next.eq((have | last_beat) & ~start),
                     in_use_next.eq((in_use | start) & ~first_done)]
        m.d.sync += [have.eq(have_next), in_use.eq(in_use_next)]
        _input_banks(m, plan, last_beat, start, have_next, in_use_next, loading,
                     self.load.payload, self.cmd.payload)

        # -- the runner ------------------------------------------------------------------------
        def begin():
            m.d.comb += start.eq(1)
            walk.begin()

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                m.d.comb += self.idle.eq((in_count == 0) & ~have & ~finishing)
                with m.If(have | last_beat):
                    if plan.waits_for_results:
                        with m.If(scores_taken):
                            m.next = "WAIT"
                        with m.Else():
                            begin()
                            m.next = "RUN"
                    else:
                        begin()
                        m.next = "RUN"
            with m.State("WAIT"):               # the results of the last inference go out
                # (the vector is taken when it runs: with two input banks the next one loads
                # from then on)
                with m.If(~scores_taken):
                    begin()
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += issue.eq(1)
                walk.step()
                with m.If(walk.layer_done):
                    m.d.comb += first_done.eq(layer == 0)
                    with m.If(walk.final):
                        m.d.sync += finishing.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [wait.eq(gap_of[layer]), wait_end.eq(gap_of[layer] == 0)]
                        m.next = "DRAIN"
            with m.State("DRAIN"):              # (hidden layers only)
                with m.If(~wait_end):
                    m.d.sync += [wait.eq(wait - 1), wait_end.eq(wait == 1)]
                with m.Else():                  # the next layer's chunks are written in time
                    with m.If(((layer == n_layers - 2) if n_layers >= 2 else 0)
                              & scores_taken):
                        # The last layer waits for the last inference's scores to be stored and
                        # sent: the plan's interval counts the cycles (``last_layer_gap``).
                        pass
                    with m.Else():
                        walk.enter(layer + 1)
                        m.next = "RUN"

        # -- the finisher: the results go once every group of the last layer is stored ----------
        _finish(m, finishing, handoff, scored_all)

        # Last-layer groups in flight (``scored_all``: none).
        _count_in_flight(m, pending_last, scored_all, walk.group_done & walk.final, self.scored)

        m.d.comb += [self.cmd.valid.eq(issue), self.emit.eq(finishing & scored_all)]
        walk.drive(self.cmd.payload)
        return m


class _DenseWalk:
    """The rows of fully connected layers: layer after layer, group after group, chunk after
    chunk (the weight-memory address counts up, as the memory map lays the rows; the chunk of
    activations is the row's index within its group). Every end-of-count test is a register
    computed a cycle ahead.

    ``layer_done`` and ``group_done`` (combinational) mark the issue of a layer's and a group's
    last row; ``final`` is the last layer (a register)."""

    def __init__(self, m, plan):
        self.m, self.plan = m, plan
        per, groups = plan.per, plan.groups
        self.layer = Signal(range(max(plan.n_layers, 2)))
        self.per_last_of = Array(Const(p - 1, range(max(per))) for p in per)
        self.out_last_of = Array(Const(g - 1, range(max(groups))) for g in groups)
        self.cur_per_last = Signal(range(max(per)))
        self.cur_out_last = Signal(range(max(groups)))
        self.final = Signal()
        self.chunk_end = Signal()                # chunk == cur_per_last
        self.neuron_end = Signal()               # group == cur_out_last
        # Digits of a digit-serial first layer: each row is issued ``passes[0]`` times.
        self.planes = plan.passes[0]
        self.plane = Signal(plan.plane_bits)
        self.plane_end = Signal()                # plane == the layer's last plane
        self.single = Signal()                   # the layer takes one pass per row
        self.neuron = Signal(plan.group_bits)
        self.chunk = Signal(range(max(max(per), 2)))
        self.addr = Signal(plan.addr_bits)
        self.hidden = Signal(plan.hidden_bits)
        self.group_done, self.layer_done = Signal(), Signal()

    def enter(self, index):
        """Load the registers of layer ``index`` (its first neuron, first chunk)."""
        plan = self.plan
        if isinstance(index, int):
            per_last, out_last = Const(plan.per[index] - 1), Const(plan.groups[index] - 1)
        else:
            per_last, out_last = self.per_last_of[index], self.out_last_of[index]
        one = (index != 0) if self.planes > 1 else 1
        self.m.d.sync += [
            self.layer.eq(index), self.cur_per_last.eq(per_last),
            self.cur_out_last.eq(out_last), self.final.eq(index == plan.n_layers - 1),
            self.chunk_end.eq(per_last == 0), self.neuron_end.eq(out_last == 0),
            self.plane.eq(0), self.single.eq(one), self.plane_end.eq(one),
        ]

    def begin(self):
        self.m.d.sync += [self.neuron.eq(0), self.chunk.eq(0), self.addr.eq(0),
                          self.hidden.eq(0)]
        self.enter(0)

    def step(self):
        """One row issued (in ``RUN``)."""
        m = self.m
        plane, plane_end, chunk, neuron = self.plane, self.plane_end, self.chunk, self.neuron
        with m.If(~plane_end):          # the next bit plane of the same row
            m.d.sync += [plane.eq(plane + 1), plane_end.eq(plane + 1 == self.planes - 1)]
        with m.Elif(self.chunk_end):
            m.d.comb += self.group_done.eq(1)
            m.d.sync += [chunk.eq(0), self.chunk_end.eq(self.cur_per_last == 0)]
            with m.If(~self.final):
                m.d.sync += self.hidden.eq(self.hidden + 1)
            with m.If(self.neuron_end):
                m.d.sync += neuron.eq(0)
                m.d.comb += self.layer_done.eq(1)
            with m.Else():
                m.d.sync += [neuron.eq(neuron + 1),
                             self.neuron_end.eq(neuron + 1 == self.cur_out_last)]
        with m.Else():
            m.d.sync += [chunk.eq(chunk + 1), self.chunk_end.eq(chunk + 1 == self.cur_per_last)]
        with m.If(plane_end):
            m.d.sync += [self.addr.eq(self.addr + 1), plane.eq(0), plane_end.eq(self.single)]

    def drive(self, cmd):
        chunk, plane = self.chunk, self.plane
        self.m.d.comb += [
            cmd.addr.eq(self.addr), cmd.chunk.eq(chunk),
            cmd.tag.layer.eq(self.layer), cmd.tag.group.eq(self.neuron),
            cmd.tag.hidden.eq(self.hidden),
            cmd.tag.first.eq((chunk == 0) & (plane == 0)),
            cmd.tag.last.eq(self.chunk_end & self.plane_end),
            cmd.tag.end.eq(self.neuron_end), cmd.tag.plane.eq(plane),
        ]
