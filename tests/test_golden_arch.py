"""Layer strings (``--arch``): parsing, one-line refusals, and the geometry they give an image."""

import pytest

from nmflow.errors import NmflowError
from nmflow.golden.arch import Conv, Dense, Pool, arch_text, geometry, parse_arch


def test_a_cnv_like_string_parses_and_prints_back():
    text = "c64k3-c64k3-p2-c128k3p1-p2-f256-f10"
    layers = parse_arch(text)
    assert layers == (Conv(64, 3), Conv(64, 3), Pool(2), Conv(128, 3, 1), Pool(2), Dense(256),
                      Dense(10))
    assert arch_text(layers) == text
    assert parse_arch("f10") == (Dense(10),)


@pytest.mark.parametrize("text, message", [
    ("", "arch must be a layer string such as 'c16k3-p2-f64-f10', not ''"),
    ("c16k3-x2-f10", "arch layer 'x2' must be c<channels>k<kernel>[p<padding>], p<pool> or "
                     "f<units> (for example c16k3, c16k3p1, p2, f64)"),
    ("c16-f10", "arch layer 'c16' must be c<channels>k<kernel>[p<padding>], p<pool> or f<units> "
                "(for example c16k3, c16k3p1, p2, f64)"),
    ("c0k3-f10", "arch layer 'c0k3': the channels must be from 1 to 1024, not 0"),
    ("c8k12-f10", "arch layer 'c8k12': the kernel must be from 1 to 11, not 12"),
    ("c8k3p3-f10", "arch layer 'c8k3p3': the padding must be from 0 to 2, not 3"),
    ("c8k3-p1-f10", "arch layer 'p1': the pooling window must be from 2 to 8, not 1"),
    ("p2-f10", "arch layer 'p2': a pooling must follow a convolution or a pooling"),
    ("c8k3-f16-p2-f10", "arch layer 'p2': a pooling must follow a convolution or a pooling"),
    ("f16-c8k3-f10", "arch layer 'c8k3': convolutions and poolings come before the fully "
                     "connected layers"),
    ("c8k3-p2", "arch must end with a fully connected layer of one neuron per class "
                "(f<classes>), not 'p2'"),
    ("f0", "arch layer 'f0': the units must be from 1 to 65536, not 0"),
    ("-".join(["f4"] * 33), "arch must have at most 32 layers, not 33"),
])
def test_bad_strings_are_one_line(text, message):
    with pytest.raises(NmflowError) as error:
        parse_arch(text)
    assert str(error.value) == message


def test_geometry_of_a_small_network_on_digits():
    # 8x8x1 -> conv 3x3 (no padding) 6x6x8 -> pool 2: 3x3x8 -> conv 3x3 pad 1: 3x3x16 -> dense
    g = geometry(parse_arch("c8k3-p2-c16k3p1-f32-f10"), (1, 8, 8))
    assert [x.kind for x in g] == ["conv", "conv", "dense", "dense"]
    assert (g[0].in_shape, g[0].n_in, g[0].n_out, g[0].conv_shape, g[0].pool, g[0].out_shape) == \
        ((1, 8, 8), 9, 8, (8, 6, 6), 2, (8, 3, 3))
    assert (g[1].in_shape, g[1].n_in, g[1].padding, g[1].out_shape) == \
        ((8, 3, 3), 72, 1, (16, 3, 3))
    assert (g[2].in_shape, g[2].n_in, g[2].n_out) == ((144, 1, 1), 144, 32)
    assert (g[3].n_in, g[3].n_out, g[3].n_outputs) == (32, 10, 10)


def test_pooling_floors_odd_sides_and_two_poolings_multiply():
    g = geometry(parse_arch("c4k2-p2-p2-f10"), (3, 11, 11))      # 10x10 -> 5x5 -> 2x2
    assert (g[0].conv_shape, g[0].pool, g[0].out_shape) == ((4, 10, 10), 4, (4, 2, 2))


@pytest.mark.parametrize("text, shape, message", [
    ("c4k5-f10", (1, 4, 4), "arch layer 'c4k5': a 5 x 5 kernel with padding 0 must fit the "
                            "4 x 4 map it reads"),
    ("c4k3-p4-f10", (1, 5, 5), "arch layer 'p4': a 4 x 4 pooling must fit the 3 x 3 map it "
                               "reads"),
])
def test_maps_that_vanish_are_refused(text, shape, message):
    with pytest.raises(NmflowError) as error:
        geometry(parse_arch(text), shape)
    assert str(error.value) == message
