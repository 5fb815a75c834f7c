//# outcome: changed
//# target: module m
//# changed: f
//# new: h
//# data-new: __UNIQUE_ID_ddebug2.N
//# records: counter
//# special: __jump_table 2/3
#define DDEBUG_FUNCTION __builtin_FUNCTION()
#include "../../common/kernel/dyndbg.h"

/* In a loadable module: f's existing descriptor (and with it the static
 * key its __jump_table entry names) becomes the patch module's own, so
 * no livepatch record names a descriptor; h's new one is new data of the
 * patch, not "new data in the shared section __dyndbg". */
static int counter;
int f(int v) { pr_debug("f %d\n", v); counter += v; return v + 100; }
int g(int v) { pr_debug("g %d\n", v); return v + 2; }
int h(int v) { pr_debug("h %d\n", v); return v + 3; }
