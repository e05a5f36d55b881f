"""Where the EqProp learning unit keeps every weight, bias and state (pure Python).

:class:`EqPropLayout` is the memory map of :class:`nmflow.rtl.eqprop.EqPropUnit`, described
without Amaranth so that the unit, its testbenches, the link's model and the host all use the
same one to make memory images and to read dumps (see docs/eqprop_rtl.md). The unit's other
figures (formats, pipeline, cycles, block RAM) are in :class:`~nmflow.golden.eqprop_plan.
EqPropPlan`, which holds one of these.
"""

import math

from ..errors import NmflowError

__all__ = ["EqPropLayout"]


class EqPropLayout:
    """Where every weight, bias and state of a network lives in the unit's memories (pure
    Python: the testbenches and the host use it to make memory images and to read dumps)."""

    def __init__(self, sizes, lanes):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1 \
                or lanes & (lanes - 1) or lanes > 64:
            raise NmflowError(f"lanes must be a power of two from 1 to 64, not {lanes!r}")
        sizes = tuple(int(n) for n in sizes)
        for k, n in enumerate(sizes[:-1]):
            if n % lanes:
                raise NmflowError(f"sizes[{k}] must be a multiple of lanes ({lanes}) for every "
                                  f"layer but the last, not {n}")
        self.sizes, self.lanes = sizes, lanes
        self.N = len(sizes) - 1
        L = lanes
        self.chunks = [math.ceil(n / L) for n in sizes]          # state rows per layer
        self.padded = [c * L for c in self.chunks]
        # weights: layer k has padded(n_{k+1}) rows of n_k / L addresses per bank
        self.wbase, base = [], 0
        for k in range(self.N):
            self.wbase.append(base)
            base += self.padded[k + 1] * (sizes[k] // L)
        self.wdepth = max(base, 1)
        self.bbase, base = [], 0
        for k in range(self.N):
            self.bbase.append(base)
            base += sizes[k + 1]
        self.bdepth = base
        # states: x rows, then three regions of the layers 1..N
        self.x_rows = self.chunks[0]
        self.soff, off = [None], 0
        for k in range(1, self.N + 1):
            self.soff.append(off)
            off += self.chunks[k]
        self.region_rows = off
        self.sdepth = self.x_rows + 3 * off

    def region_base(self, region):
        return self.x_rows + region * self.region_rows

    def bank(self, k, r, i):
        return (r + i) % self.lanes

    def address(self, k, r, i):
        return self.wbase[k] + r * (self.sizes[k] // self.lanes) + i // self.lanes

    def weight_image(self, params):
        """Per bank, the list of raw words (padding 0) for weights ``params["W"]``."""
        banks = [[0] * self.wdepth for _ in range(self.lanes)]
        for k, w in enumerate(params["W"]):
            rows, cols = w.shape
            for r in range(rows):
                for i in range(cols):
                    banks[self.bank(k, r, i)][self.address(k, r, i)] = int(w[r, i])
        return banks

    def bias_image(self, params):
        return [int(v) for b in params["b"] for v in b]

    def dump_words(self):
        """Number of weight beats and bias beats of a dump."""
        return sum(self.sizes[k + 1] * (self.sizes[k] // self.lanes) for k in range(self.N)), \
            self.bdepth

    def decode_weights(self, beats, biases):
        """Weight matrices and bias vectors from a dump: ``beats`` (lists of ``L`` raw words
        in dump order) and ``biases`` (raw, in order)."""
        import numpy as np
        W, b, n = [], [], 0
        L = self.lanes
        for k in range(self.N):
            rows, cols = self.sizes[k + 1], self.sizes[k]
            w = np.zeros((rows, cols), dtype=np.int64)
            for r in range(rows):
                for c in range(cols // L):
                    words = beats[n]
                    n += 1
                    for bank in range(L):
                        w[r, c * L + (bank - r) % L] = words[bank]
            W.append(w)
        for k in range(self.N):
            start = self.bbase[k]
            b.append(np.array(biases[start:start + self.sizes[k + 1]], dtype=np.int64))
        return W, b
