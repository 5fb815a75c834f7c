#include "../../common/kernel/once.h"

int a(int v) { if (v) pr_info_once("a %d\n", v); return v + 1; }
int b(int v) { WARN_ONCE(v > 1, "b %d\n", v); return v + 2; }
