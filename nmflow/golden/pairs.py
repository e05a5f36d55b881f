"""2T2R pair codes, the weight-memory image and the read seam (docs/contracts.md, contracts 2
and 6).

Each weight is stored in two resistive devices (BL, BLb); 1 means LRS (low resistance):

=====  ==  ===  ====
value  BL  BLb  code
=====  ==  ===  ====
 +1     1   0   0b10
 -1     0   1   0b01
  0     0   0   0b00
=====  ==  ===  ====

``code = BL << 1 | BLb``. (1, 1), both LRS, is never programmed; the ideal precharge sense amplifier
(:func:`pcsa_read`) reads it as 0, like HRS/HRS, since neither branch wins the race reliably.

The memory image lays layer after layer, group of ``pe`` neurons after group, ``ceil(in / simd)``
rows per group (:class:`MemoryMap`, ``simd = lanes / pe``); lane ``q * simd + s`` of row ``r`` of
group ``g`` holds weight ``w[g * pe + q, r * simd + s]``, and the lanes past the last input or
neuron hold code 0 (a zero weight adds nothing). With ``pe = 1`` lane ``p`` of row ``r`` of neuron
``j`` holds ``w[j, r * lanes + p]``. Lane ``p`` occupies bits ``[2p + 1 : 2p]`` of a row (BL in
the upper bit).

The read seam: the engine reads each row through a read stage (pair codes to ternary weights);
the golden reference reads the same image through a *read function* of the same kind
(:class:`ReadFunction`), so that a read-error model plugs into both sides.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import NmflowError

__all__ = ["PLUS", "MINUS", "ZERO", "encode", "sign_codes", "pcsa_read", "rows_per_neuron", "MemoryMap",
           "memory_codes", "pack_rows", "memory_image", "ReadFunction", "IdealRead",
           "read_weights"]

PLUS, MINUS, ZERO = 0b10, 0b01, 0b00


def encode(w):
    """Pair codes (uint8, 0..2) of ternary weights."""
    w = np.asarray(w)
    return np.where(w > 0, PLUS, np.where(w < 0, MINUS, ZERO)).astype(np.uint8)


def sign_codes(hidden):
    """Pair codes of the binary weights ``sign(hidden)`` with ``sign(0) = +1`` (a binarized
    network's hidden weights): ``PLUS`` where ``hidden >= 0``, else ``MINUS``; an array, or an
    int for an int."""
    codes = np.where(np.asarray(hidden) < 0, MINUS, PLUS).astype(np.uint8)
    return int(codes) if codes.ndim == 0 else codes


def pcsa_read(codes):
    """Ideal PCSA read of pair codes: BL-LRS wins gives +1, BLb-LRS wins gives -1, else 0."""
    codes = np.asarray(codes)
    bl, blb = (codes >> 1) & 1, codes & 1
    return (bl.astype(np.int8) - blb.astype(np.int8)) * (bl ^ blb).astype(np.int8)


def rows_per_neuron(n_in, lanes):
    return -(-n_in // lanes)


@dataclass(frozen=True)
class MemoryMap:
    """Where each layer's weights lie in a memory of ``lanes`` pair codes per row.

    The engine folds each layer in two dimensions (as FINN's matrix-vector units do): ``pe``
    neurons at a time (a *group*), each over ``simd = lanes / pe`` inputs at a time (a *chunk*).
    A row holds one chunk of every neuron of a group, side by side: neuron ``g * pe + q``, input
    ``c * simd + s`` lies in row ``base + g * per + c``, lane ``q * simd + s``. Layer after layer,
    group after group, ``per = ceil(in / simd)`` rows per group; lanes past the last input or the
    last neuron hold code 0 (a zero weight adds nothing).

    A layer's inputs come in *blocks* (:attr:`blocks`): a convolution's weight row is its
    kernel window, ``kernel * kernel`` blocks of ``in_channels`` values (one block per kernel
    position), and a fully connected layer behind a convolution reads the pooled map, one block
    of channels per pixel. Each block starts a chunk of its own (its last chunk padded with code
    0), as the engine's buffers hold a pixel's channels in rows of their own: input ``j`` of a
    layer with blocks ``(count, width)`` lies in column ``(j // width) * ceil(width / simd) *
    simd + j % width`` of the padded matrix. A fully connected layer behind another (or behind
    the inputs) is one block of all its inputs.

    Members
    -------
    lanes : int
        Pair codes per row, ``simd * pe``.
    sizes : tuple of int
        ``[n_inputs, layer 0 outputs, layer 1 outputs, ...]``.
    pe : int
        Neurons per row (1 by default: a row is a chunk of one neuron).
    blocks : tuple of (int, int) or None
        Each layer's inputs as ``(count, width)`` blocks (:meth:`for_model`); None: one block of
        ``sizes[k]`` for layer ``k``.
    per : tuple of int
        Rows per group of each layer: ``count * ceil(width / simd)``.
    groups : tuple of int
        Groups of each layer, ``ceil(out / pe)``.
    bases : tuple of int
        First row of each layer.
    rows : int
        Rows in all.
    """
    lanes: int
    sizes: tuple
    pe: int = 1
    blocks: tuple | None = None

    @classmethod
    def for_model(cls, model, lanes, pe=1):
        """The memory map of a hardware model's weight matrices."""
        blocks, previous = [], None
        for layer in model.layers:
            if layer.conv is not None:
                k = layer.conv["kernel"]
                blocks.append((k * k, layer.conv["in_shape"][0]))
            elif previous is not None and previous.conv is not None:
                channels, height, width = previous.out_shape
                blocks.append((height * width, channels))
            else:
                blocks.append((1, layer.n_in))
            previous = layer
        blocks = tuple(blocks)
        plain = tuple((1, n) for n in model.sizes[:-1])
        return cls(lanes, tuple(model.sizes), pe, None if blocks == plain else blocks)

    @property
    def layer_blocks(self):
        """``(count, width)`` of each layer's input blocks."""
        return tuple((1, n) for n in self.sizes[:-1]) if self.blocks is None else self.blocks

    @property
    def layer_inputs(self):
        """Each layer's model inputs (weight columns), ``count * width``."""
        return tuple(count * width for count, width in self.layer_blocks)

    @property
    def block_chunks(self):
        """Chunks of one block of each layer, ``ceil(width / simd)``."""
        return tuple(rows_per_neuron(width, self.simd) for _, width in self.layer_blocks)

    def columns(self, layer):
        """The padded column of each of ``layer``'s inputs, int64 [inputs]."""
        count, width = self.layer_blocks[layer]
        j = np.arange(count * width)
        return (j // width) * self.block_chunks[layer] * self.simd + j % width

    def __post_init__(self):
        if not isinstance(self.pe, int) or self.pe < 1 or self.lanes % self.pe:
            raise NmflowError(f"pe must be a positive divisor of lanes = {self.lanes}, "
                              f"not {self.pe!r}")

    @property
    def simd(self):
        return self.lanes // self.pe

    @property
    def per(self):
        return tuple(count * chunks for (count, _), chunks
                     in zip(self.layer_blocks, self.block_chunks))

    @property
    def groups(self):
        return tuple(rows_per_neuron(n_out, self.pe) for n_out in self.sizes[1:])

    @property
    def bases(self):
        bases, row = [], 0
        for per, groups in zip(self.per, self.groups):
            bases.append(row)
            row += per * groups
        return tuple(bases)

    @property
    def rows(self):
        return sum(per * groups for per, groups in zip(self.per, self.groups))

    def row(self, layer, neuron, chunk=0):
        """The address of row ``chunk`` of the group of ``neuron`` in ``layer``."""
        return self.bases[layer] + (neuron // self.pe) * self.per[layer] + chunk

    def lane(self, neuron, index):
        """The lane of input ``index`` of ``neuron`` (in the row of its chunk)."""
        return (neuron % self.pe) * self.simd + index % self.simd

    def layer_rows(self, layer):
        """The slice of rows that holds ``layer``."""
        start = self.bases[layer]
        return slice(start, start + self.per[layer] * self.groups[layer])

    def scatter(self, layer, matrix, fill=0):
        """A layer's ``[out, in]`` matrix laid out as its rows, ``[rows of layer, lanes]``
        (padding lanes hold ``fill``)."""
        matrix = np.asarray(matrix)
        n_out = self.sizes[layer + 1]
        per, groups, pe, simd = self.per[layer], self.groups[layer], self.pe, self.simd
        padded = np.full((groups * pe, per * simd), fill, dtype=matrix.dtype)
        padded[:n_out, self.columns(layer)] = matrix
        return (padded.reshape(groups, pe, per, simd).transpose(0, 2, 1, 3)
                .reshape(groups * per, pe * simd))

    def gather(self, layer, rows):
        """The inverse of :meth:`scatter`: a layer's ``[out, in]`` matrix from its rows."""
        rows = np.asarray(rows)
        n_out = self.sizes[layer + 1]
        per, groups, pe, simd = self.per[layer], self.groups[layer], self.pe, self.simd
        matrix = (rows.reshape(groups, per, pe, simd).transpose(0, 2, 1, 3)
                  .reshape(groups * pe, per * simd))
        return matrix[:n_out, self.columns(layer)]


def memory_codes(weights, mmap):
    """The memory image as pair codes, uint8 ``[rows, lanes]``, of per-layer weight matrices."""
    codes = np.zeros((mmap.rows, mmap.lanes), dtype=np.uint8)
    for index, w in enumerate(weights):
        codes[mmap.layer_rows(index)] = encode(mmap.scatter(index, np.asarray(w, dtype=np.int8)))
    return codes


def pack_rows(codes):
    """Rows of pair codes (``[rows, lanes]``) as Python ints, lane ``p`` at bits ``2p+1:2p``."""
    codes = np.asarray(codes)
    shifts = np.array([1 << (2 * p) for p in range(codes.shape[1])], dtype=object)
    return [int(v) for v in (codes.astype(object) * shifts).sum(axis=1)]


def memory_image(model, lanes, pe=1):
    """Return ``(rows, bases)``: the rows as Python ints (2 * lanes bits each) and each layer's
    first row."""
    mmap = MemoryMap.for_model(model, lanes, pe)
    codes = memory_codes([layer.weights for layer in model.layers], mmap)
    return pack_rows(codes), list(mmap.bases)


class ReadFunction:
    """The golden side of the read seam: a row of pair codes to a row of ternary weights.

    ``read(codes, addr)`` takes pair codes, uint8 ``[n, lanes]``, with their row addresses,
    int64 ``[n]``, and returns the weights read, int8 ``[n, lanes]`` in {-1, 0, +1}. The golden
    reference calls it with every row of the memory in address order, which is the order in which
    the engine reads them in one inference. A read function whose result depends on earlier
    reads (a pseudo-random error source, say) sets :attr:`per_inference`; the reference then
    calls it once per inference, as the engine reads the memory once per inference. Otherwise the
    reference may call it once for a whole batch.

    A convolution's rows are read once per output position, not once per inference: a read
    function whose result depends on the reads before it (:attr:`per_read`) defines
    ``read_rows(codes, addr, last_row)``, which takes the rows in the engine's read order
    (:func:`~nmflow.golden.reference.read_order`), repeats included.
    """

    #: True if the result depends on how many reads came before (a stateful model).
    per_inference = False
    #: True if each read of a row draws anew (the reference then follows the engine's read
    #: order through ``read_rows`` where a row is read more than once: convolutions).
    per_read = False

    def __call__(self, codes, addr):
        raise NotImplementedError


class IdealRead(ReadFunction):
    """The ideal precharge sense amplifier of :func:`pcsa_read` (what :class:`PCSARead` does)."""

    def __call__(self, codes, addr):
        return pcsa_read(codes)


def read_weights(codes, mmap, read=None):
    """Per-layer weight matrices (int8 ``[out, in]``) as ``read`` (an ideal read by default)
    sees the memory image ``codes``; padding lanes are dropped."""
    read = IdealRead() if read is None else read
    codes = np.asarray(codes, dtype=np.uint8)
    if codes.shape != (mmap.rows, mmap.lanes):
        raise NmflowError(f"memory image must have shape [{mmap.rows}, {mmap.lanes}], "
                          f"not {list(codes.shape)}")
    got = np.asarray(read(codes, np.arange(mmap.rows, dtype=np.int64)))
    if got.shape != codes.shape:
        raise NmflowError(f"read function must return shape {list(codes.shape)}, "
                          f"not {list(got.shape)}")
    return [mmap.gather(index, got[mmap.layer_rows(index)]).astype(np.int8)
            for index in range(len(mmap.sizes) - 1)]
