#include "../../common/kernel/dyndbg.h"

extern void module_printk(int v, const char *fmt, ...);
#define module_debug(v, fmt, ...) _dynamic_func_call_no_desc(fmt, module_printk, v, fmt, ##__VA_ARGS__)
static int counter;
int f(int v) { module_debug(v, "f %d\n", v); counter += v; return v + 1; }
int g(int v) { module_debug(v, "g %d\n", v); return v + 2; }
