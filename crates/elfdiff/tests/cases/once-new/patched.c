//# outcome: changed
//# new: d
//# data-new: __already_done.N __warned.N __print_once.N
#include "../../common/kernel/once.h"

int a(int v) { if (v) pr_info_once("a %d\n", v); return v + 1; }
int b(int v) { WARN_ONCE(v > 1, "b %d\n", v); return v + 2; }
int c(int v) { if (OLD_WARN_ONCE(v > 2, "c\n")) OLD_PRINTK_ONCE("c again\n"); return v + 3; }
/* New with the fix: its flags are the patch's own; the others' are renumbered. */
int d(int v) { if (OLD_WARN_ONCE(v > 3, "d\n")) OLD_PRINTK_ONCE("d again\n"); return WARN_ONCE(v > 3, "d %d\n", v) + 4; }
int e(int v) { if (OLD_WARN_ONCE(v > 4, "e\n")) OLD_PRINTK_ONCE("e again\n"); return v + 5; }
