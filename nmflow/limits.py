"""The bounds of every count, size and seed a user can pass, and the memory a run may plan.

One place, so that the command line (its ``--help`` states each bound), the flow and the golden
models refuse the same values with the same line. Each bound is derived from what this kind of
machine (2 cores, 24 GiB) and the boards can do, with room to spare for a bigger machine:

* seeds are 31-bit: nextpnr's placement seed is a signed 32-bit integer, and NumPy's and torch's
  generators take any such seed;
* counts of passes (epochs, passes of a sweep, settling steps) stop where one run would take
  days here: the digits TNN trains 50 epochs in about 20 s, so 10,000 epochs is more than a day
  on MNIST;
* sizes (hidden widths, batches, samples) stop where the arrays of one run would not fit in
  memory; beyond that, :func:`check_memory` refuses a run whose planned memory exceeds half of
  this machine's, with the estimate in its one line.
"""

import os
from numbers import Integral

from .errors import NmflowError

__all__ = ["SEED", "EPOCHS", "BATCH", "WIDTH", "LAYERS", "VECTORS", "LANES", "PE", "BAUD", "CLOCK_MHZ", "TIMEOUT",
           "BENCH_IMAGES", "SIM_JOBS", "PCSA_SAMPLES", "PCSA_WINDOW_NS", "PASSES", "PER_DECADE",
           "RATE_BITS", "SETTLING_STEPS", "SEEDS", "LEARNING_RATE", "check_widths", "usable_cores", "memory_total",
           "memory_budget", "check_memory", "size_text"]

#: Largest seed (random generators, training, nextpnr placement, error draws): 31 bits.
SEED = 2**31 - 1
#: Most epochs (passes over the training images) of one training run.
EPOCHS = 10_000
#: Largest batch (images per optimiser step).
BATCH = 65_536
#: Most neurons in one hidden layer.
WIDTH = 65_536
#: Most hidden layers.
LAYERS = 16
#: Most test vectors one step takes (``--limit``); MNIST's test set has 10,000.
VECTORS = 10_000_000
#: Most GXNOR lanes of the engine (the component's own rule also asks for a power of two).
LANES = 1024
#: Most neurons the engine computes side by side (``--pe``; also a power of two, pe * pe <= lanes).
PE = 16
#: Fastest UART baud rate a host asks for (the iCEBreaker's and ULX3S's FTDI bridges: 12 Mbaud).
BAUD = 12_000_000
#: Fastest run clock a build asks a PLL for, in MHz (the iCE40 PLL's output reaches 275 MHz, the
#: ECP5's 400 MHz).
CLOCK_MHZ = 400.0
#: Longest wait for one reply, in seconds.
TIMEOUT = 3600.0
#: Most test images ``nmflow bench`` simulates under cocotb for its speed figures.
BENCH_IMAGES = 10_000
#: Most simulator processes one ``nmflow sim`` runs side by side (``--jobs``): each is a simulator
#: with its Python testbench (Icarus on the digits engine: 134 MB at most), so 64 of them fit
#: this machine's memory (and a 64-core one's cores), while more would only queue for cores.
SIM_JOBS = 64
#: Samples of the PCSA Monte Carlo per condition and corner: from 2 (a standard error needs two)
#: to 20 million (about 4 GB and a few minutes here).
PCSA_SAMPLES = (2, 20_000_000)
#: Longest PCSA sense window, in nanoseconds: the thesis reads in 50 ns, and beyond 10 us every
#: pair the device model knows has long converged.
PCSA_WINDOW_NS = 10_000.0
#: Most passes of a read-error sweep over the test images per point.
PASSES = 1_000
#: Most points per decade of a sweep's log grid.
PER_DECADE = 100
#: Most fraction bits of the read-error injector's rates.
RATE_BITS = 32
#: Most settling steps (free phase T, nudged phase K, the gradient check's T = K).
SETTLING_STEPS = 10_000
#: Most seeds one EqProp run repeats each method with.
SEEDS = 100
#: Largest learning rate (Adam's, or plain SGD's): above it every run diverges.
LEARNING_RATE = 10.0


def check_widths(name, hidden, example="128,128"):
    """``hidden`` as a tuple of layer widths, 1 to :data:`LAYERS` integers from 1 to
    :data:`WIDTH`; else one line naming ``name``."""
    ok = isinstance(hidden, (tuple, list)) and 1 <= len(hidden) <= LAYERS and all(
        isinstance(n, Integral) and not isinstance(n, bool) and 1 <= n <= WIDTH for n in hidden)
    if not ok:
        raise NmflowError(f"{name} must be 1 to {LAYERS} layer widths from 1 to {WIDTH} such as "
                          f"{example}, not {hidden!r}")
    return tuple(int(n) for n in hidden)


def usable_cores():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                      # not Linux
        return os.cpu_count() or 1


def memory_total():
    """This machine's physical memory in bytes."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 8 * 2**30


def memory_budget():
    """The memory one run may plan for: half of the machine's (the rest is for the OS, the
    simulators and a second run)."""
    return memory_total() // 2


def size_text(n):
    """``n`` bytes as a short text: ``3.7 TB``, ``512 MB``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def check_memory(what, need):
    """Refuse a run that would need ``need`` bytes, more than :func:`memory_budget`, with one
    line naming ``what`` asked for it and the estimate."""
    budget = memory_budget()
    if need > budget:
        raise NmflowError(f"{what} would need about {size_text(need)} of memory, more than the "
                          f"{size_text(budget)} a run may take on this machine (half of its "
                          f"{size_text(memory_total())})")
    return need
