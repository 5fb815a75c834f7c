//# outcome: changed
//# changed: a
//# new: z
//# data-new: __already_done.N
//# records: __already_done.1
#include "../../common/kernel/once.h"

int a(int v) { if (v) pr_info_once("a %d\n", v); return v + 10; }
int b(int v) { WARN_ONCE(v > 1, "b %d\n", v); return v + 2; }
/* New with the fix: gcc numbers and places its flag first, so every
 * existing flag is renumbered and moves in .data..once, yet each stays the
 * running kernel's (a's is a livepatch reference to the original's
 * __already_done.1, b is unchanged). */
int z(int v) { WARN_ONCE(v > 9, "z %d\n", v); return v; }
