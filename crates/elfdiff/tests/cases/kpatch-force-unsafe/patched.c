//# outcome: refused
//# changed: caller fixed
//# refused: fixed: KPATCH_FORCE_UNSAFE
/* What kpatch-macros.h expands KPATCH_FORCE_UNSAFE(fn) to: kpatch may
 * skip its activeness check for the function; kernel livepatch has no such
 * switch, so the patch is refused rather than built with a promise it
 * cannot keep. */
#define KPATCH_FORCE_UNSAFE(fn) \
	void *__kpatch_force_func_##fn __attribute__((section(".kpatch.force"))) = fn;
int counter;
int always_sleeping(int v) { return v + 2; }
int fixed(int v) { return v - 3; }
int caller(int v) { return always_sleeping(v) + fixed(v); }
KPATCH_FORCE_UNSAFE(fixed);
