/* noreboot: the fix moves the address length checks into
 * netlbl_unlabel_genl_policy, but the running kernel's generic netlink
 * family still points at its old copy of the table. Point the family at
 * the patch's copy before the new handlers run, and back once they are
 * gone. The family is __ro_after_init, so the pointer is written through
 * text_poke_copy(); genl_lock() keeps every NLBL_UNLBL request (the family
 * has no parallel_ops) from reading it half way. */
#include <asm/text-patching.h>
#include <noreboot/livepatch.h>

static const struct nla_policy *netlbl_unlabel_prev_policy;

static void netlbl_unlabel_set_policy(const struct nla_policy *policy)
{
	genl_lock();
	text_poke_copy((void *)&netlbl_unlabel_gnl_family.policy, &policy,
		       sizeof(policy));
	genl_unlock();
}

static int netlbl_unlabel_policy_pre_patch(struct klp_object *obj)
{
	netlbl_unlabel_prev_policy = netlbl_unlabel_gnl_family.policy;
	netlbl_unlabel_set_policy(netlbl_unlabel_genl_policy);
	return 0;
}

static void netlbl_unlabel_policy_post_unpatch(struct klp_object *obj)
{
	netlbl_unlabel_set_policy(netlbl_unlabel_prev_policy);
}

NOREBOOT_PRE_PATCH_CALLBACK(netlbl_unlabel_policy_pre_patch);
NOREBOOT_POST_UNPATCH_CALLBACK(netlbl_unlabel_policy_post_unpatch);
NOREBOOT_DATA_REDIRECTED(netlbl_unlabel_genl_policy);
