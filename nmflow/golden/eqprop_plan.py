"""The EqProp learning unit's plan: formats, memory map, pipelines, schedule and figures.

:class:`EqPropPlan` is to :class:`nmflow.rtl.eqprop.EqPropUnit` what
:class:`~nmflow.golden.plan.EnginePlan` is to the inference engine: plain Python (no Amaranth),
computed once from the twin's configuration and the lane count. The unit's components take their
widths, addresses and schedule from it; the tests, the flow and the command line read its cycle
figures and its block RAM needs from it without building a component.

Block RAM depends on the board: :meth:`EqPropPlan.block_rams` and :meth:`EqPropPlan.check_fit`
take the board's description (a :class:`nmflow.boards.board.Board`, or any object with its
``title``, ``block_rams``, ``block_ram_bits`` and ``block_rams_needed(depth, width)``), passed in
by whoever builds for the board; this module does not import the boards.
"""

from ..errors import NmflowError
from ..fixedpoint import FixedFormat
from .eqprop_fixed import DRAW_BITS, FixedEqPropConfig, accumulator_format
from .eqprop_layout import EqPropLayout

__all__ = ["EqPropPlan", "STORAGES", "SPRAM_WORDS", "CODE_BITS", "SETTLING_PIPELINE", "UPDATE_PIPELINE", "PIPELINE_DEPTH",
           "ADDRESS_STAGES", "WRITE_TO_READ", "FEEDBACK_DEPTH", "FEEDBACK_TO_READ",
           "STEP_CONTROL_CYCLES", "PUSH", "PUSH_TARGET", "FREE", "PLUS", "MINUS"]

#: The phases of a training sample, as the unit numbers them: the free phase, the ``+beta``
#: phase and the ``-beta`` phase (also the nudge a phase applies to the output layer).
FREE, PLUS, MINUS = 0, 1, 2

#: The settling pipeline, stage by stage; every stage after the issue takes one cycle. The issue
#: registers the memory addresses, so the memories take them one cycle later
#: (:data:`ADDRESS_STAGES`).
SETTLING_PIPELINE = ("issue (addresses, registered)", "memory read", "rotation onto the lanes",
                     "products (binary: +-s, summed in groups of 4 lanes)", "adder tree (real: the pairs; binary: the groups' sum)",
                     "tree's last sum (binary: the chunk sum times a_k)", "accumulator and nudge",
                     "rounding and clip", "state write and argmax")

#: Cycles from a settling command's issue to its state write.
PIPELINE_DEPTH = len(SETTLING_PIPELINE) - 1

#: Cycles from a settling command's issue to the cycle whose end the memories take its
#: addresses in.
ADDRESS_STAGES = 1

#: The smallest distance, in issue cycles, from a command whose neuron's state is written to a
#: command that reads that state's row and must see the new value (the memories' read ports are
#: not transparent: the write must be done at a clock edge before the one that takes the read's
#: address).
WRITE_TO_READ = PIPELINE_DEPTH - ADDRESS_STAGES + 1

#: Cycles from a push command's issue to the feedback memory's write of its chunk's sums (issue,
#: memory read, rotation, products, the lanes' feedback sums; the write in the next cycle).
FEEDBACK_DEPTH = 5

#: The smallest distance, in issue cycles, from the last push command of a chunk to a settling
#: command that reads that chunk's feedback word (the feedback memory's read port is not
#: transparent either).
FEEDBACK_TO_READ = FEEDBACK_DEPTH - ADDRESS_STAGES + 1

#: The block of a step's schedule (:attr:`EqPropPlan.blocks`) that is the output layer's push.
PUSH = "push"

#: Without ``push`` given, the plan pushes where the step without the push takes more than this
#: many times the ideal and the push shortens it (:meth:`EqPropPlan.issue_cycles_per_step`).
PUSH_TARGET = 1.05

#: The update pipeline: one parameter per cycle; the stages a configuration does not need (the
#: decay without ``decay_shift``, the ``f_meta`` stages without metaplasticity, the write's
#: register without single-port hidden banks) are left out
#: (:attr:`EqPropPlan.update_stages`).
UPDATE_PIPELINE = ("issue (products, old value, address, draw)", "D", "decay",
                   "stochastic rounding", "f_meta product", "f_meta choice",
                   "sum, saturation and write", "write register")

#: Cycles of a settling step spent on neither commands nor drains (the sequencer's STEP_END and
#: STEP_NEXT).
STEP_CONTROL_CYCLES = 2

#: Where the hidden weights of a binary unit live (``EqPropPlan(storage=...)``): ``"memory"``,
#: ``L`` dual-port memories (block RAM); ``"spram"``, one single-port 16K x 16 RAM per bank (the
#: iCE40UP5K's ``SB_SPRAM256KA``), which the bitstream cannot initialise.
STORAGES = ("memory", "spram")

#: Words of one single-port RAM (``SB_SPRAM256KA``: 16,384 words of 16 bits).
SPRAM_WORDS = 16384

#: Bits of a pair code (``BL << 1 | BLb``, :mod:`nmflow.golden.pairs`).
CODE_BITS = 2


class EqPropPlan:
    """Everything about an EqProp unit that follows from its configuration and lane count.

    Parameters
    ----------
    config : :class:`~nmflow.golden.eqprop_fixed.FixedEqPropConfig`
        ``batch`` must be 1, the estimate symmetric and the update rounding stochastic.
    lanes : int
        Multiply-accumulate lanes (a power of two from 1 to 64; every size but the last a
        multiple of it).
    push : bool or None
        The output-side push (below). None: where the free step without it takes more than
        :data:`PUSH_TARGET` times :meth:`ideal_cycles_per_step` and the push makes it shorter
        (none of the 4-lane builds: 64-32-10 takes 698 cycles for an ideal 672 without it).
    storage : str
        Binary weights only: where the hidden weights live (:data:`STORAGES`). The dynamics read
        the binary weights as pair codes from ``L`` code banks (2 bits a weight, block RAM);
        the update reads and writes the hidden weights, ``L`` 16-bit banks beside them, and
        rewrites a weight's pair code with its hidden weight. With ``"spram"`` the hidden banks
        are single-port: the update's read of a weight chunk waits while a write to them is in
        the same cycle (:attr:`update_cycles` counts the waits), and the host must load the
        hidden weights before training (the pair codes come with the bitstream).

    The output-side push: instead of every neuron of layer ``N - 1`` reading
    ``ceil(n_N / L)`` column chunks of ``W_{N-1}^T s_N`` padded to ``L`` lanes, the output layer
    pushes. For each chunk ``c`` of layer ``N - 1`` and each output neuron ``o``, one command
    reads the row chunk ``W_{N-1}[o, cL ... cL + L-1]`` (the output's own forward row chunk)
    and broadcasts ``s_N[o]``; lane ``l`` adds its product to a feedback sum of neuron
    ``cL + l`` (binary weights: ``+-s_o``, scaled by ``a_{N-1}`` when the neuron takes it).
    After the last ``o`` the ``L`` sums go to the feedback memory (row ``c``); a neuron of
    layer ``N - 1`` then reads only its row chunks and takes its feedback word with its bias.
    ``n_N n_{N-1} / L`` push commands replace ``n_{N-1} ceil(n_N / L)`` column commands. The
    push reads the states of layer ``N`` the twin's order gives layer ``N - 1``: with ``N``
    even at the start of a step (the previous step's), with ``N`` odd after the first group
    of layers (which writes layer ``N``).

    Members
    -------
    layout : :class:`~nmflow.golden.eqprop_layout.EqPropLayout`
        The memory map.
    state_format, weight_format : :class:`FixedFormat`
        A neuron state (``u0.8``) and a weight or bias (``s2.13``), the twin's.
    acc_format : :class:`FixedFormat`
        Every pre-activation, nudge included (the twin's ``accumulator_format``).
    acc_register_format : :class:`FixedFormat`
        The accumulator register: ``acc_format`` and one more integer bit.
    product_format : :class:`FixedFormat`
        A lane's product of a weight and a state; with binary weights ``+-s``.
    chunk_sum_format : :class:`FixedFormat` or None
        With binary weights: a chunk's sum of ``+-s`` over the lanes, before the product with
        the weight layer's ``a_k`` (``config.binary_alphas``).
    delta_format : :class:`FixedFormat`
        The update's ``D = s+_r s+_i - s-_r s-_i`` (and a bias's ``s+_r - s-_r``).
    error_format : :class:`FixedFormat`
        The nudge's ``y - s_N`` of an output neuron.
    draw_bits : int
        Bits of one LFSR draw (one per parameter).
    layer_order : tuple of int
        State layers in the order a settling step computes them: odd layers, then even ones.
    push : bool
        Whether the output layer pushes its feedback (above).
    blocks : tuple
        The blocks of a step in issue order: ``layer_order``, with :data:`PUSH` inserted before
        the group that holds layer ``N - 1`` when the plan pushes.
    drain_after : tuple of bool
        For each block, whether it ends a group (the next block reads what this one wrote):
        the last layer of a group, the push, and the block before the push.
    drain_cycles : tuple of int
        For each block, the cycles the sequencer waits after it before the next block's first
        command: 0 inside a group; between two groups, what the next group needs for every
        state and feedback word it reads to have been written (:meth:`_drains`, often 0: the
        next group reads the last rows written only after a few commands); after the last
        group :data:`PIPELINE_DEPTH` (every write and the argmax done before ``STEP_END``).

    Raises
    ------
    NmflowError
        A configuration the unit cannot run, or a lane count that does not fit the sizes.
    """

    def __init__(self, config, lanes, push=None, storage="memory"):
        if not isinstance(config, FixedEqPropConfig):
            raise NmflowError(f"config must be a FixedEqPropConfig, not {type(config).__name__}")
        if config.batch != 1:
            raise NmflowError(f"batch must be 1 (the unit learns sample by sample), not "
                              f"{config.batch}")
        if config.estimate != "symmetric":
            raise NmflowError(f"estimate must be symmetric, not {config.estimate!r}")
        if config.update_rounding != "stochastic":
            raise NmflowError(f"update_rounding must be stochastic, not "
                              f"{config.update_rounding!r}")
        self.config = config
        self.layout = EqPropLayout(config.sizes, lanes)
        self.lanes = lanes
        if storage not in STORAGES:
            raise NmflowError(f"storage must be one of {', '.join(STORAGES)}, not {storage!r}")
        if storage == "spram" and config.weights != "binary":
            raise NmflowError(f"storage 'spram' holds hidden weights: weights must be 'binary', "
                              f"not {config.weights!r}")
        if storage == "spram" and self.layout.wdepth > SPRAM_WORDS:
            raise NmflowError(f"storage 'spram' holds a weight bank in one {SPRAM_WORDS}-word "
                              f"RAM: network {'-'.join(map(str, config.sizes))} at {lanes} lanes "
                              f"needs {self.layout.wdepth} words a bank")
        self.storage = storage
        s = self.state_format = config.state
        w = self.weight_format = config.weight
        acc = self.acc_format = accumulator_format(config)
        self.acc_register_format = FixedFormat(True, acc.int_bits + 1, acc.frac_bits)
        if config.weights == "binary":
            # a lane adds or subtracts its state; the chunk's sum (a state times up to L, signed)
            # is multiplied once by the weight layer's alpha (binary_alphas)
            self.product_format = FixedFormat(True, s.int_bits + 1, s.frac_bits)
            self.chunk_sum_format = FixedFormat(True, s.int_bits + lanes.bit_length(),
                                                s.frac_bits)
        else:
            self.product_format = FixedFormat(True, w.int_bits + s.int_bits + 1,
                                              w.frac_bits + s.frac_bits)
            self.chunk_sum_format = None
        self.delta_format = FixedFormat(True, 2 * s.int_bits + 1, 2 * s.frac_bits)
        self.error_format = FixedFormat(True, 2, s.frac_bits)
        self.draw_bits = DRAW_BITS
        N = self.N
        self.layer_order = tuple([k for k in range(1, N + 1) if k % 2 == 1]
                                 + [k for k in range(1, N + 1) if k % 2 == 0])
        order = self.layer_order
        if push not in (None, True, False):
            raise NmflowError(f"push must be True, False or None (the plan decides), not "
                              f"{push!r}")
        if push and N < 2:
            raise NmflowError(f"push needs a hidden layer below the output layer, not sizes "
                              f"{'-'.join(map(str, self.sizes))}")
        if push is None:
            self._schedule(False)
            plain = self.issue_cycles_per_step()
            if N >= 2 and plain > PUSH_TARGET * self.ideal_cycles_per_step():
                self._schedule(True)
                if self.issue_cycles_per_step() < plain:
                    return
            self._schedule(False)
        else:
            self._schedule(push)

    def _schedule(self, push):
        """Set :attr:`push`, :attr:`blocks`, :attr:`drain_after` and :attr:`drain_cycles`."""
        self.push, order, N = push, self.layer_order, self.N
        blocks = list(order)
        if push:
            # before the group that holds layer N - 1: at the step's start for N even (layer
            # N - 1 is odd), after the first group (which writes layer N) for N odd
            blocks.insert(0 if N % 2 == 0 else blocks.index(min(k for k in order if k % 2 == 0)),
                          PUSH)
        self.blocks = tuple(blocks)
        self.drain_after = tuple(
            index + 1 == len(blocks) or PUSH in (block, blocks[index + 1])
            or blocks[index + 1] % 2 != block % 2 for index, block in enumerate(blocks))
        self.drain_cycles = self._drains()

    # -- sizes ---------------------------------------------------------------------------------
    sizes = property(lambda self: self.config.sizes)
    N = property(lambda self: len(self.config.sizes) - 1)
    n_inputs = property(lambda self: self.config.sizes[0])
    n_classes = property(lambda self: self.config.sizes[-1])

    @property
    def lane_bits(self):
        """``log2(lanes)``: the bits of a bank index (0 for one lane)."""
        return self.lanes.bit_length() - 1

    @property
    def label_bits(self):
        """Bits of a class index (at least 1)."""
        return max(1, (self.n_classes - 1).bit_length())

    @property
    def word_bits(self):
        """Bits of a word of the observation stream and the host port: a state or a weight."""
        return max(self.state_format.width, self.weight_format.width)

    @property
    def host_addr_bits(self):
        """Bits of a host port address: the deepest memory's depth."""
        lay = self.layout
        return max(depth.bit_length() for depth in (lay.wdepth, lay.bdepth, lay.sdepth, 2))

    @property
    def max_neurons(self):
        """Neurons of the widest state layer."""
        return max(self.sizes[1:])

    def row_chunks(self, k):
        """Row chunks of a neuron of state layer ``k``: its inputs from layer ``k - 1``, ``L``
        per chunk."""
        return self.sizes[k - 1] // self.lanes

    def column_chunks(self, k):
        """Column chunks of a neuron of state layer ``k``: its feedback from layer ``k + 1``,
        ``L`` per chunk (the last layer's padded); none for the output layer, nor for layer
        ``N - 1`` when the output layer pushes."""
        if k == self.N or (self.push and k == self.N - 1):
            return 0
        return self.layout.chunks[k + 1]

    @property
    def push_chunks(self):
        """Chunks of layer ``N - 1`` the push walks (the feedback memory's rows); 0 without
        the push."""
        return self.sizes[self.N - 1] // self.lanes if self.push else 0

    @property
    def push_commands(self):
        """Commands of the push in a step: one per chunk of layer ``N - 1`` and output neuron."""
        return self.push_chunks * self.n_classes

    @property
    def feedback_format(self):
        """A lane's feedback sum of the push and a word of the feedback memory: the sum of
        ``n_N`` products (binary weights: of ``+-s``, before ``a_{N-1}``), exact."""
        p = self.product_format
        return FixedFormat(True, p.int_bits + self.n_classes.bit_length(), p.frac_bits)

    # -- schedule ------------------------------------------------------------------------------
    def neuron_commands(self, k, nudged=False):
        """The settling commands of one neuron of state layer ``k`` in a step, as the state rows
        they read: ``(layer, row)`` (layer 0 is the input ``x``), in issue order (the self-read
        of a nudged phase's output neuron is ``None``: it reads only the neuron's own old
        state)."""
        cmds = [None] if (nudged and k == self.N) else []
        cmds += [(k - 1, c) for c in range(self.row_chunks(k))]
        cmds += [(k + 1, c) for c in range(self.column_chunks(k))]
        return cmds

    def block_commands(self, block, nudged=False):
        """The commands of a block of :attr:`blocks` in issue order, each as ``(reads,
        write)``: ``reads`` the ``(what, distance)`` it reads (``what`` a state row ``(layer,
        row)`` or a feedback row ``(PUSH, c)``; ``distance`` the issue cycles it must come
        after the command that wrote it), ``write`` what it completes (a neuron's last command
        its state row, a chunk's last push command its feedback row) or None."""
        L, N = self.lanes, self.N
        if block == PUSH:
            return [([((N, o // L), WRITE_TO_READ)],
                     (PUSH, c) if o == self.n_classes - 1 else None)
                    for c in range(self.push_chunks) for o in range(self.n_classes)]
        cmds = []
        for n in range(self.sizes[block]):
            rows = self.neuron_commands(block, nudged)
            for index, row in enumerate(rows):
                reads = [] if row is None else [(row, WRITE_TO_READ)]
                if self.push and block == N - 1 and index == 0:
                    reads.append(((PUSH, n // L), FEEDBACK_TO_READ))
                cmds.append((reads, (block, n // L) if index == len(rows) - 1 else None))
        return cmds

    def _drains(self):
        """:attr:`drain_cycles`: walk a step's commands (free and nudged), and before each group
        but the first wait as long as needed for its reads of a row written in this step to
        come its distance (:data:`WRITE_TO_READ`, :data:`FEEDBACK_TO_READ`) or more after the
        command that wrote it."""
        blocks = self.blocks
        drains = [0] * len(blocks)
        for nudged in (False, True):
            written, t = {}, 0          # state or feedback row -> issue cycle of its last write
            for index, block in enumerate(blocks):
                if index and self.drain_after[index - 1]:
                    reads, u = [], 0
                    for i in range(index, len(blocks)):
                        for cmd_reads, _ in self.block_commands(blocks[i], nudged):
                            reads += [(written[row] + distance, u)
                                      for row, distance in cmd_reads if row in written]
                            u += 1
                        if self.drain_after[i]:
                            break
                    need = max([0] + [w - (t + u) for w, u in reads])
                    drains[index - 1] = max(drains[index - 1], need)
                    t += drains[index - 1]
                for _, write in self.block_commands(block, nudged):
                    if write is not None:
                        written[write] = t
                    t += 1
        drains[-1] = PIPELINE_DEPTH
        return tuple(drains)

    # -- cycles --------------------------------------------------------------------------------
    def ideal_cycles_per_step(self):
        """Multiply-accumulates of a settling step divided by the lanes: the sum over state
        layers of fan-in (below and above) times neurons, over ``L``."""
        s, N = self.sizes, self.N
        return sum(s[k] * (s[k - 1] + (s[k + 1] if k < N else 0)) for k in range(1, N + 1)) \
            / self.lanes

    def issue_cycles_per_step(self, nudged=False):
        """Cycles of one settling step as the unit schedules it: one per command (row and
        column chunks of every neuron, the push's, and in a nudged phase one self-read per
        output neuron), the drains (:attr:`drain_cycles`), and :data:`STEP_CONTROL_CYCLES`."""
        N = self.N
        commands = sum(self.sizes[k] * (self.row_chunks(k) + self.column_chunks(k))
                       for k in range(1, N + 1)) + self.push_commands
        if nudged:
            commands += self.sizes[N]
        return commands + sum(self.drain_cycles) + STEP_CONTROL_CYCLES

    @property
    def update_stages(self):
        """The stages of :data:`UPDATE_PIPELINE` this configuration has: the decay only with
        ``decay_shift``, the ``f_meta`` product and choice only with ``m > 0``, the write's
        register only with ``storage="spram"`` (the write data to RAMs at the die's edge)."""
        cfg = self.config
        skip = set() if self.storage == "spram" else {"write register"}
        if not cfg.decay_shift:
            skip.add("decay")
        if not cfg.m > 0:
            skip.update(("f_meta product", "f_meta choice"))
        return tuple(stage for stage in UPDATE_PIPELINE if stage not in skip)

    @property
    def update_latency(self):
        """Cycles from a parameter's issue to its write: one per stage of
        :attr:`update_stages` after the issue (3 for real weights, 4 with a decay, 6 with a
        decay and metaplasticity, one more with SPRAM hidden weights)."""
        return len(self.update_stages) - 1

    @property
    def update_cycles(self):
        """Cycles of a training sample's update (observation off), from the ``step`` pulse of
        the last ``-beta`` step to the prediction on ``o``: one to end the phase; per weight
        row three cycles to read ``s+_r`` and ``s-_r``, per chunk three to read the weights and
        the ``s+`` and ``s-`` chunks and then one parameter a cycle, per bias three cycles;
        :attr:`update_latency` for the last write, one to finish, and the prediction's
        register. With single-port hidden banks (``storage="spram"``) a chunk's read also
        waits while a parameter is written (:meth:`update_waits`)."""
        L = self.lanes
        walk = sum(self.sizes[k + 1] * (3 + self.sizes[k] // L * (3 + L) + 3)
                   for k in range(self.N))
        return 1 + walk + 2 + self.update_latency + self.update_waits()

    def update_waits(self):
        """Cycles the update's chunk reads wait for the single-port hidden banks: the walk of
        :attr:`update_cycles`, where a weight issued in cycle ``t`` is written in cycle
        ``t + update_latency`` and a chunk's read (its first cycle) cannot share a cycle with a
        write. 0 with ``storage="memory"``."""
        if self.storage != "spram":
            return 0
        L, lat = self.lanes, self.update_latency
        t = waits = 0
        writes = set()                           # cycles in which a weight is written
        for k in range(self.N):
            for _ in range(self.sizes[k + 1]):
                t += 3                                           # the row's states
                for _ in range(self.sizes[k] // L):
                    while t in writes:
                        t, waits = t + 1, waits + 1
                    t += 3                                       # weights, s+ and s- chunks
                    writes.update(range(t + lat, t + lat + L))
                    t += L
            t += 3 * self.sizes[k + 1]                           # the biases
        return waits

    # -- memories and block RAM ----------------------------------------------------------------
    @property
    def memories(self):
        """The unit's memories as ``{name: (depth, width)}``, each read one word at a time:
        ``L`` weight banks (binary weights: ``L`` pair-code banks, and ``L`` hidden-weight
        banks unless they are in single-port RAMs, :attr:`sprams`), ``L`` state banks and the
        bias memory (the push's small feedback memory is :attr:`feedback_memory`)."""
        lay, L = self.layout, self.lanes
        ww, sw = self.weight_format.width, self.state_format.width
        if self.config.weights == "binary":
            out = {f"code bank {b}": (lay.wdepth, CODE_BITS) for b in range(L)}
            if self.storage == "memory":
                out.update({f"hidden bank {b}": (lay.wdepth, ww) for b in range(L)})
        else:
            out = {f"weight bank {b}": (lay.wdepth, ww) for b in range(L)}
        out.update({f"state bank {b}": (lay.sdepth, sw) for b in range(L)})
        out["biases"] = (lay.bdepth, ww)
        return out

    @property
    def feedback_memory(self):
        """The push's feedback memory as ``(depth, width)`` (one word of ``L`` sums a row of
        :attr:`push_chunks`), or None without the push. Not in :attr:`memories` nor counted in
        block RAM: a few rows deep, synthesis keeps it in LUT RAM or flip-flops (distributed
        RAM on the ECP5)."""
        if not self.push:
            return None
        return (self.push_chunks, self.lanes * self.feedback_format.width)

    @property
    def sprams(self):
        """Single-port 16K x 16 RAMs: one per hidden-weight bank with ``storage="spram"``."""
        return self.lanes if self.storage == "spram" else 0

    def block_rams(self, board):
        """Block RAMs the memories take on ``board`` (its ``block_rams_needed`` for each)."""
        return sum(board.block_rams_needed(depth, width)
                   for depth, width in self.memories.values())

    def check_fit(self, board):
        """Refuse (one-line :class:`NmflowError`) a unit whose memories need more block RAMs
        (or single-port RAMs) than ``board`` has; return the block RAMs needed."""
        needed = self.block_rams(board)
        net = f"network {'-'.join(map(str, self.sizes))} with {self.lanes} lanes"
        if needed > board.block_rams:
            raise NmflowError(f"{net} needs {needed} block RAMs of "
                              f"{board.block_ram_bits / 1024:g} kbit, the {board.title} has "
                              f"{board.block_rams}")
        if self.sprams > getattr(board, "sprams", 0):
            raise NmflowError(f"{net} keeps its hidden weights in {self.sprams} single-port "
                              f"RAMs (storage 'spram'), the {board.title} has "
                              f"{getattr(board, 'sprams', 0)}")
        return needed

    def to_dict(self):
        """The plan's figures as plain JSON types."""
        return {
            "sizes": list(self.sizes), "lanes": self.lanes, "push": self.push,
            "storage": self.storage, "sprams": self.sprams,
            "layer_order": list(self.layer_order), "blocks": list(self.blocks),
            "pipeline_depth": PIPELINE_DEPTH,
            "drain_cycles": list(self.drain_cycles), "update_latency": self.update_latency,
            "ideal_cycles_per_step": self.ideal_cycles_per_step(),
            "issue_cycles_per_step": {"free": self.issue_cycles_per_step(),
                                      "nudged": self.issue_cycles_per_step(nudged=True)},
            "update_cycles": self.update_cycles,
            "memories": {name: list(shape) for name, shape in self.memories.items()},
            "feedback_memory": list(self.feedback_memory) if self.push else None,
            "formats": {name: getattr(self, f"{name}_format").to_dict()
                        for name in ("state", "weight", "acc", "product", "delta")},
        }
