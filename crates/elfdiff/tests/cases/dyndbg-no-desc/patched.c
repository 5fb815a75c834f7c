//# outcome: changed
//# target: module m
//# changed: f
//# records: counter
//# special: __jump_table 1/2
#include "../../common/kernel/dyndbg.h"

/* As dyndbg-module-key, through a macro that hands the descriptor to no
 * call (btrfs_debug in fs/btrfs/block-group.c): the changed function
 * reaches its descriptor only through its __jump_table entry's key, and
 * the descriptor is still the patch module's own, not a static key of the
 * target module that the kernel cannot resolve when it registers the
 * patch's jump labels. */
extern void module_printk(int v, const char *fmt, ...);
#define module_debug(v, fmt, ...) _dynamic_func_call_no_desc(fmt, module_printk, v, fmt, ##__VA_ARGS__)
static int counter;
int f(int v) { module_debug(v, "f %d\n", v); counter += v; return v + 100; }
int g(int v) { module_debug(v, "g %d\n", v); return v + 2; }
