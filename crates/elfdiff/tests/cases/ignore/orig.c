int counter;
int always_sleeping(int v) { return v + 1; }
int fixed(int v) { return v - 1; }
int caller(int v) { return always_sleeping(v) + fixed(v); }
