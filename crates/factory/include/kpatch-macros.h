/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * kpatch's patch-author macros, for fixes written for kpatch: a fix that
 * includes "kpatch-macros.h" builds with noreboot-build unchanged. Each
 * macro writes the record kpatch's header writes, in the same section, so
 * objects compiled with kpatch's own header read the same way:
 *
 *   KPATCH_IGNORE_FUNCTION(fn)      .kpatch.ignore.functions: the kernel's
 *                                   own copy of fn stays
 *   KPATCH_IGNORE_SECTION(".name")  .kpatch.ignore.sections: changes in
 *                                   that section are left out
 *   KPATCH_PRE_PATCH_CALLBACK(fn)   .kpatch.callbacks.pre_patch, and the
 *   KPATCH_POST_PATCH_CALLBACK(fn)  same for post_patch, pre_unpatch and
 *   KPATCH_PRE_UNPATCH_CALLBACK(fn) post_unpatch: { fn, objname } records;
 *   KPATCH_POST_UNPATCH_CALLBACK(fn) noreboot knows the target object
 *   KPATCH_FORCE_UNSAFE(fn)         refused: kernel livepatch has no way to
 *                                   skip its consistency model
 *
 * Like kpatch's, each macro ends its declaration itself; a `;` after it is
 * an empty declaration.
 *
 * Shadow variables: kpatch patches use the kernel's klp_shadow_* API
 * (<linux/livepatch.h>), which needs nothing from here.
 */
#ifndef __KPATCH_MACROS_H_
#define __KPATCH_MACROS_H_

#include <linux/compiler.h>

struct klp_object;

typedef int (*kpatch_pre_patch_call_t)(struct klp_object *obj);
typedef void (*kpatch_post_patch_call_t)(struct klp_object *obj);
typedef void (*kpatch_pre_unpatch_call_t)(struct klp_object *obj);
typedef void (*kpatch_post_unpatch_call_t)(struct klp_object *obj);

#define __KPATCH_CALLBACK(kind, type, fn)					\
	static struct { type callback; char *objname; }			\
	__kpatch_##kind##_##fn __used						\
	__section(".kpatch.callbacks." #kind) = { fn, NULL };

#define KPATCH_PRE_PATCH_CALLBACK(fn)						\
	__KPATCH_CALLBACK(pre_patch, kpatch_pre_patch_call_t, fn)
#define KPATCH_POST_PATCH_CALLBACK(fn)						\
	__KPATCH_CALLBACK(post_patch, kpatch_post_patch_call_t, fn)
#define KPATCH_PRE_UNPATCH_CALLBACK(fn)						\
	__KPATCH_CALLBACK(pre_unpatch, kpatch_pre_unpatch_call_t, fn)
#define KPATCH_POST_UNPATCH_CALLBACK(fn)					\
	__KPATCH_CALLBACK(post_unpatch, kpatch_post_unpatch_call_t, fn)

#define KPATCH_IGNORE_FUNCTION(fn)						\
	void *__kpatch_ignore_func_##fn __used					\
	__section(".kpatch.ignore.functions") = (void *)(fn);

#define KPATCH_IGNORE_SECTION(name)						\
	char *__UNIQUE_ID(kpatch_ignore_section_) __used			\
	__section(".kpatch.ignore.sections") = name;

#define KPATCH_FORCE_UNSAFE(fn)							\
	void *__kpatch_force_func_##fn __used					\
	__section(".kpatch.force") = (void *)(fn);

#endif
