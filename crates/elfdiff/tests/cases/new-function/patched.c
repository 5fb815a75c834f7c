//# outcome: changed
//# changed: check
//# new: bounded
__attribute__((noinline)) int bounded(int v) { return v > 10 && v < 1000; }
int check(int v) { return bounded(v); }
