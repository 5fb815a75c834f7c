/* kpatch's KPATCH_IGNORE_FUNCTION, see patched.c. */
int counter;
int always_sleeping(int v) { return v + 2; }
int fixed(int v) { return v - 2; }
int caller(int v) { return always_sleeping(v) + fixed(v); }
