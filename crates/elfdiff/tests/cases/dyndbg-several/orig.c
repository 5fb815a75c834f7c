#include "../../common/kernel/dyndbg.h"

int f(int v) { pr_debug("f1 %d\n", v); pr_debug("f2 %d\n", v); return v + 1; }
int g(int v) { pr_debug("g1 %d\n", v); pr_debug("g2 %d\n", v); return v + 2; }
