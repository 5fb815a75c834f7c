//# outcome: changed
//# target: module m
//# new: h
//# data-new: __UNIQUE_ID_ddebugN.N __func__.N
//# special: __jump_table 1/5
#include "../../common/kernel/dyndbg.h"

/* A new function first in the file renumbers every descriptor; f and g,
 * two call sites each, keep theirs (matched in the order they use them)
 * and are unchanged. */
int h(int v) { pr_debug("h %d\n", v); return v + 3; }
int f(int v) { pr_debug("f1 %d\n", v); pr_debug("f2 %d\n", v); return v + 1; }
int g(int v) { pr_debug("g1 %d\n", v); pr_debug("g2 %d\n", v); return v + 2; }
