int f(int v) { return v + 1; }
