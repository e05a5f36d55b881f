"""What an EqProp board holds and does, in the fixed-point twin, without bytes.

:class:`EqPropBoardTwin` holds the unit's memories (the weight banks with their padding, the
biases; with binary weights the pair-code banks beside the hidden weights) and its LFSR as the
board does after reset, and does what the link's commands ask of
them (write and read rows, train, infer), computing with
:mod:`nmflow.golden.eqprop_fixed`. The link's twin
(:class:`nmflow.protocol.eqprop.EqPropLinkModel`) puts the frames around it.
"""

import numpy as np

from . import eqprop_fixed as ef
from .eqprop_layout import EqPropLayout
from .pairs import MINUS, sign_codes

__all__ = ["EqPropBoardTwin", "params_to_image", "image_to_params", "code_of"]


def code_of(word):
    """The pair code of the binary weight of hidden weight ``word``: ``PLUS`` where
    ``word >= 0`` (``sign(0) = +1``), else ``MINUS``."""
    return sign_codes(word)


def params_to_image(layout, params):
    """``(banks, biases)``: the weight banks (lists of raw words, padding 0) and the biases."""
    return layout.weight_image(params), layout.bias_image(params)


def image_to_params(layout, banks, biases):
    """``{"W": [...], "b": [...]}`` (int64) from weight banks and biases (padding ignored)."""
    W, b = [], []
    for k in range(layout.N):
        rows, cols = layout.sizes[k + 1], layout.sizes[k]
        w = np.zeros((rows, cols), dtype=np.int64)
        for r in range(rows):
            for i in range(cols):
                w[r, i] = banks[layout.bank(k, r, i)][layout.address(k, r, i)]
        W.append(w)
        start = layout.bbase[k]
        b.append(np.array(biases[start:start + rows], dtype=np.int64))
    return {"W": W, "b": b}


class EqPropBoardTwin:
    """The memories and the LFSR of an EqProp board after reset with ``params`` (the twin's
    ``init_params`` if None), and what the link's commands do to them.

    Parameters
    ----------
    config : :class:`~nmflow.golden.eqprop_fixed.FixedEqPropConfig`
    lanes : int
    params : dict, optional
    storage : str
        Binary weights: ``"spram"`` leaves the hidden weights 0 after reset (single-port RAMs
        the bitstream cannot initialise); the pair codes take ``params`` either way.

    With binary weights the codes are written with every hidden weight (LOAD, an update) and
    an inference reads them (as the unit's settling does); a training step computes from the
    hidden weights, which the host loads first.
    """

    def __init__(self, config, lanes, *, params=None, storage="memory"):
        self.config, self.lanes = config, lanes
        self.layout = EqPropLayout(config.sizes, lanes)
        params = ef.init_params(config) if params is None else params
        self.banks, self.biases = params_to_image(self.layout, params)
        self.binary = config.weights == "binary"
        self.codes = [[code_of(w) for w in bank] for bank in self.banks] if self.binary \
            else None
        if self.binary and storage == "spram":
            self.banks = [[0] * len(bank) for bank in self.banks]
        self.lfsr = ef.Lfsr32(config.lfsr_seed)

    @property
    def params(self):
        """The parameters the memories hold, ``{"W": [...], "b": [...]}``."""
        return image_to_params(self.layout, self.banks, self.biases)

    def seed(self, state):
        """Restart the LFSR from ``state`` (nonzero)."""
        self.lfsr = ef.Lfsr32(state)

    def write_rows(self, first, rows):
        """Write weight rows ``first ..`` (each ``lanes`` raw words, word ``b`` to bank ``b``)."""
        for n, row in enumerate(rows):
            for b, word in enumerate(row):
                self._write(b, first + n, word)

    def _write(self, bank, addr, word):
        """A hidden weight (or weight) and, with binary weights, its pair code."""
        self.banks[bank][addr] = word
        if self.binary:
            self.codes[bank][addr] = code_of(word)

    def write_biases(self, first, words):
        self.biases[first:first + len(words)] = list(words)

    def read_rows(self, first, count):
        return [[self.banks[b][first + n] for b in range(self.lanes)] for n in range(count)]

    def read_biases(self, first, count):
        return list(self.biases[first:first + count])

    def read_codes(self, first, count):
        """Rows ``first ..`` of the pair-code banks (binary weights only)."""
        return [[self.codes[b][first + n] for b in range(self.lanes)] for n in range(count)]

    def _code_params(self):
        """Binary weights: parameters whose signs are the pair codes' (``-1`` for ``MINUS``,
        else ``+1``) and the biases: what the unit's settling reads."""
        signs = image_to_params(self.layout, [[-1 if c == MINUS else 1 for c in bank]
                                              for bank in self.codes], self.biases)
        return {"W": signs["W"], "b": self.params["b"]}

    def infer(self, x):
        """``(prediction, output states)`` of the free phase on input states ``x`` (binary
        weights: with the weights the pair codes hold)."""
        params = self._code_params() if self.binary else self.params
        out = ef.free_phase(self.config, params, self._batch(x))[-1][0]
        return int(out.argmax()), [int(v) for v in out]

    def train(self, x, label):
        """One learning step (the twin's ``train_step``, batch 1); the free phase's prediction.
        Binary weights: the three phases settle with the pair codes' weights and the update
        changes the hidden weights (the same thing once the host has loaded them). The update
        writes the real rows only (padding keeps what it holds)."""
        cfg, lay = self.config, self.layout
        x = self._batch(x)
        if self.binary:
            dynamics = self._code_params()
            s_star = ef.free_phase(cfg, dynamics, x)
            s_plus = ef.relax(cfg, dynamics, x, s_star, cfg.K, +1, [label])
            s_minus = ef.relax(cfg, dynamics, x, s_star, cfg.K, -1, [label])
            new = ef.update(cfg, self.params, x, s_plus, s_minus, self.lfsr)
        else:
            new, s_star = ef.train_step(cfg, self.params, x, [label], self.lfsr)
        banks, self.biases = params_to_image(lay, new)
        for k in range(lay.N):
            for r in range(cfg.sizes[k + 1]):
                for i in range(cfg.sizes[k]):
                    b, a = lay.bank(k, r, i), lay.address(k, r, i)
                    self._write(b, a, banks[b][a])
        return int(s_star[-1][0].argmax())

    @staticmethod
    def _batch(x):
        return np.array(list(x), dtype=np.int64).reshape(1, -1)
