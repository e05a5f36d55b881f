"""The board descriptions: one :class:`~nmflow.boards.board.Board` per board, one registry."""

import re

import pytest
from amaranth_boards.icebreaker import ICEBreakerPlatform

from nmflow.boards.board import Board
from nmflow.boards.catalog import BOARDS, get_board
from nmflow.boards.icebreaker import ICEBreakerTop
from nmflow.boards.top import BoardTop
from nmflow.errors import NmflowError
from nmflow.toolchain import TOOLS


@pytest.mark.parametrize("name, device, package, clock_hz, suffix", [
    ("icebreaker", "iCE40UP5K", "SG48", 12_000_000, ".bin"),
    ("ulx3s", "LFE5U-85F", "BG381", 25_000_000, ".bit"),
])
def test_each_board_is_described_once(name, device, package, clock_hz, suffix):
    board = BOARDS[name]
    assert board.name == name and get_board(name) is board and get_board(board) is board
    assert (board.device, board.package, board.clock_hz) == (device, package, clock_hz)
    assert board.clock_mhz == clock_hz / 1e6
    assert board.bitstream_suffix == suffix
    assert issubclass(board.top, BoardTop)
    assert set(board.tools) <= set(TOOLS) and "yosys" in board.tools
    assert board.target_mhz > board.clock_mhz


def test_memory_figures():
    ice40, ecp5 = BOARDS["icebreaker"], BOARDS["ulx3s"]
    assert (ice40.block_ram_bits_total, ecp5.block_ram_bits_total) == (30 * 4096, 208 * 18432)
    assert (ice40.block_ram_bits_per_cycle, ecp5.block_ram_bits_per_cycle) == (480, 7488)
    assert [ice40.block_rams_needed(*shape)
            for shape in [(256, 16), (257, 16), (2048, 2), (4096, 1), (176, 32), (64, 4)]] == (
        [1, 2, 1, 2, 2, 1])
    assert [ecp5.block_rams_needed(*shape)
            for shape in [(1024, 18), (1024, 36), (16384, 1), (176, 32)]] == [1, 2, 1, 2]


@pytest.mark.parametrize("depth, width, message", [
    (0, 16, "depth must be a positive integer, not 0"),
    (256, 2.5, "width must be a positive integer, not 2.5"),
    (True, 16, "depth must be a positive integer, not True"),
])
def test_block_rams_needed_refuses_bad_shapes(depth, width, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        BOARDS["icebreaker"].block_rams_needed(depth, width)


def test_block_ram_modes_must_fit_a_block_ram():
    fields = dict(name="toy", title="Toy", family="ice40", platform=ICEBreakerPlatform,
                  top=ICEBreakerTop, logic_cells=1, logic_cell_type="ICESTORM_LC", block_rams=1,
                  block_ram_bits=4096, block_ram_type="ICESTORM_RAM", block_ram_port_bits=16,
                  dsps=0, dsp_type="ICESTORM_DSP", tools=("yosys",), target_mhz=50.0,
                  bitstream_suffix=".bin")
    assert Board(**fields, block_ram_modes=((256, 16),)).block_rams_needed(512, 16) == 2
    with pytest.raises(ValueError, match=r"^block_ram_modes must fit a block RAM of 4096 bits "
                                         r"read 16 bits at a time, not \(512, 16\)$"):
        Board(**fields, block_ram_modes=((512, 16),))


def test_unknown_board_is_refused():
    with pytest.raises(NmflowError, match=r"^board must be one of icebreaker, ulx3s, not 'de10'$"):
        get_board("de10")
