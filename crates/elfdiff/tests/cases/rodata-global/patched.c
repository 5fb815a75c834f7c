//# outcome: refused
//# changed: limit
//# refused: limits: other objects of the kernel (it is global)
const int limits[4] = { 1, 2, 3, 5 };
int limit(int i) { return limits[i & 3]; }
