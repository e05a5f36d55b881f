"""The fixed-point EP twin against an independent, scalar Python-int model of its specification
(the module docstring of nmflow/golden/eqprop_fixed.py), compared with ==."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmflow.errors import NmflowError
from nmflow.fixedpoint import FixedFormat
from nmflow.golden import eqprop_fixed as fx

PROPS = settings(max_examples=60, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- the scalar reference ------------------------------------------------------------------------------

class RefLfsr:
    """32-bit Galois LFSR, shifting right, mask 0x80200003; a draw = 16 steps, low 16 bits."""

    def __init__(self, seed):
        self.s = seed

    def draw(self):
        for _ in range(16):
            out = self.s & 1
            self.s >>= 1
            if out:
                self.s ^= 0x80200003
        return self.s & 0xFFFF


def ref_dynamics_weights(cfg, W):
    """The weights the dynamics use: W itself, or +-alpha_k (alpha_k = 1 / (2 sqrt(n_k)) in the
    weight format, nearest with ties to even) by the hidden weight's sign (W_h = 0 gives +)."""
    if cfg.weights == "real":
        return W
    out = []
    for k, Wk in enumerate(W):
        a = round(0.5 / cfg.sizes[k] ** 0.5 * 2 ** cfg.weight.frac_bits)
        out.append([[a if w >= 0 else -a for w in row] for row in Wk])
    return out


def ref_relax(cfg, W, b, x, s, steps, sign, label):
    W = ref_dynamics_weights(cfg, W)
    sizes = cfg.sizes
    N = len(sizes) - 1
    F, WF = cfg.state.frac_bits, cfg.weight.frac_bits
    top = 2 ** cfg.state.width - 1
    h = WF + (1 if cfg.half else 0)
    s = [list(layer) for layer in s]

    def layer(k):
        below = x if k == 1 else s[k - 2]
        new = []
        for j in range(sizes[k]):
            acc = b[k - 1][j] * 2 ** F
            for i in range(sizes[k - 1]):
                acc += W[k - 1][j][i] * below[i]
            if k < N:
                for i in range(sizes[k + 1]):
                    acc += W[k][i][j] * s[k][i]
            if k == N and sign != 0:
                target = 2 ** F if j == label else 0
                acc += sign * (target - s[N - 1][j]) * 2 ** (WF - cfg.beta_shift)
            value = (acc + 2 ** (h - 1)) // 2 ** h            # Python // is the floor
            new.append(min(max(value, 0), top))
        return new

    for _ in range(steps):
        for k in range(1, N + 1, 2):
            s[k - 1] = layer(k)
        for k in range(2, N + 1, 2):
            s[k - 1] = layer(k)
    return s


def ref_round(D, r, rounding, lfsr):
    u = lfsr.draw() if rounding == "stochastic" else None
    if r <= 0:
        return D * 2 ** (-r)
    q = D // 2 ** r
    rest = D - q * 2 ** r
    if rounding == "floor":
        return q
    if rounding == "nearest_up":
        return q + (1 if rest >= 2 ** (r - 1) else 0)
    return q + (1 if u * 2 ** r < rest * 2 ** 16 else 0)


def ref_round_exact(value, rounding, lfsr):
    """An exact rational ``value`` (a Fraction) rounded to an integer: down, up at a half or
    more, or up with probability its fraction (a 16-bit draw below ``fraction * 2**16``)."""
    u = lfsr.draw() if rounding == "stochastic" else None
    q = math.floor(value)
    fraction = value - q
    if rounding == "floor":
        return q
    if rounding == "nearest_up":
        return q + (1 if fraction >= Fraction(1, 2) else 0)
    return q + (1 if u < fraction * 2 ** 16 else 0)


def ref_train_step(cfg, W, b, xs, labels, lfsr):
    """One learning step on a batch of samples (lists), by the letter of the specification."""
    sizes = cfg.sizes
    N = len(sizes) - 1
    F, WF = cfg.state.frac_bits, cfg.weight.frac_bits
    m = cfg.batch.bit_length() - 1
    zero = [[0] * n for n in sizes[1:]]
    plus, other, free = [], [], []
    for x, label in zip(xs, labels):
        star = ref_relax(cfg, W, b, x, zero, cfg.T, 0, label)
        p = ref_relax(cfg, W, b, x, star, cfg.K, +1, label)
        o = ref_relax(cfg, W, b, x, star, cfg.K, -1, label) \
            if cfg.estimate == "symmetric" else star
        plus.append([list(x)] + p)
        other.append([list(x)] + o)
        free.append(star)
    halve = 1 if cfg.estimate == "symmetric" else 0
    wmin, wmax = -2 ** (cfg.weight.width - 1), 2 ** (cfg.weight.width - 1) - 1
    rule = fx.meta_rule(cfg) if cfg.m > 0 else None

    def weight_step(w, D, rW):
        """D / 2**rW less the decay w / 2**d, the two rounded together, exactly."""
        if not cfg.decay_shift:
            return ref_round(D, rW, cfg.update_rounding, lfsr)
        step = Fraction(D, 2 ** rW) if rW >= 0 else Fraction(D * 2 ** -rW)
        return ref_round_exact(step - Fraction(w, 2 ** cfg.decay_shift), cfg.update_rounding,
                               lfsr)

    def new_weight(w, dw):
        """Plain: w + dw. Metaplastic, where dw moves w toward 0: the step times the table's
        f_meta(m, |w|) (2**-12 units), rounded to nearest with ties up, taken off as -d."""
        if rule is not None and w * dw < 0:
            f = int(rule.table[min(abs(w) >> rule.shift, len(rule.table) - 1)])
            dw = -((-dw * f + 2 ** 11) // 2 ** 12)
        return min(max(w + dw, wmin), wmax)
    newW, newb = [], []
    for k in range(N):
        e = cfg.lr_shifts[k]
        rW = 2 * F - WF + e - cfg.beta_shift + halve + m
        rb = F - WF + e - cfg.beta_shift + halve + m
        Wk = []
        for j in range(sizes[k + 1]):
            row = []
            for i in range(sizes[k]):
                D = sum(P[k + 1][j] * P[k][i] - O[k + 1][j] * O[k][i]
                        for P, O in zip(plus, other))
                row.append(new_weight(W[k][j][i], weight_step(W[k][j][i], D, rW)))
            Wk.append(row)
        bk = []
        for j in range(sizes[k + 1]):
            D = sum(P[k + 1][j] - O[k + 1][j] for P, O in zip(plus, other))
            bk.append(min(max(b[k][j] + ref_round(D, rb, cfg.update_rounding, lfsr), wmin),
                          wmax))
        newW.append(Wk)
        newb.append(bk)
    return newW, newb, free


# -- strategies ----------------------------------------------------------------------------------------

def _raw(fmt):
    edges = st.sampled_from([fmt.min_raw, fmt.max_raw, 0, fmt.min_raw + 1, fmt.max_raw - 1])
    return st.one_of(edges, st.integers(fmt.min_raw, fmt.max_raw))


@st.composite
def cases(draw):
    sizes = draw(st.sampled_from([(3, 4, 2), (2, 3, 3, 2), (4, 2), (3, 5, 2, 4, 3)]))
    state = FixedFormat(False, 0, draw(st.integers(2, 8)), rounding="nearest_up")
    wfrac = draw(st.integers(2, 13))
    weight = FixedFormat(True, draw(st.integers(0, 3)), wfrac)
    cfg = fx.FixedEqPropConfig(
        sizes=sizes, state=state, weight=weight, T=draw(st.integers(1, 4)),
        K=draw(st.integers(1, 3)), beta_shift=draw(st.integers(0, wfrac)),
        lr_shifts=tuple(draw(st.integers(0, 14)) for _ in range(len(sizes) - 1)),
        half=draw(st.booleans()), estimate=draw(st.sampled_from(fx.FIXED_ESTIMATES)),
        update_rounding=draw(st.sampled_from(fx.UPDATE_ROUNDINGS)),
        batch=draw(st.sampled_from([1, 2, 4])), lfsr_seed=draw(st.integers(1, 2 ** 32 - 1)),
        decay_shift=draw(st.sampled_from([0, 0, 1, 3, 10, 15, 20])),
        **draw(st.sampled_from([{}, {"weights": "binary"}, {"weights": "binary", "m": 0.5},
                                {"weights": "binary", "m": 3.0},
                                {"weights": "binary", "m": 20.0}])))
    scale = draw(st.sampled_from(["full", "small", "zero"]))
    if scale == "zero":
        weight_raw = st.just(0)
    elif scale == "small":
        weight_raw = st.integers(-(2 ** wfrac) // 2, 2 ** wfrac // 2)
    else:
        weight_raw = _raw(weight)
    W = [[[draw(weight_raw) for _ in range(sizes[k])] for _ in range(sizes[k + 1])]
         for k in range(len(sizes) - 1)]
    b = [[draw(weight_raw) for _ in range(sizes[k + 1])] for k in range(len(sizes) - 1)]
    n = draw(st.integers(1, cfg.batch))
    xs = [[draw(_raw(state)) for _ in range(sizes[0])] for _ in range(n)]
    labels = [draw(st.integers(0, sizes[-1] - 1)) for _ in range(n)]
    return cfg, W, b, xs, labels


def _params(W, b):
    return {"W": [np.array(w, dtype=np.int64) for w in W],
            "b": [np.array(v, dtype=np.int64) for v in b]}


def _check_step(cfg, W, b, xs, labels):
    lfsr, ref_lfsr = fx.Lfsr32(cfg.lfsr_seed), RefLfsr(cfg.lfsr_seed)
    params, s_free = fx.train_step(cfg, _params(W, b), np.array(xs, dtype=np.int64),
                                   np.array(labels), lfsr)
    rW, rb, rfree = ref_train_step(cfg, W, b, xs, labels, ref_lfsr)
    assert [w.tolist() for w in params["W"]] == rW
    assert [v.tolist() for v in params["b"]] == rb
    for k, layer in enumerate(s_free):
        assert layer.tolist() == [sample[k] for sample in rfree]
    assert lfsr.state == ref_lfsr.s


# -- the twin equals the reference ------------------------------------------------------------------

@PROPS
@given(case=cases())
def test_train_step_equals_scalar_reference(case):
    _check_step(*case)


def _default_like(sizes, W_value, b_value, batch=1, **changes):
    cfg = fx.FixedEqPropConfig(sizes=sizes, T=5, K=3, lr_shifts=(0,) * (len(sizes) - 1),
                               batch=batch, **changes)
    W = [[[W_value] * sizes[k] for _ in range(sizes[k + 1])] for k in range(len(sizes) - 1)]
    b = [[b_value] * sizes[k + 1] for k in range(len(sizes) - 1)]
    return cfg, W, b


@pytest.mark.parametrize("w_value, b_value, expect", [
    (fx.WEIGHT_FORMAT.max_raw, fx.WEIGHT_FORMAT.max_raw, 255),   # saturates at the top
    (fx.WEIGHT_FORMAT.min_raw, fx.WEIGHT_FORMAT.min_raw, 0),     # and at the bottom
    (0, 0, 0),                                                   # zero weights: sigma(0) = 0
    (0, 1 << 12, 128),                                           # b = 1/2: s = 1/2 exactly
])
def test_directed_edges(w_value, b_value, expect):
    sizes = (4, 3, 2)
    cfg, W, b = _default_like(sizes, w_value, b_value)
    xs = [[255] * 4]
    params = _params(W, b)
    s = fx.free_phase(cfg, params, np.array(xs))
    assert all(layer.tolist() == [[expect] * layer.shape[1]] for layer in s)
    # and the full step (with lr 1: updates saturate the weights) equals the reference
    _check_step(cfg, W, b, xs, [1])
    _check_step(cfg, W, b, [[0] * 4], [0])


def test_weights_saturate_at_both_ends_on_update():
    sizes = (2, 2, 2)
    top, bottom = fx.WEIGHT_FORMAT.max_raw, fx.WEIGHT_FORMAT.min_raw
    cfg = fx.FixedEqPropConfig(sizes=sizes, T=3, K=3, beta_shift=0, lr_shifts=(0, 0),
                               update_rounding="floor")
    W = [[[top - 1, bottom + 1], [top - 1, bottom + 1]], [[top, bottom], [bottom, top]]]
    b = [[1 << 13, 1 << 13], [0, 0]]
    params, _ = fx.train_step(cfg, _params(W, b), np.array([[255, 255]]), np.array([0]),
                              fx.Lfsr32(1))
    assert params["W"][0].max() <= top and params["W"][0].min() >= bottom
    assert (params["W"][1] == top).any() or (params["W"][1] == bottom).any()
    _check_step(cfg, W, b, [[255, 255]], [0])


def test_batch_equals_samples_one_at_a_time():
    cfg = fx.FixedEqPropConfig(sizes=(6, 5, 3), T=8)
    params = fx.init_params(cfg)
    x = np.random.default_rng(3).integers(0, 256, (9, 6))
    together = fx.free_phase(cfg, params, x)
    for n in range(9):
        alone = fx.free_phase(cfg, params, x[n:n + 1])
        assert all((a[0] == t[n]).all() for a, t in zip(alone, together))


# -- the random source ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 0xACE1, 2 ** 32 - 1])
def test_lfsr_draws_equal_bit_by_bit_stepping(seed):
    lfsr, ref = fx.Lfsr32(seed), RefLfsr(seed)
    got = np.concatenate([lfsr.draws(n) for n in (1, 2, 3, 37, 0, 100)])
    assert got.tolist() == [ref.draw() for _ in range(143)]
    assert lfsr.state == ref.s


def test_lfsr_single_step():
    lfsr = fx.Lfsr32(1)
    assert lfsr.step() == 0x80200003          # lsb 1: shift, then the mask
    lfsr = fx.Lfsr32(2)
    assert lfsr.step() == 1                   # lsb 0: a plain shift


def _mat_apply(cols, v):
    out = 0
    i = 0
    while v:
        if v & 1:
            out ^= cols[i]
        v >>= 1
        i += 1
    return out


def _mat_pow(cols, n):
    result = [1 << i for i in range(32)]
    base = list(cols)
    while n:
        if n & 1:
            result = [_mat_apply(result, c) for c in base]
        base = [_mat_apply(base, c) for c in base]
        n >>= 1
    return result


def test_lfsr_is_maximal_length():
    # The one-step map A has order 2**32 - 1 exactly: A**(2**32-1) = I and A**((2**32-1)/q) != I
    # for every prime q dividing 2**32 - 1 = 3 * 5 * 17 * 257 * 65537.
    step = RefLfsr(0)

    def image(v):
        step.s = v
        out = step.s & 1
        step.s >>= 1
        return step.s ^ 0x80200003 if out else step.s

    A = [image(1 << i) for i in range(32)]
    identity = [1 << i for i in range(32)]
    period = 2 ** 32 - 1
    assert _mat_pow(A, period) == identity
    for q in (3, 5, 17, 257, 65537):
        assert _mat_pow(A, period // q) != identity


def test_stochastic_rounding_is_unbiased_over_draws():
    value = np.full(20000, 5 * 64 + 16, dtype=np.int64)        # 5.25 in units of 2**6
    rounded = fx.round_shift(value, 6, "stochastic", fx.Lfsr32(7).draws(value.size))
    assert set(np.unique(rounded).tolist()) == {5, 6}
    assert abs(rounded.mean() - 5.25) < 0.01


# -- configuration -----------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, words", [
    ({"state": FixedFormat(False, 0, 1)}, "at least 2 bits"),
    ({"state": FixedFormat(True, 0, 7)}, "unsigned"),
    ({"weight": FixedFormat(False, 2, 13)}, "signed"),
    ({"beta_shift": 14}, "beta_shift"),
    ({"beta_shift": -1}, "beta_shift"),
    ({"T": 0}, "T must"),
    ({"K": 0}, "K must"),
    ({"batch": 3}, "power of two"),
    ({"lr_shifts": (2,)}, "lr_shifts"),
    ({"lfsr_seed": 0}, "lfsr_seed"),
    ({"sizes": (64,)}, "sizes"),
    ({"sizes": (10 ** 13, 10, 10)}, "accumulator"),
])
def test_impossible_settings_are_refused(changes, words):
    with pytest.raises(NmflowError, match=words) as error:
        fx.FixedEqPropConfig(**changes)
    assert "\n" not in str(error.value)


def test_default_formats_and_shifts():
    cfg = fx.FixedEqPropConfig()
    assert (cfg.state.width, cfg.weight.width, cfg.weight.frac_bits) == (8, 16, 13)
    assert cfg.beta == 0.25
    # 64 + 10 inputs of |w| < 4 times s < 1, plus a bias and the nudge: under 2**9 in value
    assert cfg.to_dict()["accumulator"]["frac_bits"] == 21
    assert accumulator_fits(cfg)


def accumulator_fits(cfg):
    acc = fx.accumulator_format(cfg)
    wmax = 2 ** (cfg.weight.width - 1)
    worst = (64 + 10) * wmax * 255 + wmax * 256 + 256 * 2 ** (13 - cfg.beta_shift)
    return worst <= acc.max_raw


def test_init_matches_the_float_initialisation():
    from nmflow.golden.eqprop import EqPropConfig, EqPropNet
    net = EqPropNet.init(EqPropConfig(sizes=(5, 4, 3), dtype="float64", seed=3))
    params = fx.init_params(fx.FixedEqPropConfig(sizes=(5, 4, 3), seed=3))
    for w, raw in zip(net.W + net.b, params["W"] + params["b"]):
        assert np.array_equal(np.rint(w.numpy() * 2 ** 13).astype(np.int64), raw)


@pytest.mark.slow
def test_fixed_point_training_learns_digits():
    from nmflow.golden.datasets import load_digits
    d = load_digits()
    cfg = fx.FixedEqPropConfig(batch=32, lr_shifts=(2, 3), epochs=3)
    x_train = fx.inputs_to_raw(d.x_train, 16)
    x_test = fx.inputs_to_raw(d.x_test, 16)
    _, history = fx.train(cfg, x_train, d.y_train, x_test, d.y_test)
    assert history[-1]["test_accuracy"] > 0.85


@pytest.mark.parametrize("r", [1, 4, 15, 16, 18])
def test_stochastic_rounding_rule_exhaustively(r):
    # Every remainder against draws around each boundary: up exactly when u / 2**16 < rest / 2**r.
    rests = np.arange(0, 2 ** r, max(1, 2 ** r // 512), dtype=np.int64)
    values, draws, expect = [], [], []
    for rest in rests.tolist():
        edge = (rest << 16) >> r                         # first u that must not round up
        for u in {0, max(edge - 1, 0), edge, min(edge + 1, 0xFFFF), 0xFFFF}:
            values.append(-(3 << r) + rest)
            draws.append(u)
            expect.append(-3 + (1 if u * 2 ** r < rest * 2 ** 16 else 0))
    got = fx.round_shift(np.array(values), r, "stochastic", np.array(draws))
    assert got.tolist() == expect


# -- binary weights and metaplastic consolidation ---------------------------------------------------

def test_binary_alphas_are_the_scaled_sign_magnitudes():
    cfg = fx.FixedEqPropConfig(sizes=(64, 128, 10), weights="binary")
    # 1 / (2 sqrt(64)) = 1/16 is 512 in s2.13; 1 / (2 sqrt(128)) = 0.04419 is 362.04 -> 362
    assert cfg.binary_alphas == (512, 362)
    assert cfg.to_dict()["binary_alphas_raw"] == [512, 362]
    assert cfg.alpha_scale == 1.0 and cfg.to_dict()["alpha_scale"] == 1.0


def test_alpha_scale_scales_the_binary_alphas():
    cfg = fx.FixedEqPropConfig(sizes=(64, 128, 10), weights="binary", alpha_scale=1.25)
    # 1.25 / (2 sqrt(64)) = 5/64 is 640 in s2.13; 1.25 / (2 sqrt(128)) = 0.055243 is 452.55 -> 453
    assert cfg.binary_alphas == (640, 453)
    assert cfg.to_dict()["binary_alphas_raw"] == [640, 453]
    assert cfg.to_dict()["alpha_scale"] == 1.25
    # 0.5 / (2 sqrt(64)) = 1/32 is 256
    half = fx.FixedEqPropConfig(sizes=(64, 10), lr_shifts=(7,), weights="binary", alpha_scale=0.5)
    assert half.binary_alphas == (256,)
    # the dynamics use them: +-640 and +-453 in place of the hidden weights
    dyn = fx.dynamics_params(cfg, fx.init_params(cfg))
    assert sorted(set(np.abs(dyn["W"][0]).ravel().tolist())) == [640]
    assert sorted(set(np.abs(dyn["W"][1]).ravel().tolist())) == [453]


def test_alpha_scale_survives_the_testbench_json():
    from nmflow.sim.eqprop_sim import config_from_json, config_to_json
    cfg = fx.FixedEqPropConfig(sizes=(64, 32, 10), batch=1, weights="binary", alpha_scale=1.25)
    back = config_from_json(config_to_json(cfg))
    assert back == cfg and back.binary_alphas == cfg.binary_alphas == (640, 905)
    # a JSON written before the option reads as scale 1
    import json
    old = json.loads(config_to_json(cfg))
    del old["alpha_scale"]
    assert config_from_json(json.dumps(old)).binary_alphas == (512, 724)


def _meta_case(m):
    """A 4-3-2 binary network with large hidden weights of both signs, learning rate 1 (every
    update moves weights by whole steps), and one sample to learn."""
    cfg = fx.FixedEqPropConfig(sizes=(4, 3, 2), T=6, K=4, beta_shift=0, lr_shifts=(0, 0),
                               update_rounding="nearest_up", weights="binary", m=m)
    big = 3 << 12                                       # 1.5: f_meta(20, 1.5) rounds to 0
    W = [[[big, -big, big, -big], [-big, big, -big, big], [big, big, -big, -big]],
         [[big, -big, big], [-big, big, -big]]]
    b = [[1 << 12, 1 << 12, 1 << 12], [0, 0]]
    return cfg, W, b


@pytest.mark.parametrize("m", [0.0, 0.5, 20.0])
def test_metaplastic_step_equals_reference_on_directed_case(m):
    cfg, W, b = _meta_case(m)
    for x, label in (([255, 0, 255, 0], 1), ([0, 255, 0, 255], 0), ([255] * 4, 1)):
        _check_step(cfg, W, b, [x], [label])


def test_consolidated_hidden_weights_resist_steps_toward_zero():
    plain_cfg, W, b = _meta_case(0.0)
    meta_cfg = _meta_case(20.0)[0]
    x = np.array([[255, 0, 255, 0]])
    plain, _ = fx.train_step(plain_cfg, _params(W, b), x, np.array([1]), fx.Lfsr32(1))
    meta, _ = fx.train_step(meta_cfg, _params(W, b), x, np.array([1]), fx.Lfsr32(1))
    before = _params(W, b)["W"]
    moved_in = 0
    for w0, wp, wm in zip(before, plain["W"], meta["W"]):
        toward = (wp - w0) * w0 < 0                      # the plain step shrinks |W_h|
        away = (wp - w0) * w0 > 0
        moved_in += int(toward.sum())
        assert (wm[toward] == w0[toward]).all()          # f_meta(20, 1.5) is 0 in the table
        assert (wm[away] == wp[away]).all()              # growing steps are never scaled
    assert moved_in > 0
    assert [v.tolist() for v in meta["b"]] == [v.tolist() for v in plain["b"]]


def test_binary_dynamics_only_see_the_signs():
    cfg = fx.FixedEqPropConfig(sizes=(5, 4, 3), T=5, weights="binary")
    params = fx.init_params(cfg)
    scaled = {"W": [w * 7 + np.sign(w) for w in params["W"]], "b": params["b"]}
    x = np.random.default_rng(1).integers(0, 256, (6, 5))
    for a, c in zip(fx.free_phase(cfg, params, x), fx.free_phase(cfg, scaled, x)):
        assert (a == c).all()


@pytest.mark.parametrize("changes, words", [
    ({"m": 1.0}, "m must be 0 unless weights is 'binary'"),
    ({"weights": "ternary"}, "weights must be"),
    ({"weights": "binary", "m": -1.0}, "m must be"),
    ({"weights": "binary", "sizes": (5000, 3, 2), "weight": FixedFormat(True, 2, 2)},
     "alpha_0"),
    ({"weights": "binary", "alpha_scale": 0.0}, "alpha_scale must be a positive finite number"),
    ({"weights": "binary", "alpha_scale": -2.0}, "alpha_scale must be a positive finite number"),
    ({"weights": "binary", "alpha_scale": float("inf")}, "alpha_scale must be"),
    ({"alpha_scale": 1.25}, r"alpha_scale must be 1 unless weights is 'binary' \(it scales the "
                            r"binary weights\), not 1.25"),
    # 16 / (2 sqrt(4)) = 4.0 is past s2.13's largest value, 3.99988
    ({"weights": "binary", "sizes": (4, 3, 2), "alpha_scale": 16.0},
     r"weight format must hold alpha_0 = 16 / \(2 sqrt\(4\)\)"),
    # 0.0005 / (2 sqrt(64)) is 0.256 raw in s2.13: rounds to 0
    ({"weights": "binary", "alpha_scale": 0.0005}, "must resolve alpha_0 = 0.0005"),
])
def test_impossible_binary_settings_are_refused(changes, words):
    with pytest.raises(NmflowError, match=words):
        fx.FixedEqPropConfig(**changes)
