// The byte-stream link core of a board top, compiled by Verilator, between stdin and stdout.
//
// nmflow/sim/verilated_board.py builds this file with the Verilog of a link core whose ports
// are Amaranth stream signatures of bytes (rx: in, tx: out) and the status outputs idle and
// receiving (EqPropLinkCore, the engine's link core), as the module "Vtop". Bytes read from
// stdin are offered on rx one at a time (valid held until the core takes it, as
// amaranth.lib.stream asks); every byte the core offers on tx is taken at once and written to
// stdout. Simulated time follows the core: while it is idle with nothing to send, the harness
// blocks on stdin and no cycle passes; while a frame is half received and no byte is waiting,
// it runs `wait_cycles` cycles every `wait_ms` milliseconds (so a host's write that the
// operating system split does not trip the core's inter-byte timeout, yet a truncated frame
// times out); otherwise it runs as fast as it can, looking at stdin every 4096 cycles.
//
// Usage: link_harness WAIT_CYCLES WAIT_MS. It prints "ready" and the cycles of reset on stderr,
// and at the end (EOF on stdin) the cycles simulated.

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <poll.h>
#include <string>
#include <unistd.h>

#include "Vtop.h"
#include "verilated.h"

// Verilator writes the "__" of Amaranth's port names (rx__valid) as "___05F".
#define RX_VALID rx___05Fvalid
#define RX_READY rx___05Fready
#define RX_PAYLOAD rx___05Fpayload
#define TX_VALID tx___05Fvalid
#define TX_READY tx___05Fready
#define TX_PAYLOAD tx___05Fpayload

static bool read_input(std::deque<uint8_t> &in, int timeout_ms, bool &eof) {
    struct pollfd fd = {0, POLLIN, 0};
    int ready = poll(&fd, 1, timeout_ms);
    if (ready < 0) {
        if (errno == EINTR) return false;
        perror("link_harness: poll");
        exit(2);
    }
    if (ready == 0) return false;
    uint8_t buffer[4096];
    ssize_t n = read(0, buffer, sizeof buffer);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) return false;
        perror("link_harness: read");
        exit(2);
    }
    if (n == 0) {
        eof = true;
        return false;
    }
    in.insert(in.end(), buffer, buffer + n);
    return true;
}

static void write_output(std::string &out) {
    size_t done = 0;
    while (done < out.size()) {
        ssize_t n = write(1, out.data() + done, out.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("link_harness: write");
            exit(2);
        }
        done += (size_t)n;
    }
    out.clear();
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: link_harness WAIT_CYCLES WAIT_MS\n");
        return 2;
    }
    const long wait_cycles = atol(argv[1]);
    const int wait_ms = atoi(argv[2]);
    VerilatedContext context;
    Vtop top{&context};
    uint64_t cycles = 0;
    std::deque<uint8_t> in;
    std::string out;
    // One cycle, two evaluations: with the clock low, the inputs (the next byte offered, tx
    // always ready) and what the core does with them; then the rising edge.
    auto cycle = [&]() {
        top.clk = 0;
        top.RX_VALID = !in.empty();
        top.RX_PAYLOAD = in.empty() ? 0 : in.front();
        top.TX_READY = 1;
        top.eval();
        const bool took = top.RX_VALID && top.RX_READY;
        if (top.TX_VALID) out.push_back((char)top.TX_PAYLOAD);
        top.clk = 1;
        top.eval();
        ++cycles;
        if (took) in.pop_front();
    };
    top.clk = 0;
    top.rst = 1;
    top.RX_VALID = 0;
    top.TX_READY = 0;
    top.eval();
    for (int i = 0; i < 4; ++i) {
        top.clk = 1;
        top.eval();
        top.clk = 0;
        top.eval();
    }
    top.rst = 0;
    top.eval();
    fprintf(stderr, "ready\n");
    fflush(stderr);

    bool eof = false;
    uint64_t since_look = 0;
    for (;;) {
        if (in.empty() && top.idle && !top.TX_VALID) {
            write_output(out);
            if (eof) break;
            read_input(in, -1, eof);              // nothing to do: time stands still
            since_look = 0;
            continue;
        }
        if (in.empty() && top.receiving) {
            write_output(out);
            if (eof || !read_input(in, wait_ms, eof)) {
                for (long i = 0; i < wait_cycles; ++i) cycle();  // half a frame: wait slowly
                continue;
            }
            since_look = 0;
        } else if (++since_look >= 4096) {
            since_look = 0;
            if (!eof) read_input(in, 0, eof);
        }
        cycle();
        if (out.size() >= 4096 || (!out.empty() && top.idle)) write_output(out);
    }
    fprintf(stderr, "cycles %llu\n", (unsigned long long)cycles);
    return 0;
}
