#include "../../common/kernel/once.h"

int a(int v) { if (v) pr_info_once("a %d\n", v); return v + 1; }
int b(int v) { WARN_ONCE(v > 1, "b %d\n", v); return v + 2; }
int c(int v) { if (OLD_WARN_ONCE(v > 2, "c\n")) OLD_PRINTK_ONCE("c again\n"); return v + 3; }
int e(int v) { if (OLD_WARN_ONCE(v > 4, "e\n")) OLD_PRINTK_ONCE("e again\n"); return v + 5; }
