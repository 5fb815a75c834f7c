#define DDEBUG_FUNCTION __builtin_FUNCTION()
#include "../../common/kernel/dyndbg.h"

static int counter;
int f(int v) { pr_debug("f %d\n", v); counter += v; return v + 1; }
int g(int v) { pr_debug("g %d\n", v); return v + 2; }
