extern void __might_sleep(const char *file, int line);
int sleeper(int v) { __might_sleep("x.c", __LINE__); return v + 1; }
int fixed(int v) { return v - 1; }
