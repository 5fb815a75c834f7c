//# outcome: changed
//# changed: count
//# data-new: total
static int total;
int count(int v) { total += v; return v + 1; }
