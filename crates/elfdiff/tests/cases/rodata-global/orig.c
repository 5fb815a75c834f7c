const int limits[4] = { 1, 2, 3, 4 };
int limit(int i) { return limits[i & 3]; }
