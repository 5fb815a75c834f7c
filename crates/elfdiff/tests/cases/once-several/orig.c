#include "../../common/kernel/once.h"

int a(int v) { WARN_ONCE(v > 1, "a1 %d\n", v); WARN_ONCE(v > 2, "a2 %d\n", v); return v + 1; }
int b(int v) { WARN_ONCE(v > 3, "b1 %d\n", v); WARN_ONCE(v > 4, "b2 %d\n", v); return v + 2; }
