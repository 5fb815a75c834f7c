//# outcome: changed
//# changed: fixed
//# ignored: always_sleeping
/* What NOREBOOT_IGNORE_FUNCTION(always_sleeping) expands to. */
int counter;
int always_sleeping(int v) { return v + 2; }
int fixed(int v) { return v - 2; }
int caller(int v) { return always_sleeping(v) + fixed(v); }
static void *__noreboot_ignore_always_sleeping __attribute__((used, section(".discard.noreboot.ignore"))) = (void *)always_sleeping;
