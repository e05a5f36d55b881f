"""Float training models: quantizers and their gradients, the network, training and checkpoints."""

import pytest
import torch

from nmflow.errors import NmflowError
from nmflow.golden.datasets import load_digits
from nmflow.golden.layers import (QuantNet, binarize, sign_activation, ternarize,
                                  ternary_activation)
from nmflow.golden.train import (TrainConfig, evaluate, load_checkpoint, predict, save_checkpoint,
                                 train)

torch.set_num_threads(1)


def t(values):
    return torch.tensor(values, dtype=torch.float32)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


# ------------------------------------------------------------------------- quantizers: forward

def test_binarize_rule_at_zero_and_exact_values():
    out = binarize(t([-3.0, -1e-30, -0.0, 0.0, 1e-30, 0.7]))
    assert out.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]
    assert out.dtype == torch.float32


def test_ternarize_rule_at_the_dead_zone_edges():
    # delta = 0.25 is exact in float32, so the edges are exact
    w = t([-1.0, -0.2500001, -0.25, -0.1, 0.0, 0.1, 0.25, 0.2500001, 2.0])
    assert ternarize(w, 0.25).tolist() == [-1, -1, 0, 0, 0, 0, 0, 1, 1]
    assert ternarize(t([-0.06, -0.04, 0.04, 0.06])).tolist() == [-1, 0, 0, 1]  # delta 0.05


def test_sign_activation_gives_plus_one_at_zero():
    y = t([-2.0, -1e-30, -0.0, 0.0, 1e-30, 5.0])
    assert sign_activation(y).tolist() == [-1, -1, 1, 1, 1, 1]
    assert torch.sign(t([0.0])).item() == 0  # what the custom function avoids


def test_ternary_activation_rule_at_the_thresholds():
    y = t([-2.0, -0.5000001, -0.5, -0.2, 0.0, 0.2, 0.5, 0.5000001, 2.0])
    assert ternary_activation(y, 0.5).tolist() == [-1, -1, 0, 0, 0, 0, 0, 1, 1]


def test_quantized_values_are_exact_not_nearly_one():
    w = torch.rand(1000) * 4 - 2
    for out in (binarize(w), ternarize(w), sign_activation(w), ternary_activation(w)):
        assert set(out.unique().tolist()) <= {-1.0, 0.0, 1.0}


# ------------------------------------------------------------------------- quantizers: gradient

@pytest.mark.parametrize("quantize", [binarize, lambda w: ternarize(w, 0.05)])
def test_weight_quantizers_pass_the_gradient_straight_through(quantize):
    w = t([-5.0, -1.0, -0.01, 0.0, 0.03, 1.0, 7.0]).requires_grad_()
    upstream = t([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    (quantize(w) * upstream).sum().backward()
    assert w.grad.tolist() == upstream.tolist()


@pytest.mark.parametrize("activate", [sign_activation, lambda y: ternary_activation(y, 0.5)])
def test_activation_gradient_passes_where_abs_y_is_at_most_one(activate):
    y = t([-3.0, -1.0000001, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0000001, 3.0]).requires_grad_()
    upstream = t([2.0] * 9)
    (activate(y) * upstream).sum().backward()
    assert y.grad.tolist() == [0, 0, 2, 2, 2, 2, 2, 0, 0]


# ------------------------------------------------------------------------------------- network

def test_quantnet_structure():
    net = QuantNet([64, 32, 16, 10])
    assert [tuple(lin.weight.shape) for lin in net.linears] == [(32, 64), (16, 32), (10, 16)]
    assert all(not hasattr(lin, "bias") or lin.bias is None for lin in net.linears)
    assert [norm.num_features for norm in net.norms] == [32, 16, 10]
    assert all(norm.track_running_stats for norm in net.norms)
    for lin in net.linears:
        w = lin.weight.detach().abs()
        assert w.max() <= 0.1 and w.max() > 0.09  # uniform in +-0.1, not +-0.05
        assert (w > 0.05).float().mean() > 0.3    # so many ternary weights start non-zero


def test_quantnet_first_layer_reads_integer_pixels_unbinarized():
    net = QuantNet([4, 3, 2], weight_kind="binary", activation="sign")
    x = t([[0, 5, 16, 3]])
    wq = net.quantized_weights()[0]
    assert set(wq.unique().tolist()) <= {-1.0, 1.0}
    assert net.linears[0](x).tolist() == (x @ wq.T).tolist()


def test_quantnet_trace_gives_quantized_hidden_activations_and_logits():
    torch.manual_seed(0)
    net = QuantNet([8, 6, 5, 3], weight_kind="ternary", activation="ternary")
    net.train()
    x = torch.randint(0, 17, (20, 8))
    acts, logits = net.trace(x)
    assert net.training  # the mode is restored
    assert [tuple(a.shape) for a in acts] == [(20, 6), (20, 5)]
    assert all(set(a.unique().tolist()) <= {-1.0, 0.0, 1.0} for a in acts)
    assert logits.shape == (20, 3)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x.float()), logits)


@pytest.mark.parametrize("kwargs, message", [
    ({"sizes": [64]}, r"^sizes must be a list of at least two positive integers, not \[64\]$"),
    ({"sizes": [64, 0, 10]}, r"^sizes must be a list of at least two positive integers, "
                             r"not \[64, 0, 10\]$"),
    ({"sizes": [4, 2], "weight_kind": "quaternary"},
     r"^weight_kind must be one of binary, ternary, not 'quaternary'$"),
    ({"sizes": [4, 2], "activation": "relu"},
     r"^activation must be one of sign, ternary, not 'relu'$"),
    ({"sizes": [4, 2], "delta": -0.1}, r"^delta must be a non-negative finite number, not -0.1$"),
])
def test_quantnet_refuses_bad_parameters(kwargs, message):
    with pytest.raises(NmflowError, match=message):
        QuantNet(**kwargs)


# ------------------------------------------------------------------------------- configuration

@pytest.mark.parametrize("changes, message", [
    ({"epochs": 0}, r"^epochs must be an integer from 1 to 10000, not 0$"),
    ({"epochs": 10**20}, r"^epochs must be an integer from 1 to 10000, not 100000000000000000000$"),
    ({"batch": 1.5}, r"^batch must be an integer from 1 to 65536, not 1.5$"),
    ({"lr": 0.0}, r"^lr must be a finite number above 0 and at most 10, not 0.0$"),
    ({"lr": float("nan")}, r"^lr must be a finite number above 0 and at most 10, not nan$"),
    ({"seed": -2}, r"^seed must be an integer from 0 to 2147483647, not -2$"),
    ({"seed": 2**70}, r"^seed must be an integer from 0 to 2147483647, not 1180591620717411303424$"),
    ({"hidden": (128, 0)}, r"^hidden must be 1 to 16 layer widths from 1 to 65536 such as "
                           r"128,128, not \(128, 0\)$"),
    ({"hidden": (10**9,)}, r"^hidden must be 1 to 16 layer widths from 1 to 65536 such as "
                           r"128,128, not \(1000000000,\)$"),
    ({"schedule": "step"}, r"^schedule must be one of constant, cosine, not 'step'$"),
    ({"weight_kind": "int4"}, r"^weight_kind must be one of binary, ternary, not 'int4'$"),
    ({"act_threshold": -1}, r"^act_threshold must be a non-negative finite number, not -1$"),
])
def test_train_config_refuses_bad_values(changes, message):
    with pytest.raises(NmflowError, match=message):
        TrainConfig(**changes)


def test_train_config_presets_and_dict_round_trip():
    assert (TrainConfig.bnn().weight_kind, TrainConfig.bnn().activation) == ("binary", "sign")
    assert (TrainConfig.tnn().weight_kind, TrainConfig.tnn().activation) == ("ternary", "ternary")
    config = TrainConfig.bnn(hidden=[32, 16], epochs=3)
    assert config.hidden == (32, 16)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(NmflowError, match=r"^training configuration has unknown field 'momentum'$"):
        TrainConfig.from_dict({**config.to_dict(), "momentum": 0.9})


# ------------------------------------------------------------------------------------ training

SMALL = TrainConfig(hidden=(16,), epochs=3, batch=50)


def test_training_is_deterministic_with_the_seed(digits):
    a, _ = train(SMALL, digits)
    b, _ = train(SMALL, digits)
    c, _ = train(TrainConfig(hidden=(16,), epochs=3, batch=50, seed=1), digits)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.linears[0].weight, c.linears[0].weight)


def test_training_reports_progress_and_history(digits):
    calls = []
    net, history = train(SMALL, digits, progress=lambda *args: calls.append(args))
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)]
    assert set(calls[0][2]) == {"loss", "train_accuracy", "test_accuracy", "lr"}
    assert len(history.loss) == len(history.test_accuracy) == 3
    assert history.loss[-1] < history.loss[0]
    assert history.test_accuracy[-1] == evaluate(net, digits.x_test, digits.y_test)
    assert not net.training
    assert net.sizes == [64, 16, 10]
    # cosine schedule: the learning rate falls from epoch to epoch
    assert history.lr[0] > history.lr[1] > history.lr[2] > 0


def test_evaluate_counts_right_answers(digits):
    net, _ = train(SMALL, digits)
    classes = predict(net, digits.x_test)
    wrong = (classes + 1) % 10
    assert evaluate(net, digits.x_test, classes) == 1.0
    assert evaluate(net, digits.x_test, wrong) == 0.0


@pytest.mark.parametrize("config, target", [(TrainConfig.tnn(), 0.965), (TrainConfig.bnn(), 0.95)],
                         ids=["tnn", "bnn"])
@pytest.mark.slow
def test_default_training_meets_the_accuracy_target_on_digits(digits, config, target):
    net, history = train(config, digits)
    accuracy = evaluate(net, digits.x_test, digits.y_test)
    assert accuracy >= target, f"{config.weight_kind}: {accuracy:.4f} < {target}"
    assert net.sizes == [64, 128, 128, 10]


# ---------------------------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip(tmp_path, digits):
    net, history = train(SMALL, digits)
    path = save_checkpoint(tmp_path / "run" / "model.pt", net, SMALL, history.optimizer_state,
                           history, digits.info())
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temporary left
    loaded = load_checkpoint(path)
    assert loaded.config == SMALL
    assert loaded.dataset == digits.info()
    assert loaded.history["loss"] == history.loss
    assert not loaded.net.training
    _, want = net.trace(digits.x_test)
    _, got = loaded.net.trace(digits.x_test)
    assert torch.equal(want, got)
    optimizer = torch.optim.Adam(loaded.net.parameters())
    optimizer.load_state_dict(loaded.optimizer_state)  # the optimizer can resume
    assert len(optimizer.state) == len(list(loaded.net.parameters()))


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory, digits):
    net, history = train(TrainConfig(hidden=(8,), epochs=1), digits)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, net, TrainConfig(hidden=(8,), epochs=1), history.optimizer_state,
                    history, digits.info())
    return path.read_bytes()


def test_checkpoint_refuses_missing_file(tmp_path):
    with pytest.raises(NmflowError, match=r"^checkpoint '.*absent.pt' does not exist$"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(NmflowError, match=r"^checkpoint '.*dir.pt' is a directory, not a "
                                          r"checkpoint file$"):
        load_checkpoint(tmp_path / "dir.pt")


@pytest.mark.parametrize("cut", ["half", "garbage", "text", "empty"])
def test_checkpoint_refuses_corrupt_file(tmp_path, checkpoint_bytes, cut):
    path = tmp_path / "model.pt"
    data = {"half": checkpoint_bytes[: len(checkpoint_bytes) // 2], "garbage": b"\x00junk" * 40,
            "text": b"hello\n", "empty": b""}[cut]
    path.write_bytes(data)
    with pytest.raises(NmflowError, match=r"^checkpoint '.*model.pt' is unreadable \(truncated or "
                                          r"not a torch file: [^\n]*\)$"):
        load_checkpoint(path)


def test_checkpoint_refuses_foreign_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, path)
    with pytest.raises(NmflowError, match=r"^checkpoint '.*other.pt' must have format "
                                          r"'nmflow.checkpoint', not None$"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(NmflowError, match=r"must have format 'nmflow.checkpoint', not 'list'$"):
        load_checkpoint(path)


def test_checkpoint_refuses_other_version_and_mismatched_weights(tmp_path, checkpoint_bytes):
    path = tmp_path / "model.pt"
    path.write_bytes(checkpoint_bytes)
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "version": 7}, path)
    with pytest.raises(NmflowError, match=r"^checkpoint version must be 1, not 7 \(in '.*'\)$"):
        load_checkpoint(path)
    torch.save({**payload, "config": {**payload["config"], "epochs": 0}}, path)
    with pytest.raises(NmflowError, match=r"^checkpoint '.*' holds a bad configuration: "
                                          r"epochs must be an integer from 1 to 10000, not 0$"):
        load_checkpoint(path)
    torch.save({**payload, "net": {**payload["net"], "sizes": [64, 9, 10]}}, path)
    with pytest.raises(NmflowError, match=r"^checkpoint '.*' weights do not fit its network "
                                          r"\[64, 9, 10\] \([^\n]*\)$"):
        load_checkpoint(path)


def test_training_flushes_denormals_only_while_it_runs(digits):
    # Flushing denormals is a process-wide mode: training turns it on for its own speed and must
    # give the process back as it found it (Hypothesis's float strategies refuse to run otherwise).
    def denormals_kept():
        return (torch.tensor([1e-40], dtype=torch.float32) * 1.0).item() != 0.0

    assert denormals_kept()
    seen = []
    train(TrainConfig(hidden=(8,), epochs=1), digits,
          progress=lambda *args: seen.append(denormals_kept()))
    assert seen == [False]
    assert denormals_kept()
