//# outcome: changed
//# changed: b
//# new: z
//# data-new: __already_done.N
#include "../../common/kernel/once.h"

/* Every flag is renumbered by z's. a keeps its two flags, matched by the
 * order a uses them, and is unchanged; b gains a third, so which of its
 * three were the two old ones is not known: all three are new, and each of
 * b's messages may print once more after the patch. */
int a(int v) { WARN_ONCE(v > 1, "a1 %d\n", v); WARN_ONCE(v > 2, "a2 %d\n", v); return v + 1; }
int b(int v) { WARN_ONCE(v > 3, "b1 %d\n", v); WARN_ONCE(v > 5, "b3 %d\n", v); WARN_ONCE(v > 4, "b2 %d\n", v); return v + 2; }
int z(int v) { WARN_ONCE(v > 9, "z %d\n", v); return v; }
