"""The ULX3S-85F board: its top and its description, on the LFE5U-85F.

The ULX3S (Radiona) carries a Lattice ECP5 LFE5U-85F-6BG381C (83,640 LUT4s, 208 block RAMs of
18 kbit, 156 multipliers of 18x18 bits), a 25 MHz oscillator and an FTDI FT231X as a UART to the
host (pins M1 = FPGA receives, L4 = FPGA transmits).

``uart_tx_enable`` (pin L3) is left alone: the board's reference constraints
(``ulx3s_v20.lpf``) mark it *FPGA receives*, it is the FT231X's TXDEN output and the UART works
without it, so driving it would only risk fighting the FTDI. The UART's ``rts`` and ``dtr``
lines (used by the board's programming logic) are requested with the resource but stay unused.
"""

from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .board import Board
from .top import BoardTop

__all__ = ["ULX3STop", "BOARD"]


class ULX3STop(BoardTop):
    """The ULX3S top: the core's ``rx``/``tx`` on the FT231X UART (pins M1 and L4).

    See :class:`~nmflow.boards.top.BoardTop` for the parameters.
    """


#: The ULX3S-85F, as nmflow builds for it (device LFE5U-85F, package BG381 and the 25 MHz clock
#: come from ``ULX3S_85F_Platform``).
BOARD = Board(
    name="ulx3s",
    title="ULX3S-85F",
    family="ecp5",
    platform=ULX3S_85F_Platform,
    top=ULX3STop,
    logic_cells=83640,
    logic_cell_type="TRELLIS_COMB",
    block_rams=208,
    block_ram_bits=18432,
    block_ram_type="DP16KD",
    # DP16KD with one read and one write port (the 36-bit mode needs both ports to read); an
    # estimate of what Yosys maps, not checked against nextpnr.
    block_ram_modes=((1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)),
    # Both ports of a DP16KD read together deliver 36 bits per cycle.
    block_ram_port_bits=36,
    dsps=156,
    dsp_type="MULT18X18D",
    sprams=0,
    # Amaranth's ULX3S platform also lists openFPGALoader, which a build never runs (nmflow
    # program does).
    tools=("yosys", "nextpnr-ecp5", "ecppack"),
    target_mhz=130.0,
    bitstream_suffix=".bit",
    # synth_ecp5 infers MULT18X18D by default; nothing to add.
    synth_opts=(),
    # nextpnr's default router (router1). On the 512 x 8 engine (17,973 LUTs) router2 diverged
    # (overused wires 6,700 -> 9,100 over iterations 10-22, 40 minutes), router1 placed and
    # routed it in 34 minutes (routing 27) beside the test suite; busier, it did not in an hour.
    nextpnr_opts=(),
    # FT231X: one interface, the UART; openFPGALoader drives its JTAG by bit-banging.
    uart_usb=(0x0403, 0x6015, 0),
    loader_board="ulx3s",
    # First PLL run clocks of a build, from the post-route Fmax: the engine 121-131 MHz, with
    # the injector 122-123, with the metaplastic unit 82.81 (pipelined to latency 7, the demo's
    # TNN; 78.125 keeps the 1.05 margin), the EqProp unit's host top 100.15 (pipelined; 61.74
    # before; 93.75 keeps the 1.05 margin with a little to spare).
    run_clocks_mhz={"engine": 112.5, "injector": 110.0, "metaplastic": 78.125, "eqprop": 93.75},
    loads_sram=True,
    # 512 lanes, 8 neurons a cycle: 17,371 LUTs, 55 block RAMs, Fmax 102.7 MHz (256 x 8: 7823
    # LUTs, 103.4 MHz).
    engine_folding=(512, 8, None),
    folding_clocks_mhz={(512, 8, None): 87.5, (256, 8, None): 93.75},
)
