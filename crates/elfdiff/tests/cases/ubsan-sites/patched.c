/* f gains a checked index: the descriptors after it are numbered anew, so
 * g now names `.data..Lubsan_data3` where it named `..2`: no change of g.
 * f's own descriptors, anonymous and written by the handler (reported
 * once), travel with it: the patch carries its copies, never the running
 * kernel's. */
//# cflags: -fsanitize=bounds-strict -fsanitize=shift
//# outcome: changed
//# changed: f f.cold
//# relocs: .text.f .data..Lubsan_data1 .data..Lubsan_data2 .text.unlikely.f __fentry__ __ubsan_handle_out_of_bounds table
//# relocs: .text.unlikely.f .data..Lubsan_data0 .text.f __ubsan_handle_shift_out_of_bounds
int table[8];
int f(int i, int s) { if (i < 0) return 0; return (table[i] << s) + table[i ^ 1]; }
int g(int i) { return table[i + 1]; }
