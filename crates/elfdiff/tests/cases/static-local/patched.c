//# outcome: changed
//# changed: first
//# data-new: misses.N
int first(void) { static int misses; static int hits; misses++; return ++hits + misses; }
int second(void) { static int hits; return hits += 2; }
