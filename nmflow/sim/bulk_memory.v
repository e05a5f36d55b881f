// A memory of the bulk testbench (nmflow/sim/bulk.py) that the simulator fills from a file and
// writes back to one, so that the testbench's Python hands over its vectors and reads every
// captured beat at once instead of a value per clock.
//
// One synchronous read port (rdata is mem[raddr] of the last rising edge; READ = 0 leaves it
// out: a capture memory is read back through its file) and one write port.
// A rising edge of `load` reads words 0 to count - 1 from FILE ($readmemh); a rising edge of
// `dump` writes them to FILE ($writememh). FILE is relative to the simulator's folder.
module nmflow_bulk_memory #(
    parameter WIDTH = 8,
    parameter ABITS = 8,
    parameter FILE = "memory.hex",
    parameter READ = 1
) (
    input clk,
    input load,
    input dump,
    input [31:0] count,
    input [ABITS-1:0] raddr,
    output reg [WIDTH-1:0] rdata,
    input we,
    input [ABITS-1:0] waddr,
    input [WIDTH-1:0] wdata
);
    reg [WIDTH-1:0] mem [0:(1 << ABITS) - 1];

    always @(posedge clk)
        if (we)
            mem[waddr] <= wdata;

    generate
        if (READ) begin : read_port
            always @(posedge clk)
                rdata <= mem[raddr];
        end
    endgenerate

    always @(posedge load)
        if (count != 0)
            $readmemh(FILE, mem, 0, count - 1);

    always @(posedge dump)
        if (count != 0)
            $writememh(FILE, mem, 0, count - 1);
endmodule
