//# outcome: changed
//# target: module m
//# changed: f
//# records: counter
//# special: __jump_table 1/2
#include "../../common/kernel/dyndbg.h"

/* A changed function of a loadable module with a pr_debug, the descriptor
 * pointing at __func__ as the kernel's does: the descriptor, its static
 * key and the __func__ it names become the patch module's own (the kernel
 * reads them when it registers the patch module's call sites, before
 * relocations into the target module exist); only counter remains a
 * livepatch reference. */
static int counter;
int f(int v) { pr_debug("f %d\n", v); counter += v; return v + 100; }
int g(int v) { pr_debug("g %d\n", v); return v + 2; }
