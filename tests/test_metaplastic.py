"""Metaplastic Adam, f_meta and the paper's rule (nmflow.golden.metaplastic).

Every expected value comes from an independent computation: torch.optim.Adam for m = 0, Python
floats and math.tanh for the rule, a float64 NumPy Adam for m > 0.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nmflow.errors import NmflowError
from nmflow.golden.metaplastic import (MetaplasticAdam, f_meta, f_meta_hard, layer_groups,
                                       metaplastic_update)


from helpers import one_torch_thread  # noqa: F401 (autouse: one torch thread per test)

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)
ms = st.floats(0, 30, allow_nan=False, allow_infinity=False)


class TinyBNN(torch.nn.Module):
    """Two bias-free layers with BatchNorm (hidden weights used through sign in forward)."""

    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.empty(16, 8).uniform_(-0.1, 0.1))
        self.bn1 = torch.nn.BatchNorm1d(16)
        self.w2 = torch.nn.Parameter(torch.empty(4, 16).uniform_(-0.1, 0.1))
        self.bn2 = torch.nn.BatchNorm1d(4)

    def forward(self, x):
        sign = lambda w: w + (torch.where(w >= 0, 1.0, -1.0) - w).detach()  # noqa: E731
        h = self.bn1(x @ sign(self.w1).T)
        h = h + (torch.where(h >= 0, 1.0, -1.0) - h).detach()
        return self.bn2(h @ sign(self.w2).T)


def _train(net, optimizer, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(12, 8, generator=gen)
        y = torch.randint(0, 4, (12,), generator=gen)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _pair(seed=3):
    torch.manual_seed(seed)
    a = TinyBNN()
    b = TinyBNN()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("decay", [0.0, 1e-7, 1e-2])
@pytest.mark.parametrize("foreach", [None, False])
def test_m_zero_is_torch_adam_bit_for_bit(decay, foreach):
    a, b = _pair()
    _train(a, torch.optim.Adam(a.parameters(), lr=0.01, weight_decay=decay, foreach=foreach), 150)
    _train(b, MetaplasticAdam(b.parameters(), lr=0.01, weight_decay=decay, meta=0.0), 150)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    # and the weights really moved (the comparison is not between two untouched models)
    assert not torch.equal(a.w1, TinyBNN().w1)


def test_m_zero_groups_via_layer_groups_is_adam():
    a, b = _pair(5)
    _train(a, torch.optim.Adam(a.parameters(), lr=0.02, weight_decay=1e-7), 80)
    _train(b, MetaplasticAdam(layer_groups(b, 0.0), lr=0.02, weight_decay=1e-7), 80)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_batchnorm_parameters_get_plain_adam_and_per_layer_m():
    a, b = _pair(7)
    _train(a, torch.optim.Adam(a.parameters(), lr=0.02), 1)
    # one step: BatchNorm (1-D) and a layer with m = 0 are plain Adam even when another layer
    # has a large m; the layer with m > 0 differs
    opt = MetaplasticAdam(layer_groups(b, [0.0, 50.0]), lr=0.02, weight_decay=0.0)
    _train(b, opt, 1)
    assert torch.equal(a.bn1.weight, b.bn1.weight) and torch.equal(a.bn2.bias, b.bn2.bias)
    assert torch.equal(a.w1, b.w1)
    assert not torch.equal(a.w2, b.w2)


def _numpy_adam_meta(w0, grads, lr, m, b1=0.9, b2=0.999, eps=1e-8, decay=0.0):
    """Float64 metaplastic Adam written from the description (Python loop over steps)."""
    w = w0.astype(np.float64).copy()
    mo = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = g + decay * w
        mo = b1 * mo + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat = mo / (1 - b1 ** t)
        vhat = v / (1 - b2 ** t)
        f = 1 - np.tanh(m * w) ** 2
        mhat = np.where(np.sign(w) * mo > 0, f * mhat, mhat)
        w = w - lr * mhat / (np.sqrt(vhat) + eps)
    return w


@pytest.mark.parametrize("m", [0.5, 3.0, 20.0])
def test_metaplastic_adam_matches_float64_reference(m):
    rng = np.random.default_rng(1)
    w0 = rng.uniform(-1, 1, (6, 5)).astype(np.float32)
    w0[0, 0] = 0.0                                  # W_h = 0: sign 0, plain step
    grads = [rng.normal(size=(6, 5)).astype(np.float32) for _ in range(40)]
    grads = [g + 0.3 for g in grads]               # drift so that some weights keep shrinking
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = MetaplasticAdam([p], lr=0.01, meta=m, weight_decay=1e-3)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    expected = _numpy_adam_meta(w0, [g.astype(np.float64) for g in grads], 0.01, m, decay=1e-3)
    np.testing.assert_allclose(p.detach().numpy(), expected, rtol=0, atol=2e-5)
    plain = _numpy_adam_meta(w0, [g.astype(np.float64) for g in grads], 0.01, 0.0, decay=1e-3)
    assert np.abs(plain - expected).max() > 1e-3    # m really changed the trajectory


def test_one_step_scales_only_shrinking_steps():
    w0 = torch.tensor([[1.0, -1.0, 1.0, -1.0, 0.0, 0.5]])
    g = torch.tensor([[1.0, -1.0, -1.0, 1.0, 1.0, 2.0]])
    # step = -lr * sign(g) at t = 1 (m_hat / sqrt(v_hat) = sign(g)): entries 0, 1, 5 shrink |W_h|
    p = torch.nn.Parameter(w0.clone())
    opt = MetaplasticAdam([p], lr=0.1, meta=1.5, weight_decay=0.0, eps=0.0)
    p.grad = g.clone()
    opt.step()
    delta = (p.detach() - w0)[0].tolist()
    f1 = 1 - math.tanh(1.5) ** 2
    f05 = 1 - math.tanh(0.75) ** 2
    expected = [-0.1 * f1, 0.1 * f1, 0.1, -0.1, -0.1, -0.1 * f05]
    assert delta == pytest.approx(expected, abs=1e-6)


def test_large_hidden_weight_is_consolidated():
    p0 = torch.full((1, 4), 3.0)
    out = {}
    for m in (0.0, 2.0):
        p = torch.nn.Parameter(p0.clone())
        opt = MetaplasticAdam([p], lr=0.05, meta=m, weight_decay=0.0)
        for _ in range(200):                        # every gradient pushes W_h toward -inf
            p.grad = torch.ones(1, 4)
            opt.step()
        out[m] = p.detach()
    assert torch.all(out[0.0] < 0)                  # plain Adam flips the binary weight
    assert torch.all(out[2.0] > 2.9)                # f_meta(2, 3) ~ 2.5e-5: it stays


@settings(max_examples=200, deadline=None)
@given(m=ms, w=finite)
def test_f_meta_against_math(m, w):
    expected = 1.0 - math.tanh(m * w) ** 2
    assert float(f_meta(m, np.array([w]))[0]) == pytest.approx(expected, abs=1e-15)
    assert 0.0 <= expected <= 1.0
    assert float(f_meta(m, torch.tensor([w], dtype=torch.float64))[0]) == pytest.approx(
        expected, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(m=ms, a=finite, b=finite)
def test_f_meta_conditions(m, a, b):
    # eq. 2.9-2.10 and monotonic decay in |W_h|
    assert f_meta(0.0, np.array([a]))[0] == 1.0
    assert f_meta(m, np.array([0.0]))[0] == 1.0
    lo, hi = sorted((abs(a), abs(b)))
    assert f_meta(m, np.array([hi]))[0] <= f_meta(m, np.array([lo]))[0]
    assert f_meta(m, np.array([a]))[0] == f_meta(m, np.array([-a]))[0]


def test_f_meta_hard_threshold_edges():
    w = np.array([0.0, 0.3999, 0.4, -0.4, 0.41, -5.0])
    assert f_meta_hard(0.4, w).tolist() == [1, 1, 0, 0, 0, 0]
    t = torch.tensor(w, dtype=torch.float64)
    assert f_meta_hard(0.4, t).tolist() == [1, 1, 0, 0, 0, 0]


def _scalar_rule(w, u, lr, m, hard=False):
    out = []
    for wi, ui in zip(w, u):
        if ui * wi > 0:
            f = (1.0 if abs(wi) < m else 0.0) if hard else 1.0 - math.tanh(m * wi) ** 2
            out.append(wi - lr * ui * f)
        else:
            out.append(wi - lr * ui)
    return out


@settings(max_examples=150, deadline=None)
@given(w=st.lists(finite, min_size=1, max_size=20), data=st.data(), m=ms,
       lr=st.floats(0, 1), hard=st.booleans())
def test_rule_against_scalar_loop(w, data, m, lr, hard):
    u = data.draw(st.lists(finite, min_size=len(w), max_size=len(w)))
    kind = "hard" if hard else "tanh"
    expected = _scalar_rule(w, u, lr, m, hard)
    got = metaplastic_update(np.array(w), np.array(u), lr, m, kind)
    assert got.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    got_t = metaplastic_update(torch.tensor(w, dtype=torch.float64),
                               torch.tensor(u, dtype=torch.float64), lr, m, kind)
    assert got_t.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_rule_directed_cases():
    # W_h = 0 and U = 0 take the plain branch; m = 0 is plain everywhere
    w = np.array([0.0, 2.0, 2.0, -2.0, -2.0, 1.0])
    u = np.array([1.0, 1.0, -1.0, -1.0, 1.0, 0.0])
    f = 1 - math.tanh(2.0) ** 2
    got = metaplastic_update(w, u, 0.5, 1.0)
    assert got.tolist() == pytest.approx([-0.5, 2 - 0.5 * f, 2.5, -2 + 0.5 * f, -2.5, 1.0])
    assert metaplastic_update(w, u, 0.5, 0.0).tolist() == (w - 0.5 * u).tolist()


def test_weight_rule_hook_receives_adam_step():
    a, b = _pair(11)
    _train(a, torch.optim.Adam(a.parameters(), lr=0.01, weight_decay=0.0), 30)
    seen = []

    def rule(p, step, group):
        seen.append(step.shape)
        p.sub_(step)
    _train(b, MetaplasticAdam(b.parameters(), lr=0.01, weight_decay=0.0, meta=5.0,
                              weight_rule=rule), 30)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-5)
    assert len(seen) == 60 and all(len(s) == 2 for s in seen)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "2", True])
def test_bad_m_refused(bad):
    with pytest.raises(NmflowError, match="m must be a non-negative finite number"):
        f_meta(bad, np.zeros(2))
    with pytest.raises(NmflowError, match="meta must be a non-negative finite number"):
        MetaplasticAdam([torch.nn.Parameter(torch.zeros(2, 2))], meta=bad)


def test_bad_arguments_refused():
    with pytest.raises(NmflowError, match="kind must be one of"):
        metaplastic_update(np.zeros(2), np.zeros(2), 0.1, 1.0, kind="soft")
    with pytest.raises(NmflowError, match="lr must be"):
        metaplastic_update(np.zeros(2), np.zeros(2), -0.1, 1.0)
    with pytest.raises(NmflowError, match="u must have the shape"):
        metaplastic_update(np.zeros(2), np.zeros(3), 0.1, 1.0)
    with pytest.raises(NmflowError, match="betas"):
        MetaplasticAdam([torch.nn.Parameter(torch.zeros(2, 2))], betas=(0.9, 1.0))
    net = TinyBNN()
    with pytest.raises(NmflowError, match="one value per weight matrix"):
        layer_groups(net, [1.0, 2.0, 3.0])


def _scalar_complex(w1, w2, w3, w4, u, g12, g23, g34, eps, alpha, m):
    """Eq. 2.8 for one synapse, written with Python floats."""
    sgn4 = (w4 > 0) - (w4 < 0)
    n1 = w1 - u + g12 * (w2 - w1)
    if not (w1 - w4) * sgn4 > 0:
        n1 += alpha * (w4 - w1)
    n2 = w2 + g12 * (w1 - w2) + g23 * (w3 - w2)
    n3 = w3 + g23 * (w2 - w3) + g34 * (w4 - w3)
    if abs(w3) > abs(w4):
        n4 = w4 + g34 * (w3 - w4) - eps * w4
    else:
        n4 = w4 + g34 * (1 - math.tanh(m * w4) ** 2) * (w3 - w4) - eps * w4
    return n1, n2, n3, n4


@settings(max_examples=100, deadline=None)
@given(ws=st.lists(st.tuples(finite, finite, finite, finite, finite), min_size=1, max_size=8),
       g=st.tuples(st.floats(0, 0.5), st.floats(0, 0.5), st.floats(0, 0.5), st.floats(0, 0.1),
                   st.floats(0, 0.5), st.floats(0, 20)))
def test_complex_synapse_against_scalar_loop(ws, g):
    from nmflow.golden.metaplastic import complex_synapse_step
    g12, g23, g34, eps, alpha, m = g
    cols = [np.array(c, dtype=np.float64) for c in zip(*ws)]
    got = complex_synapse_step(cols[:4], cols[4], g12, g23, g34, eps, alpha, m)
    for k, row in enumerate(ws):
        want = _scalar_complex(*row, g12, g23, g34, eps, alpha, m)
        assert [float(v[k]) for v in got] == pytest.approx(want, rel=1e-12, abs=1e-9)
    tgot = complex_synapse_step([torch.tensor(c) for c in cols[:4]], torch.tensor(cols[4]),
                                g12, g23, g34, eps, alpha, m)
    for a, b in zip(got, tgot):
        np.testing.assert_allclose(b.numpy(), a, rtol=1e-12, atol=1e-9)


def test_complex_rule_keeps_deep_variables_per_parameter():
    from nmflow.golden.metaplastic import ComplexSynapseRule
    rule = ComplexSynapseRule(g12=0.5)
    p = torch.nn.Parameter(torch.ones(2, 2))
    opt = MetaplasticAdam([p], lr=0.1, weight_decay=0.0, weight_rule=rule)
    p.grad = torch.ones(2, 2)
    opt.step()
    w2 = rule.deep[id(p)][0]
    # after one step W2 = 0 + g12 (W1 - W2) = 0.5 (old values); W1 = 1 - 0.1 + 0.5 (0 - 1) ...
    assert torch.allclose(w2, torch.full((2, 2), 0.5))
    # W4 = 0: sign 0, so the feedback alpha (W4 - W1) applies
    assert torch.allclose(p.detach(), torch.full((2, 2), 1 - 0.1 - 0.5 + 5e-3 * (0 - 1)),
                          atol=1e-6)
    with pytest.raises(NmflowError, match="complex synapse settings must be among"):
        ComplexSynapseRule(beta=1.0)


# -- dynamics of the four-variable synapse, against closed forms derived by hand from eq. 2.8 --


def _run_complex(w, steps, u=0.0, **settings):
    from nmflow.golden.metaplastic import complex_synapse_step
    w = [np.array([float(v)]) for v in w]
    for _ in range(steps):
        w = complex_synapse_step(w, np.array([u]), **settings)
    return [float(v[0]) for v in w]


def test_complex_chain_without_leak_or_feedback_conserves_and_equalizes():
    # alpha = eps = 0, m = 0 (f_meta = 1) and no updates: eq. 2.8 is the linear diffusion
    # w <- w + g12 (W2-W1, W1-W2, 0, 0) + g23 (0, W3-W2, W2-W3, 0) + g34 (0, 0, W4-W3, W3-W4):
    # every exchange moves as much into one variable as out of its neighbour, so the sum is
    # conserved and the four variables relax to the mean of their initial values.
    from nmflow.golden.metaplastic import complex_synapse_step
    g = dict(g12=0.2, g23=0.05, g34=0.01, eps=0.0, alpha=0.0, m=0.0)
    w = [np.array([1.0]), np.array([-0.2]), np.array([0.3]), np.array([0.1])]
    for _ in range(100):
        w = complex_synapse_step(w, np.array([0.0]), **g)
        assert sum(float(v[0]) for v in w) == pytest.approx(1.2, abs=1e-12)
    assert max(float(v[0]) for v in w) - min(float(v[0]) for v in w) > 1e-3     # not yet equal
    assert _run_complex([1.0, -0.2, 0.3, 0.1], 20000, **g) == pytest.approx([0.3] * 4, abs=1e-9)


def test_complex_w2_relaxes_toward_w1_at_rate_g12():
    # only g12: W1 + W2 is conserved and W1 - W2 shrinks by (1 - 2 g12) per step, so
    # W1(t) = (a + b)/2 + (a - b)/2 (1 - 2 g12)^t with (a, b) = (1, 0), g12 = 0.1, t = 10.
    w1, w2, w3, w4 = _run_complex([1.0, 0.0, 0.0, 0.0], 10, g12=0.1, g23=0.0, g34=0.0, eps=0.0,
                                  alpha=0.0, m=0.0)
    assert w1 == pytest.approx(0.5 + 0.5 * 0.8 ** 10, rel=1e-12)
    assert w2 == pytest.approx(0.5 - 0.5 * 0.8 ** 10, rel=1e-12)
    assert (w3, w4) == (0.0, 0.0)


def test_complex_w4_leaks_at_rate_eps():
    # g = 0, alpha = 0: W4(t) = (1 - eps)^t W4(0); W1..W3 untouched.
    w = _run_complex([0.5, 0.4, 0.3, 2.0], 1000, g12=0.0, g23=0.0, g34=0.0, eps=1e-3, alpha=0.0,
                     m=10.0)
    assert w[3] == pytest.approx(2.0 * 0.999 ** 1000, rel=1e-12)
    assert w[:3] == [0.5, 0.4, 0.3]


def test_complex_w4_consolidated_by_fmeta_only_when_it_would_shrink():
    # g34 only, one step: W3 beyond W4 (|W3| > |W4|) -> W4 += g34 (W3 - W4); W3 inside
    # -> W4 += g34 (1 - tanh^2(m W4)) (W3 - W4).
    grow = _run_complex([0.0, 0.0, 2.0, 1.0], 1, g12=0.0, g23=0.0, g34=0.1, eps=0.0, alpha=0.0,
                        m=1.0)
    assert grow[3] == pytest.approx(1.0 + 0.1 * 1.0, rel=1e-12)
    shrink = _run_complex([0.0, 0.0, 0.0, 1.0], 1, g12=0.0, g23=0.0, g34=0.1, eps=0.0, alpha=0.0,
                          m=1.0)
    assert shrink[3] == pytest.approx(1.0 - 0.1 * (1 - math.tanh(1.0) ** 2), rel=1e-12)


def test_complex_feedback_holds_w1_against_opposing_updates():
    # g = eps = 0: W4 = 1 stays; a constant step u pushing W1 below W4 meets the feedback
    # alpha (W4 - W1): W1(t) = W* + (W1(0) - W*) (1 - alpha)^t with W* = W4 - u / alpha.
    # u = 0.01, alpha = 0.05: W* = 0.8, the binary weight never flips however long u pushes.
    settings = dict(g12=0.0, g23=0.0, g34=0.0, eps=0.0, alpha=0.05, m=0.0)
    w1 = _run_complex([1.0, 0.0, 0.0, 1.0], 50, u=0.01, **settings)[0]
    assert w1 == pytest.approx(0.8 + 0.2 * 0.95 ** 50, rel=1e-12)
    assert _run_complex([1.0, 0.0, 0.0, 1.0], 5000, u=0.01, **settings)[0] == \
        pytest.approx(0.8, rel=1e-9)
    # above W4 (same side) there is no feedback: W1 just moves by -u
    w1 = _run_complex([1.5, 0.0, 0.0, 1.0], 1, u=0.01, **settings)[0]
    assert w1 == pytest.approx(1.49, rel=1e-12)
    # without the feedback the same updates flip the weight (W1 = 1 - 500 * 0.01 < 0)
    assert _run_complex([1.0, 0.0, 0.0, 1.0], 500, u=0.01, **{**settings, "alpha": 0.0})[0] < 0


def test_complex_rule_without_couplings_is_adam():
    # g = eps = alpha = 0: W1 only takes Adam's step, whatever happens to W2..W4.
    from nmflow.golden.metaplastic import ComplexSynapseRule
    a, b = _pair()
    _train(a, torch.optim.Adam(a.parameters(), lr=0.01, weight_decay=1e-7), 100)
    rule = ComplexSynapseRule(g12=0.0, g23=0.0, g34=0.0, eps=0.0, alpha=0.0)
    _train(b, MetaplasticAdam(b.parameters(), lr=0.01, weight_decay=1e-7, weight_rule=rule), 100)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa, rtol=0, atol=1e-6, msg=name)
    assert not torch.equal(a.w1, TinyBNN().w1)
