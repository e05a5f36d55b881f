"""The inference engine's plan: widths, memory map, pipeline and figures, computed once.

:class:`EnginePlan` is plain Python (no Amaranth, no torch). The engine's components are built from
it, the golden reference reads its weights through the same :class:`~nmflow.golden.pairs.MemoryMap`,
and the flow, the benchmarks and the board fit checks read their figures (cycles per inference,
memories and their block RAM needs) from it without building a component.
"""

from dataclasses import dataclass

from ..errors import NmflowError
from ..fixedpoint import FixedFormat, integer_format
from .hwmodel import HardwareModel
from .pairs import MemoryMap, memory_codes

__all__ = ["EnginePlan", "Walk", "check_lanes", "check_pe", "index_bits", "spram_tiles", "MEMORY_KINDS",
           "WEIGHT_KINDS", "SPRAM_WORDS", "SPRAM_BITS", "PIPELINE"]

#: How the engine's memories are built: ``"block"`` infers block RAM (EBR on iCE40, DP16KD on
#: ECP5) with synchronous read ports, initialised with the bitstream; ``"logic"`` builds the same
#: synchronous ports from flip-flops and LUTs (tiny networks, or a device without block RAM).
MEMORY_KINDS = ("block", "logic")

#: How the weight memory can be built: a :data:`MEMORY_KINDS` kind, or ``"spram"``: the iCE40UP5K's
#: single-port 16K x 16 SPRAMs (``SB_SPRAM256KA``), tiled :func:`spram_tiles` to the row width and
#: depth. SPRAM cannot be initialised with the bitstream: its rows are written at run time (the host
#: link's WEIGHTS command on a board, the testbench in simulation) before the first inference. The
#: engine's other memories are then block RAM.
WEIGHT_KINDS = MEMORY_KINDS + ("spram",)

#: Words and bits of one SPRAM (``SB_SPRAM256KA``: 256 kbit).
SPRAM_WORDS, SPRAM_BITS = 16384, 16


def spram_tiles(rows, width):
    """``(columns, banks)``: the SPRAMs side by side that make a row of ``width`` bits, and the
    banks of :data:`SPRAM_WORDS` rows stacked to hold ``rows`` rows; ``columns * banks`` SPRAMs
    in all."""
    return -(-width // SPRAM_BITS), -(-rows // SPRAM_WORDS)

#: The engine's pipeline, stage by stage, with the cycles each stage takes. ``read stage`` and
#: ``lanes and adder tree`` depend on the read stage and the lane count; ``argmax`` takes one
#: more cycle when the last layer's scores come at least two cycles apart.
PIPELINE = {
    "hidden": ("weight read", "register", "read stage", "lanes and adder tree", "accumulate",
               "parameters", "threshold", "activation write"),
    "last": ("weight read", "register", "read stage", "lanes and adder tree", "accumulate",
             "parameters", "multiply", "add offset", "argmax"),
}


def check_lanes(lanes):
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1 or lanes > 1024 \
            or lanes & (lanes - 1):
        raise NmflowError(f"lanes must be a power of two between 1 and 1024, not {lanes!r}")
    return lanes


def check_pe(pe, lanes):
    """``pe`` (neurons per cycle) as the engine takes it: a power of two that leaves each neuron
    at least as many lanes as it has neurons per cycle (``pe * pe <= lanes``), so that a group's
    activations are written into one row of a buffer."""
    if not isinstance(pe, int) or isinstance(pe, bool) or pe < 1 or pe & (pe - 1) \
            or pe * pe > lanes:
        raise NmflowError(f"pe must be a power of two with pe * pe <= lanes = {lanes} (each of "
                          f"the pe neurons over simd = lanes / pe >= pe lanes), not {pe!r}")
    return pe


def index_bits(count):
    """Bits of an index into ``count`` things (at least 1)."""
    return max(1, (count - 1).bit_length())


class EnginePlan:
    """Everything about an inference engine that follows from its model and lane count.

    Parameters
    ----------
    model : :class:`~nmflow.golden.hwmodel.HardwareModel`
    lanes : int
        GXNOR lanes, a power of two from 1 to 1024: pair codes read per cycle, ``simd * pe``.
    pe : int
        Neurons computed side by side (processing elements), each over ``simd = lanes / pe``
        lanes (:func:`check_pe`).
    read_latency : int
        Cycles the read stage (pair codes to ternary weights) takes; 0 for the ideal PCSA read.
    first_layer_bits : int or None
        Input bits the first layer takes per cycle, from 1 to ``input_bits``; ``None`` (the
        default) is ``input_bits``. Every lane is ``first_layer_bits + 1`` bits wide (at least 2:
        a hidden activation's product, the adder tree of the hidden layers then a popcount), and
        the first layer takes its k-bit inputs a digit of ``first_layer_bits`` bits at a time,
        ``ceil(input_bits / first_layer_bits)`` cycles per row (the row read once, its weights
        used for each digit), each digit's sum shifted by its place. With 1, the first layer is
        bit-serial over 2-bit lanes; with ``input_bits``, every row takes one cycle over lanes
        as wide as a pixel's product. Narrow lanes cost a fraction of the logic; the first
        layer costs more cycles.

    Members
    -------
    mmap : :class:`~nmflow.golden.pairs.MemoryMap`
        Layer bases and rows per neuron of the weight memory.
    x_format, acc_format, score_format, scale_format, offset_format : :class:`FixedFormat`
        Integer formats of a lane's activation (a pixel or {-1, 0, +1}), of the pre-activation
        (and thresholds), of a score, and of the last layer's ``scale`` and ``offset``.
    """

    def __init__(self, model, lanes=16, *, pe=1, read_latency=0, first_layer_bits=None):
        if not isinstance(model, HardwareModel):
            raise TypeError(f"model must be a HardwareModel, not {type(model).__name__}")
        check_lanes(lanes)
        check_pe(pe, lanes)
        if not isinstance(read_latency, int) or isinstance(read_latency, bool) \
                or not 0 <= read_latency <= 64:
            raise NmflowError(f"read stage latency must be an integer from 0 to 64, "
                             f"not {read_latency!r}")
        bits = model.input_bits
        if first_layer_bits is None:
            first_layer_bits = bits
        if not isinstance(first_layer_bits, int) or isinstance(first_layer_bits, bool) \
                or not 1 <= first_layer_bits <= bits:
            raise NmflowError(f"first_layer_bits must be an integer from 1 to input_bits = "
                              f"{bits}, not {first_layer_bits!r}")
        self.model = model
        self.first_layer_bits = first_layer_bits
        self.lanes = lanes
        self.read_latency = read_latency
        self.pe = pe
        self.mmap = MemoryMap.for_model(model, lanes, pe)
        layers = model.layers
        bound = max(model.preact_bound(index) for index in range(len(layers)))
        # Thresholds lie within the pre-activation bound plus one (contract 1).
        self.x_format = FixedFormat(True, first_layer_bits, 0)
        self.acc_format = integer_format(-(bound + 1), bound + 1)
        self.score_format = FixedFormat(True, model.score_bits - 1, 0)
        last = layers[-1]
        self.scale_format = _magnitude_format(int(abs(last.scale).max(initial=0)))
        self.offset_format = _magnitude_format(int(abs(last.offset).max(initial=0)))

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def simd(self):
        """Lanes per neuron: inputs of a neuron taken per cycle."""
        return self.lanes // self.pe

    @property
    def per(self):
        """Rows per group of each layer, ``ceil(in / simd)``."""
        return self.mmap.per

    @property
    def groups(self):
        """Groups of ``pe`` neurons of each layer, ``ceil(out / pe)``."""
        return self.mmap.groups

    @property
    def has_conv(self):
        """Whether a layer is a convolution."""
        return self.model.has_conv

    @property
    def walks(self):
        """How the sequencer walks each layer (:class:`Walk`)."""
        out, simd = [], self.simd
        for k, layer in enumerate(self.model.layers):
            chunks = self.mmap.block_chunks[k]
            if layer.conv is None:
                out.append(Walk(1, 1, self.per[k], 1, 0, 1, 1, 1,
                                -(-layer.n_out // simd), self.per[k], self.groups[k]))
                continue
            channels, height, width = layer.conv["in_shape"]
            _, pooled_h, pooled_w = layer.out_shape
            out.append(Walk(height, width, chunks, layer.conv["kernel"], layer.conv["padding"],
                            layer.conv["pool"], pooled_h, pooled_w, -(-layer.n_out // simd),
                            self.per[k], self.groups[k]))
        return out

    @property
    def input_rows(self):
        """Rows of the input buffer (one bank): the first layer's chunks of inputs, a pixel's
        channels to a row of their own when it is a convolution."""
        walk = self.walks[0]
        return walk.height * walk.width * walk.chunks

    @property
    def act_rows(self):
        """Rows the sequencer may address in a buffer: the larger of :attr:`input_rows` and
        :attr:`hidden_rows`."""
        return max(self.input_rows, self.hidden_rows)

    @property
    def input_index_bound(self):
        """One past the largest position (``row * simd + lane``) an input value is loaded to."""
        return self.input_rows * self.simd

    @property
    def digit_serial(self):
        """Whether the first layer takes its inputs in more than one digit (cycle) per row."""
        return self.first_layer_bits < self.model.input_bits

    @property
    def passes(self):
        """Cycles per row of each layer: ``ceil(input_bits / first_layer_bits)`` for the first,
        1 for the others."""
        first = -(-self.model.input_bits // self.first_layer_bits)
        return [first if k == 0 else 1 for k in range(self.n_layers)]

    @property
    def plane_bits(self):
        """Bits of a digit index (at least 1)."""
        return index_bits(max(self.passes))

    n_inputs = property(lambda self: self.model.n_inputs)
    n_classes = property(lambda self: self.model.n_classes)
    n_layers = property(lambda self: len(self.model.layers))
    x_bits = property(lambda self: self.x_format.width)
    acc_bits = property(lambda self: self.acc_format.width)

    @property
    def hidden_sizes(self):
        return [layer.n_out for layer in self.model.layers[:-1]]

    @property
    def hidden_total(self):
        return sum(self.hidden_sizes)

    @property
    def hidden_max(self):
        return max(self.hidden_sizes, default=1)

    @property
    def max_out(self):
        return max(layer.n_out for layer in self.model.layers)

    @property
    def neuron_bits(self):
        return index_bits(self.max_out)

    @property
    def layer_bits(self):
        return index_bits(self.n_layers)

    @property
    def hidden_groups(self):
        """Groups of all hidden layers: the rows of the threshold memory."""
        return sum(self.groups[:-1])

    @property
    def hidden_bits(self):
        return index_bits(max(self.hidden_groups, 1))

    @property
    def group_bits(self):
        return index_bits(max(self.groups))

    @property
    def pe_bits(self):
        return self.pe.bit_length() - 1

    @property
    def class_bits(self):
        return index_bits(self.n_classes)

    @property
    def hidden_rows(self):
        """Rows of an activation buffer: the most chunks (of ``simd`` values) a hidden layer's
        output fills (a convolution's pooled map: a pixel's channels to rows of their own)."""
        return max((w.out_pixels * w.out_chunks for w in self.walks[:-1]), default=1)

    @property
    def weight_rows(self):
        return self.mmap.rows

    @property
    def weight_bits(self):
        return self.mmap.rows * 2 * self.lanes

    @property
    def addr_bits(self):
        return index_bits(self.mmap.rows)

    @property
    def split_argmax(self):
        """True when the last layer's groups of scores come at least two cycles apart, so the
        argmax can compare in one cycle and update in the next."""
        return self.per[-1] * self.passes[-1] >= 2

    def memory_codes(self):
        """The weight memory image as pair codes, uint8 ``[rows, lanes]``."""
        return memory_codes([layer.weights for layer in self.model.layers], self.mmap)

    # -- the pipeline and the figures --------------------------------------------------------------
    @property
    def lane_bits(self):
        """``log2(simd)``: the bits of a lane index within a neuron's row, and the levels of
        the adder tree."""
        return self.simd.bit_length() - 1

    @property
    def popcount_latency(self):
        """Cycles of the GXNOR lanes and the adder tree: a register per lane, one per level (no
        register per lane for 2-bit lanes of at least two a neuron: the product goes straight
        into the first adder)."""
        return self.lane_bits + int(self.x_bits > 2 or self.lane_bits == 0)

    def stage_cycles(self, stage):
        """Cycles of one stage of :data:`PIPELINE`."""
        if stage == "read stage":
            return self.read_latency
        if stage == "lanes and adder tree":
            return self.popcount_latency
        if stage == "argmax":
            # The group's best (a tree over the pe scores), then compare and update.
            return self.pe_bits + 1 + int(self.split_argmax)
        if stage in ("weight read", "register", "accumulate", "parameters", "threshold",
                     "activation write", "multiply", "add offset"):
            return 1
        raise NmflowError(f"stage must be one of the engine's pipeline stages, not {stage!r}")

    def latency(self, kind):
        """Cycles from a row's read to its neuron's result: ``kind`` is ``"hidden"`` (the
        activation written) or ``"last"`` (the score stored and compared)."""
        return sum(self.stage_cycles(stage) for stage in PIPELINE[kind])

    @property
    def ideal_cycles(self):
        """Row reads per inference: sum of ``ceil(in / simd) * ceil(out / pe)`` over the
        layers (the folding's ideal), a convolution's once per output position
        (:attr:`layer_reads`)."""
        return sum(self.layer_reads)

    @property
    def issue_cycles(self):
        """Cycles the sequencer issues rows in one inference: the row reads, times the bit planes
        of a bit-serial first layer (:attr:`layer_cycles`)."""
        return sum(self.layer_cycles)

    @property
    def drain_cycles(self):
        """Cycles from a layer's last row read to the first read of the next stage, per layer."""
        return [self.latency("hidden")] * (self.n_layers - 1) + [self.latency("last")]

    @property
    def layer_gaps(self):
        """Cycles between a layer's last row read and the next layer's first (none issued), per
        layer but the last: the drain, less what the next layer's first group may overlap it. That group reads
        its chunks of activations in order, a cycle each, and chunk ``c`` is complete once the
        group holding its last value has completed (the groups complete in order, ``per * passes``
        cycles apart): the next layer may begin as early as every chunk is then written by the
        cycle it is read. At least one cycle (the sequencer's drain state)."""
        gaps = []
        walks = self.walks
        for k in range(self.n_layers - 1):
            drain = self.drain_cycles[k]
            if walks[k].conv or walks[k + 1].conv:
                # a convolution writes its map, or reads it, pixel by pixel: the whole drain
                gaps.append(drain)
                continue
            last_group, step = self.groups[k] - 1, self.per[k] * self.passes[k]
            slack = min(c + (last_group - min(last_group, ((c + 1) * self.simd - 1) // self.pe))
                        * step for c in range(self.per[k + 1]))
            gaps.append(drain - min(slack, drain - 1))
        return gaps

    @property
    def cycles_per_inference(self):
        """Cycles from the first input beat to the last result beat, with streams that never
        stall: the input load, the row reads, the gaps between layers, the last layer's drain,
        the result beats and one cycle to load the first result beat."""
        return (self.n_inputs + self.issue_cycles + sum(self.layer_gaps) + self.drain_cycles[-1]
                + self.n_classes + 1)

    @property
    def layer_rows(self):
        """Row reads of each layer: ``ceil(in / simd) * ceil(out / pe)``."""
        return [self.mmap.layer_rows(k).stop - self.mmap.layer_rows(k).start
                for k in range(self.n_layers)]

    @property
    def layer_reads(self):
        """Row reads of each layer in one inference: its rows, a convolution's once per output
        position it computes (:attr:`Walk.reads`)."""
        return [walk.reads for walk in self.walks]

    @property
    def layer_cycles(self):
        """Cycles the sequencer issues each layer's rows: its row reads times its passes."""
        return [reads * passes for reads, passes in zip(self.layer_reads, self.passes)]

    @property
    def waits_for_results(self):
        """Whether an inference must wait, before it starts, for the previous one's scores to be
        stored and sent (the score unit holds one set of scores): a one-layer network, whose
        first layer is its last. In a deeper network the last layer waits instead, when the
        layers before it pass in fewer cycles than :attr:`last_layer_gap`."""
        return self.n_layers == 1

    @property
    def last_layer_gap(self):
        """Cycles from the start of an inference's last layer to the earliest start of the next
        inference's last layer: its rows, its drain (the scores stored), the result beats, and
        two cycles of hand-over."""
        return self.layer_cycles[-1] + self.drain_cycles[-1] + self.n_classes + 2

    @property
    def input_banks(self):
        """Banks of the input buffer, 1 or 2. With one, the next inference's inputs load once the
        current one's first layer has read them; with two, they load into the other bank while
        the first layer runs. Two when the single bank's load would set the interval (its
        ``layer_cycles[0] + n_inputs`` above the other bounds of :attr:`interval_cycles`): wide
        foldings, whose first layer takes few rows and whose input load then waits; the second
        bank doubles the input buffer's depth (``per[0]`` rows more)."""
        others = max(self.issue_cycles + sum(self.layer_gaps) + 1, self.last_layer_gap)
        return 2 if self.layer_cycles[0] + self.n_inputs > others else 1

    @property
    def input_load_gap(self):
        """Cycles from an inference's start to the earliest input beat of the next one: the
        first layer's rows with one input bank (the buffer is free once they are issued),
        none with two."""
        return self.layer_cycles[0] if self.input_banks == 1 else 0

    @property
    def interval_cycles(self):
        """Cycles between the starts of back-to-back inferences (the throughput), with streams
        that never stall. The next inference's inputs load while the current one computes (its
        later layers; with two input banks, all of them), and its first layers run while the
        current one's last layer drains, so the engine reads its weight memory nearly all the
        time. It is the largest of:

        * the row reads of one inference and the gaps between its layers (:attr:`layer_gaps`;
          not the last layer's drain), plus a cycle to start the next;
        * the input load of the next inference, after :attr:`input_load_gap`;
        * :attr:`last_layer_gap`: the next inference's last layer waits until this one's
          scores are stored and sent.
        """
        return max(self.issue_cycles + sum(self.layer_gaps) + 1,
                   self.input_load_gap + self.n_inputs, self.last_layer_gap)

    @property
    def first_interval_cycles(self):
        """Cycles from the first input beat of an inference offered to an idle engine to the
        first input beat of the next one (offered right behind it): the input load and
        :attr:`input_load_gap`. Later inferences come every :attr:`interval_cycles`."""
        return self.n_inputs + self.input_load_gap

    @property
    def cycles_back_to_back(self):
        """Cycles from the first input beat to the last result beat of an inference whose inputs
        were offered as soon as the engine could take them, behind others (with streams that
        never stall): its inputs wait, loaded, while the one before finishes its first layers
        (with two input banks, all of its layers);
        when the interval is :attr:`last_layer_gap`, its last layer also waits for the scores
        of the one before (in the steady state, from the third inference on)."""
        rows, drains = self.layer_cycles, self.drain_cycles
        interval = self.interval_cycles
        before_last = sum(rows[:-1]) + sum(self.layer_gaps)
        if self.stalls_last_layer:
            # it begins right after the last layer's rows of the one before, then waits
            before_last = interval - rows[-1] - 1
        latency = before_last + rows[-1] + drains[-1] + self.n_classes + 1
        return interval + latency - self.input_load_gap

    @property
    def stalls_last_layer(self):
        """Whether, back to back, an inference's last layer waits for the scores of the one
        before (a network of two or more layers whose interval is :attr:`last_layer_gap`).
        Its inferences then settle from the third on: the second, which starts behind one that
        did not wait, takes a little less than :attr:`cycles_back_to_back`."""
        rows = self.layer_cycles
        return (self.n_layers > 1 and self.interval_cycles == self.last_layer_gap
                and self.interval_cycles - rows[-1] - 1 > sum(rows[:-1]) + sum(self.layer_gaps))

    def batch_cycles(self, count):
        """Cycles from the first input value of ``count`` inferences offered back to back (the
        inputs always valid, the results always taken, as a board's batch runs them) to the
        last result beat, both counted: the first takes :attr:`cycles_per_inference`, each
        later one :attr:`interval_cycles` more."""
        return self.cycles_per_inference + (count - 1) * self.interval_cycles

    @property
    def memories(self):
        """The engine's block RAM memories as ``{name: (depth, width)}``, each read a whole row
        at a time (what block RAM budgets are checked against). The per-class score affine is
        built from logic and is not listed."""
        return {
            "weights": (self.weight_rows, 2 * self.lanes),
            # with two input banks, the bank the top address bit
            "inputs": (self.input_rows if self.input_banks == 1
                       else 2 << index_bits(self.input_rows),
                       self.model.input_bits * self.simd),
            # both banks in one memory, the bank the top address bit
            "activations": (2 << index_bits(self.hidden_rows), 2 * self.simd),
            "thresholds": (max(self.hidden_groups, 1), 2 * self.acc_bits * self.pe),
        }

    @property
    def weight_sprams(self):
        """SPRAMs the weight memory takes when it is built from SPRAM (``"spram"``)."""
        columns, banks = spram_tiles(self.weight_rows, 2 * self.lanes)
        return columns * banks

    def to_dict(self):
        """The plan's figures as plain JSON types."""
        return {
            "lanes": self.lanes, "pe": self.pe, "simd": self.simd,
            "first_layer_bits": self.first_layer_bits, "passes": self.passes, "sizes": self.model.sizes, "input_bits": self.model.input_bits,
            "weight_kind": self.model.weight_kind, "score_bits": self.model.score_bits,
            "acc_bits": self.acc_bits, "read_latency": self.read_latency,
            "weight_rows": self.weight_rows, "weight_bits": self.weight_bits,
            "layer_bases": list(self.mmap.bases), "rows_per_group": list(self.per),
            "groups": list(self.groups),
            "ideal_cycles_per_inference": self.ideal_cycles, "layer_reads": self.layer_reads,
            "drain_cycles": self.drain_cycles, "layer_gaps": self.layer_gaps,
            "cycles_per_inference": self.cycles_per_inference,
            "interval_cycles": self.interval_cycles,
            "memories": {name: list(shape) for name, shape in self.memories.items()},
            **({"walks": [dict(vars(walk)) for walk in self.walks]} if self.has_conv else {}),
            "formats": {name: getattr(self, f"{name}_format").to_dict()
                        for name in ("x", "acc", "score", "scale", "offset")},
        }


@dataclass(frozen=True)
class Walk:
    """How the sequencer walks one layer: a convolution pooled pixel by pooled pixel, group
    by group, the pooling window's positions, the kernel's positions and a pixel's chunks; a
    fully connected layer as a 1 x 1 map whose one pixel has ``per`` chunks.

    Members
    -------
    height, width : the map it reads (1, 1 for a fully connected layer)
    chunks : rows of the buffer one input pixel takes (``ceil(channels / simd)``)
    kernel, padding, pool : the convolution's (1, 0, 1 for a fully connected layer)
    out_height, out_width : the pooled map it writes (1, 1)
    out_chunks : rows one output pixel takes in the buffer it writes
    per, groups : rows per group and window position (``kernel**2 * chunks``), groups of ``pe``
    """
    height: int
    width: int
    chunks: int
    kernel: int
    padding: int
    pool: int
    out_height: int
    out_width: int
    out_chunks: int
    per: int
    groups: int

    @property
    def conv(self):
        return self.kernel > 1 or self.height > 1 or self.width > 1 or self.pool > 1

    @property
    def out_pixels(self):
        return self.out_height * self.out_width

    @property
    def reads(self):
        """Row reads per inference: every output position computed (the pooled pixels'
        windows; a map's odd last row or column, which the pooling drops, is not) times the
        group's rows."""
        return self.out_pixels * self.pool ** 2 * self.groups * self.per


def _magnitude_format(largest):
    """The signed integer format of a constant whose magnitude is at most ``largest``."""
    return FixedFormat(True, largest.bit_length(), 0)
