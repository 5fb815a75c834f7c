//# outcome: changed
//# changed: limit_check
int limit_check(int v) { if (v >= 100) return -1; return v * 2; }
int other(int v) { return v + 7; }
