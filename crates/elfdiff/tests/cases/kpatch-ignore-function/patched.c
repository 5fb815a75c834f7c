//# outcome: changed
//# changed: fixed
//# ignored: always_sleeping
/* What kpatch-macros.h expands KPATCH_IGNORE_FUNCTION(fn) to: a global
 * pointer to the function in .kpatch.ignore.functions, allocated and
 * writable (not a .discard section). */
#define KPATCH_IGNORE_FUNCTION(fn) \
	void *__kpatch_ignore_func_##fn __attribute__((section(".kpatch.ignore.functions"))) = fn;
int counter;
int always_sleeping(int v) { return v + 3; }
int fixed(int v) { return v - 3; }
int caller(int v) { return always_sleeping(v) + fixed(v); }
KPATCH_IGNORE_FUNCTION(always_sleeping);
