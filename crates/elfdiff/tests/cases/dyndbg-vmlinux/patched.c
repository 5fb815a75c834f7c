//# outcome: changed
//# changed: f
//# new: h
//# data-new: __UNIQUE_ID_ddebug2.N
//# records: counter __UNIQUE_ID_ddebug0.N
//# special: __jump_table 2/3
#define DDEBUG_FUNCTION __builtin_FUNCTION()
#include "../../common/kernel/dyndbg.h"

/* In vmlinux: f's existing descriptor stays the kernel's (a livepatch
 * record, applied as the patch module loads, before its jump labels are
 * registered), so the call site keeps its one switch; h's new descriptor
 * is the patch's own. */
static int counter;
int f(int v) { pr_debug("f %d\n", v); counter += v; return v + 100; }
int g(int v) { pr_debug("g %d\n", v); return v + 2; }
int h(int v) { pr_debug("h %d\n", v); return v + 3; }
