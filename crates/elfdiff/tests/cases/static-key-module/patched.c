//# outcome: changed
//# target: module m
//# changed: f
//# emit-error: fast_path: a carried function branches on this static key of a loadable module
#include "../../common/kernel/dyndbg.h"

/* The changed function branches on a static key of the module it
 * patches: the patch's jump label would be registered before the key can
 * be resolved, and left out it would freeze the branch, so the patch is
 * refused with the key named (arch/x86/kvm/hyperv.c, kvm_has_noapic_vcpu). */
static struct static_key_false fast_path = { .key = { .enabled = 0 } };
extern int slow(int v);
int f(int v)
{
	if (arch_static_branch(&fast_path.key, 0))
		return v + 2;
	return slow(v);
}
