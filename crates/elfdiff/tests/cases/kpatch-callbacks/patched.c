//# outcome: changed
//# changed: work
//# new: prepare cleanup
/* What kpatch-macros.h expands KPATCH_PRE_PATCH_CALLBACK(fn) and
 * KPATCH_POST_UNPATCH_CALLBACK(fn) to: a static { fn, objname } record in
 * .kpatch.callbacks.<kind>, allocated and writable. The records are the
 * author's instructions to the factory, not new data of the patch. */
struct klp_object;
struct kpatch_callback { void *fn; char *objname; };
#define KPATCH_CALLBACK(kind, f) static struct kpatch_callback kpatch_##kind##_data \
	__attribute__((section(".kpatch.callbacks." #kind), used)) = { .fn = (void *)f, .objname = 0 };
int state;
int work(int v) { return v + state + 1; }
static int prepare(struct klp_object *obj) { state = 1; return 0; }
static void cleanup(struct klp_object *obj) { state = 0; }
KPATCH_CALLBACK(pre_patch, prepare)
KPATCH_CALLBACK(post_unpatch, cleanup)
