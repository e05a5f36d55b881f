"""The Yosys/nextpnr log parsers, on excerpts copied line for line from real logs.

The excerpts come from nextpnr 0.11 / Yosys 0.70 (yowasp builds) runs of nmflow's stand-in design
on the iCEBreaker and the ULX3S-85F; ``\\t`` is the tab nextpnr prints in its utilisation table.
"""

import re

import pytest

from nmflow.boards.catalog import BOARDS
from nmflow.boards.report import (fit_error, overflows, parse_errors, parse_fmax,
                                  parse_fmax_by_clock, parse_utilisation, parse_yosys_cells)

ICE40_LOG = """\
Info: constrained 'uart_0__rx__io' to bel 'X13/Y0/io1'
Info: constrained 'uart_0__tx__io' to bel 'X15/Y0/io0'
Info: constrained 'clk12_0__io' to bel 'X12/Y31/io1'
Info: constraining clock net 'clk12_0__io' to 50.00 MHz

Info: Packing constants..
Info: Promoting globals..
Info: Constraining chains...
Info: Checksum: 0x15e574bc

Info: Device utilisation:
Info: \t         ICESTORM_LC:     166/   5280     3%
Info: \t        ICESTORM_RAM:       1/     30     3%
Info: \t               SB_IO:       3/     39     7%
Info: \t               SB_GB:       1/      8    12%
Info: \t        ICESTORM_PLL:       0/      1     0%
Info: \t         SB_WARMBOOT:       0/      1     0%
Info: \t        ICESTORM_DSP:       1/      8    12%
Info: \t      ICESTORM_HFOSC:       0/      1     0%
Info: \t      ICESTORM_LFOSC:       0/      1     0%
Info: \t              SB_I2C:       0/      2     0%
Info: \t              SB_SPI:       0/      2     0%
Info: \t              IO_I3C:       0/      2     0%
Info: \t         SB_LEDDA_IP:       0/      1     0%
Info: \t         SB_RGBA_DRV:       0/      1     0%
Info: \t      ICESTORM_SPRAM:       0/      4     0%

Info: Placed 4 cells based on constraints.
Info:     at iteration #1, type ICESTORM_LC: wirelen solved = 161, spread = 871, legal = 873; time = 0.00s
Info:     at iteration #1, type ICESTORM_DSP: wirelen solved = 793, spread = 793, legal = 1560; time = 0.00s
Info: SA placement time 0.01s

Info: Max frequency for clock 'cd_sync.clk': 68.90 MHz (PASS at 50.00 MHz)

Info: Max delay <async>             -> posedge cd_sync.clk: 6.99 ns
Info: Max delay posedge cd_sync.clk -> <async>            : 14.41 ns

Info: Routing..
Info: Routing complete.
Info: Router1 time 0.05s
Info: Checksum: 0x61bf8776

Info: Critical path report for clock 'cd_sync.clk' (posedge -> posedge):
Info:   clk-to-q  1.39  1.39 Source cd_sync.timer_SB_DFFE_Q_3_D_SB_LUT4_O_LC.O
Info: 3.98 ns logic, 6.55 ns routing

Info: Max frequency for clock 'cd_sync.clk': 59.09 MHz (PASS at 50.00 MHz)

Info: Max delay <async>             -> posedge cd_sync.clk: 7.97 ns
Info: Max delay posedge cd_sync.clk -> <async>            : 14.51 ns

Info: Program finished normally.
"""

ECP5_LOG = """\
Info: constraining clock net 'clk25_0__io' to 130.00 MHz

Info: Logic utilisation before packing:
Info:     Total LUT4s:       101/83640     0%
Info:         logic LUTs:     49/83640     0%
Info:         carry LUTs:     52/83640     0%
Info:           RAM LUTs:      0/10455     0%
Info:          RAMW LUTs:      0/20910     0%

Info:      Total DFFs:       112/83640     0%

Info: Packing IOs..
Info: uart_0__tx__io feeds TRELLIS_IO tx_buffer.buf.buf0, removing $nextpnr_obuf uart_0__tx__io.
Info: pin 'tx_buffer.buf.buf0' constrained to Bel 'X0/Y56/PIOC'.
Info: Checksum: 0xa77c98a2

Info: Device utilisation:
Info: \t          TRELLIS_IO:       3/    365     0%
Info: \t                DCCA:       1/     56     1%
Info: \t              DP16KD:       1/    208     0%
Info: \t          MULT18X18D:       1/    156     0%
Info: \t              ALU54B:       0/     78     0%
Info: \t             EHXPLLL:       0/      4     0%
Info: \t                 GSR:       1/      1   100%
Info: \t          TRELLIS_FF:     112/  83640     0%
Info: \t        TRELLIS_COMB:     115/  83640     0%
Info: \t        TRELLIS_RAMW:       0/  10455     0%

Info: Placed 4 cells based on constraints.
Info: Max frequency for clock '$glbnet$cd_sync.clk': 62.62 MHz (FAIL at 130.01 MHz)

Info: Routing globals...
Info: Routing..
Info: Routing complete.

Info: Critical path report for clock '$glbnet$cd_sync.clk' (posedge -> posedge):
Info:      logic  3.93  12.82 Source core.acc_TRELLIS_FF_Q_31_DI_CCU2C_S1_A1_MULT18X18D_P31.P2
Warning: Max frequency for clock '$glbnet$cd_sync.clk': 61.16 MHz (FAIL at 130.01 MHz)

Info: Max delay <async>                     -> <async>                    : 0.25 ns

Info: Program finished normally.
"""

ICE40_TOO_BIG_LOG = """\
Info: constraining clock net 'clk12_0__io' to 50.00 MHz

Info: Packing RAMs..
Info: Promoting globals..
Info: promoting cd_sync.ready_SB_LUT4_I3_O [reset] (fanout 58)
Info: Checksum: 0x168ed786

Info: Device utilisation:
Info: \t         ICESTORM_LC:     298/   5280     5%
Info: \t        ICESTORM_RAM:      64/     30   213%
Info: \t               SB_IO:       3/     39     7%
Info: \t               SB_GB:       2/      8    25%
Info: \t        ICESTORM_DSP:       0/      8     0%
Info: \t      ICESTORM_SPRAM:       0/      4     0%

Info: Placed 4 cells based on constraints.
ERROR: Unable to place cell 'core.mem.0.49_RAM', no BELs remaining to implement cell type 'ICESTORM_RAM'
0 warnings, 1 error
"""

ICE40_TOO_MANY_CELLS_LOG = """\
Info: Device utilisation:
Info: \t         ICESTORM_LC:    6017/   5280   113%
Info: \t        ICESTORM_RAM:       0/     30     0%
ERROR: Unable to place cell 'core.regs_SB_DFFSR_Q_336_D_SB_LUT4_O_LC', no BELs remaining to implement cell type 'ICESTORM_LC'
0 warnings, 1 error
"""

ECP5_TOO_BIG_LOG = """\
Info: Device utilisation:
Info: \t              DP16KD:     240/    208   115%
Info: \t          MULT18X18D:       0/    156     0%
Info: \t        TRELLIS_COMB:    2008/  83640     2%
ERROR: Unable to place cell 'core.mem.0.92', no BELs remaining to implement cell type 'DP16KD'
0 warnings, 1 error
"""

YOSYS_LOG = """\
2.51. Printing statistics.

=== top ===

        +----------Local Count, excluding submodules.
        | 
      239 wires
       14 cells
        8   $scopeinfo
        1   DP16KD
      200 submodules
       49   LUT4

=== design hierarchy ===

        +----------Count including submodules.
        | 
       14 top

        +----------Count including submodules.
        | 
      239 wires
      374 wire bits
        3 ports
        - memories
       14 cells
        8   $scopeinfo
        1   DP16KD
        1   MULT18X18D
        1   SGSR
        3   TRELLIS_IO
      200 submodules
       26   CCU2C
        3   L6MUX21
       49   LUT4
       10   PFUMX
      112   TRELLIS_FF

2.52. Executing CHECK pass (checking for obvious problems).
Checking module top...
Found and reported 0 problems.
"""


def test_ice40_utilisation_every_line():
    table = parse_utilisation(ICE40_LOG)
    assert table["ICESTORM_LC"] == {"used": 166, "total": 5280, "percent": 3}
    assert table["ICESTORM_RAM"] == {"used": 1, "total": 30, "percent": 3}
    assert table["ICESTORM_DSP"] == {"used": 1, "total": 8, "percent": 12}
    assert table["ICESTORM_SPRAM"] == {"used": 0, "total": 4, "percent": 0}
    assert len(table) == 15
    assert list(table)[0] == "ICESTORM_LC"


def test_ice40_fmax_is_the_post_route_report():
    # 68.90 MHz after placement, 59.09 MHz after routing: the last report wins.
    assert parse_fmax(ICE40_LOG) == 59.09
    assert parse_fmax_by_clock(ICE40_LOG) == {"cd_sync.clk": 59.09}


def test_ecp5_utilisation_skips_the_pre_packing_summary():
    table = parse_utilisation(ECP5_LOG)
    assert table["TRELLIS_COMB"] == {"used": 115, "total": 83640, "percent": 0}
    assert table["TRELLIS_FF"]["used"] == 112
    assert table["DP16KD"] == {"used": 1, "total": 208, "percent": 0}
    assert table["MULT18X18D"] == {"used": 1, "total": 156, "percent": 0}
    assert table["GSR"] == {"used": 1, "total": 1, "percent": 100}
    assert not any(" " in cell for cell in table)       # "Total LUT4s" is not a cell type
    assert len(table) == 10


def test_ecp5_fmax_failing_target_is_a_warning_line():
    # A clock that misses its target is reported post-route with "Warning:", not "Info:".
    assert parse_fmax(ECP5_LOG) == 61.16
    assert parse_fmax_by_clock(ECP5_LOG) == {"$glbnet$cd_sync.clk": 61.16}


def test_fmax_several_clocks_gives_the_slowest():
    text = ("Info: Max frequency for clock 'cd_sync.clk': 80.00 MHz (PASS at 50.00 MHz)\n"
            "Info: Max frequency for clock 'cd_fast.clk': 120.00 MHz (PASS at 50.00 MHz)\n"
            "Info: Max frequency for clock 'cd_sync.clk': 75.50 MHz (PASS at 50.00 MHz)\n"
            "Info: Max frequency for clock 'cd_fast.clk': 110.25 MHz (PASS at 50.00 MHz)\n")
    assert parse_fmax_by_clock(text) == {"cd_sync.clk": 75.5, "cd_fast.clk": 110.25}
    assert parse_fmax(text) == 75.5


def test_no_report():
    assert parse_utilisation("") == {}
    assert parse_fmax("Info: Packing IOs..\n") is None
    assert parse_fmax_by_clock("") == {}
    assert parse_errors(ICE40_LOG) == []


def test_too_big_block_rams():
    table = parse_utilisation(ICE40_TOO_BIG_LOG)
    assert table["ICESTORM_RAM"] == {"used": 64, "total": 30, "percent": 213}
    assert overflows(table) == [("ICESTORM_RAM", 64, 30)]
    assert parse_errors(ICE40_TOO_BIG_LOG) == [
        "Unable to place cell 'core.mem.0.49_RAM', no BELs remaining to implement cell type "
        "'ICESTORM_RAM'"]
    assert parse_fmax(ICE40_TOO_BIG_LOG) is None
    assert fit_error(table, BOARDS["icebreaker"]) == (
        "design does not fit icebreaker (iCE40UP5K): needs 64 block RAMs (ICESTORM_RAM), "
        "the device has 30")


def test_too_many_logic_cells():
    message = fit_error(parse_utilisation(ICE40_TOO_MANY_CELLS_LOG), BOARDS["icebreaker"])
    assert re.match(r"^design does not fit icebreaker \(iCE40UP5K\): needs 6017 logic cells "
                    r"\(ICESTORM_LC\), the device has 5280$", message)


def test_ecp5_too_big():
    message = fit_error(parse_utilisation(ECP5_TOO_BIG_LOG), BOARDS["ulx3s"])
    assert message == ("design does not fit ulx3s (LFE5U-85F): needs 240 block RAMs (DP16KD), "
                       "the device has 208")


def test_several_overflows_stay_on_one_line():
    table = {"ICESTORM_LC": {"used": 6000, "total": 5280, "percent": 113},
             "ICESTORM_RAM": {"used": 31, "total": 30, "percent": 103},
             "SB_WARMBOOT": {"used": 2, "total": 1, "percent": 200}}
    message = fit_error(table, BOARDS["icebreaker"])
    assert "\n" not in message
    assert message == ("design does not fit icebreaker (iCE40UP5K): "
                       "needs 6000 logic cells (ICESTORM_LC), the device has 5280; "
                       "needs 31 block RAMs (ICESTORM_RAM), the device has 30; "
                       "needs 2 cells (SB_WARMBOOT), the device has 1")


def test_fits():
    assert fit_error(parse_utilisation(ICE40_LOG), BOARDS["icebreaker"]) is None
    assert fit_error(parse_utilisation(ECP5_LOG), BOARDS["ulx3s"]) is None


def test_yosys_errors():
    text = ("2. Executing SYNTH_ICE40 pass.\n"
            "ERROR: Command syntax error: Unknown option or option in arguments.\n")
    assert parse_errors(text) == ["Command syntax error: Unknown option or option in arguments."]


def test_yosys_cells_from_the_last_statistics():
    assert parse_yosys_cells(YOSYS_LOG) == {
        "DP16KD": 1, "MULT18X18D": 1, "SGSR": 1, "TRELLIS_IO": 3, "CCU2C": 26, "L6MUX21": 3,
        "LUT4": 49, "PFUMX": 10, "TRELLIS_FF": 112}
    assert parse_yosys_cells("no statistics here\n") == {}


@pytest.mark.parametrize("name", ["icebreaker", "ulx3s"])
def test_board_facts_match_the_device_tables(name):
    # The totals nextpnr prints are the device facts the budget checks use.
    board = BOARDS[name]
    log = ICE40_LOG if name == "icebreaker" else ECP5_LOG
    table = parse_utilisation(log)
    assert table[board.logic_cell_type]["total"] == board.logic_cells
    assert table[board.block_ram_type]["total"] == board.block_rams
    assert table[board.dsp_type]["total"] == board.dsps
