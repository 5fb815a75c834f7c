/* UBSAN (Debian's 7.x kernels: CONFIG_UBSAN_BOUNDS_STRICT, _SHIFT): every
 * checked array index and shift has a descriptor (source place, types) in
 * a section of its own, `.data..Lubsan_dataN`, numbered in the object and
 * named by no symbol. */
int table[8];
int f(int i, int s) { return table[i] << s; }
int g(int i) { return table[i + 1]; }
