#include "../../common/kernel/dyndbg.h"

/* A static key of the module itself (DEFINE_STATIC_KEY_FALSE). */
static struct static_key_false fast_path = { .key = { .enabled = 0 } };
extern int slow(int v);
int f(int v)
{
	if (arch_static_branch(&fast_path.key, 0))
		return v + 1;
	return slow(v);
}
