/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * noreboot patch-author macros: what an automatic diff cannot express.
 * A fix includes this header in the C file it changes:
 *
 *     #include <noreboot/livepatch.h>
 *
 * (noreboot-build puts it on the include path of both compiles; the
 * macros only emit records in .discard sections, which the running kernel
 * never sees and the factory reads.)
 *
 * Callbacks run when the patch is applied to or removed from a target
 * (vmlinux, or a module when it is loaded), with the kernel's
 * struct klp_object. A pre_patch callback returning non-zero stops the
 * patch from being applied to that target.
 *
 *     static int my_pre(struct klp_object *obj) { ...; return 0; }
 *     NOREBOOT_PRE_PATCH_CALLBACK(my_pre);
 *
 * A function the fix changes but the live patch must leave alone (the
 * change only matters at boot, or the function never returns, like a
 * kernel thread's main loop, so no transition could ever finish) is
 * declared intentionally unchanged; the factory then keeps the kernel's
 * own copy, and callers refer to it:
 *
 *     NOREBOOT_IGNORE_FUNCTION(kthreadd);
 *
 * A fix that changes a read-only table (a netlink policy, an ops table)
 * which the running kernel also reaches from elsewhere (a registered
 * structure points at it) is refused: code the patch does not replace
 * would keep using the old table. When the author's callbacks point
 * those references at the patch's copy (pre_patch) and back
 * (post_unpatch), the table is declared redirected, and the patch
 * carries its own copy:
 *
 *     NOREBOOT_DATA_REDIRECTED(netlbl_unlabel_genl_policy);
 *
 * Shadow variables (data a fix adds to existing structures whose layout
 * must not change) use the kernel's own API directly: klp_shadow_alloc,
 * klp_shadow_get, klp_shadow_get_or_alloc, klp_shadow_free and
 * klp_shadow_free_all (<linux/livepatch.h>).
 */
#ifndef NOREBOOT_LIVEPATCH_H
#define NOREBOOT_LIVEPATCH_H

#include <linux/compiler.h>

struct klp_object;

#define __NOREBOOT_CALLBACK(kind, type, fn)					\
	static __typeof__(type) __noreboot_callback_##kind##_##fn		\
	__used __section(".discard.noreboot.callback." #kind) = fn

#define NOREBOOT_PRE_PATCH_CALLBACK(fn)						\
	__NOREBOOT_CALLBACK(pre_patch, int (*)(struct klp_object *), fn)
#define NOREBOOT_POST_PATCH_CALLBACK(fn)					\
	__NOREBOOT_CALLBACK(post_patch, void (*)(struct klp_object *), fn)
#define NOREBOOT_PRE_UNPATCH_CALLBACK(fn)					\
	__NOREBOOT_CALLBACK(pre_unpatch, void (*)(struct klp_object *), fn)
#define NOREBOOT_POST_UNPATCH_CALLBACK(fn)					\
	__NOREBOOT_CALLBACK(post_unpatch, void (*)(struct klp_object *), fn)

#define NOREBOOT_IGNORE_FUNCTION(fn)						\
	static void *__noreboot_ignore_##fn					\
	__used __section(".discard.noreboot.ignore") = (void *)(fn)

#define NOREBOOT_DATA_REDIRECTED(var)						\
	static const void *__noreboot_redirected_##var				\
	__used __section(".discard.noreboot.redirected") = (const void *)(var)

#endif
