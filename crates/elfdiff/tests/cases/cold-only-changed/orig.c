extern void report(const char *, int) __attribute__((cold));
int check(int v) { if (v < 0) { report("neg", v); report("again", v * 2); return -1; } return v + 1; }
int plain(int v) { return v; }
