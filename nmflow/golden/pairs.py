"""2T2R pair codes and the weight-memory image (DESIGN.md, contract 2).

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

The memory image lays layer after layer, neuron after neuron, ``ceil(in / lanes)`` rows per
neuron; lane ``p`` of row ``r`` of neuron ``j`` holds weight ``w[j, r * lanes + p]``, and the lanes
past the last input hold code 0 (a zero weight adds nothing). Lane ``p`` occupies bits
``[2p + 1 : 2p]`` of a row (BL in the upper bit).
"""

import numpy as np

__all__ = ["PLUS", "MINUS", "ZERO", "encode", "pcsa_read", "rows_per_neuron", "memory_image"]

PLUS, MINUS, ZERO = 0b10, 0b01, 0b00


def encode(w):
    """Pair codes (uint8, 0..2) of ternary weights."""
    w = np.asarray(w)
    return np.where(w > 0, PLUS, np.where(w < 0, MINUS, ZERO)).astype(np.uint8)


def pcsa_read(codes):
    """Ideal PCSA read of pair codes: BL-LRS wins gives +1, BLb-LRS wins gives -1, else 0."""
    codes = np.asarray(codes)
    bl, blb = (codes >> 1) & 1, codes & 1
    return (bl.astype(np.int8) - blb.astype(np.int8)) * (bl ^ blb).astype(np.int8)


def rows_per_neuron(n_in, lanes):
    return -(-n_in // lanes)


def memory_image(model, lanes):
    """Return ``(rows, bases)``: the rows as Python ints (2 * lanes bits each) and each layer's
    first row."""
    rows, bases = [], []
    for layer in model.layers:
        bases.append(len(rows))
        per = rows_per_neuron(layer.n_in, lanes)
        padded = np.zeros((layer.n_out, per * lanes), dtype=np.int8)
        padded[:, :layer.n_in] = layer.weights
        codes = encode(padded).reshape(layer.n_out * per, lanes).astype(object)
        shifts = np.array([1 << (2 * p) for p in range(lanes)], dtype=object)
        rows.extend(int(v) for v in (codes * shifts).sum(axis=1))
    return rows, bases
