"""The iCEBreaker board: its top and its description, on the iCE40UP5K.

The iCEBreaker (1BitSquared) carries a Lattice iCE40UP5K-SG48 (5,280 logic cells, 30 block RAMs of
4 kbit, 4 SPRAMs of 256 kbit, 8 DSPs), a 12 MHz oscillator and an FTDI FT2232H whose second channel
is a UART to the host (pins 6 = FPGA receives, 9 = FPGA transmits).
"""

from amaranth_boards.icebreaker import ICEBreakerPlatform

from .board import Board
from .top import BoardTop

__all__ = ["ICEBreakerTop", "BOARD"]


class ICEBreakerTop(BoardTop):
    """The iCEBreaker top: the core's ``rx``/``tx`` on the FTDI UART (pins 6 and 9).

    The iCEBreaker's ``uart`` resource has the attributes ``IO_STANDARD=SB_LVTTL, PULLUP=1``, so an
    unconnected receive line idles high. See :class:`~nmflow.boards.top.BoardTop` for the
    parameters.
    """


#: The iCEBreaker, as nmflow builds for it (device iCE40UP5K, package SG48 and the 12 MHz clock
#: come from ``ICEBreakerPlatform``).
BOARD = Board(
    name="icebreaker",
    title="iCEBreaker",
    family="ice40",
    platform=ICEBreakerPlatform,
    top=ICEBreakerTop,
    logic_cells=5280,
    logic_cell_type="ICESTORM_LC",
    block_rams=30,
    block_ram_bits=4096,
    block_ram_type="ICESTORM_RAM",
    # SB_RAM40_4K: 256 x 16, 512 x 8, 1024 x 4, 2048 x 2; the count matches what nextpnr places.
    block_ram_modes=((256, 16), (512, 8), (1024, 4), (2048, 2)),
    block_ram_port_bits=16,
    dsps=8,
    dsp_type="ICESTORM_DSP",
    sprams=4,
    tools=("yosys", "nextpnr-ice40", "icepack"),
    target_mhz=50.0,
    bitstream_suffix=".bin",
    # `-dsp` maps wide multiplications onto SB_MAC16 (the UltraPlus DSPs); Amaranth's synth_ice40
    # call does not pass it. `-device u` makes ABC optimise for UltraPlus timing.
    synth_opts=("-dsp", "-device", "u"),
    # FT2232H: interface A drives the flash (SPI), interface B is the UART (/dev/ttyUSB1).
    uart_usb=(0x0403, 0x6010, 1),
    loader_board="ice40_generic",
    # First PLL run clocks of a build, from the post-route Fmax: the engine (16 to 64 lanes, 1 or
    # 2 neurons a cycle) 40.1-40.98 MHz at a 42 MHz target, 41.15-44.69 at 37.5-39.75 MHz;
    # with the injector 39.31-41.42; with the metaplastic unit 36.07-38.04 (the unit pipelined
    # to latency 7, the demo's TNN: 38.04 and 37.41 at the board clock, seeds default and 2;
    # 36.07 at a 35.25 MHz PLL clock, 37.28 at 33.75; 33.75 keeps the 1.05 margin under all);
    # the EqProp unit's host top, pipelined, 34.95-38.34 over four
    # builds of real and binary (m 10, decay 2^-10) weights (20.8 and 19.2 before; 33.0 keeps
    # the 1.05 margin under the lowest). A first clock the design misses costs a second place
    # and route.
    run_clocks_mhz={"engine": 39.0, "injector": 37.5, "metaplastic": 33.75, "eqprop": 33.0},
    loads_sram=False,
    # 64 lanes, 4 neurons a cycle, pixels in parallel: 3955-3983 of 5280 cells, Fmax 38.9-40.8
    # MHz over seven builds (the critical paths: the argmax tree's compare, the link's reply
    # mux into the UART, each about 24.5 ns, two thirds of it routing); 36.75 MHz keeps the
    # 1.05 margin under the lowest. 128 lanes do not fit: 6387 cells in parallel, 5339 with a
    # bit-serial first layer (not placed).
    engine_folding=(64, 4, None),
    folding_clocks_mhz={(64, 4, None): 36.75},
)
