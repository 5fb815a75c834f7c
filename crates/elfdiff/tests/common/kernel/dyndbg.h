/* A C case's stand-in for the kernel's dynamic debug (included by the
 * dyndbg-* cases; DDEBUG_FUNCTION picks how the descriptor names its
 * function, __func__ as the kernel does, or __builtin_FUNCTION()). */
#ifndef DDEBUG_FUNCTION
#define DDEBUG_FUNCTION __func__
#endif
/* Dynamic debug as the 6.1 kernel builds it with CONFIG_JUMP_LABEL
 * (include/linux/dynamic_debug.h, arch/x86/include/asm/jump_label.h):
 * one descriptor per pr_debug in __dyndbg, holding the static key whose
 * __jump_table entry switches the call site. */
struct static_key { int enabled; union { unsigned long type; void *entries; void *next; }; };
struct static_key_false { struct static_key key; };
struct _ddebug {
	const char *modname;
	const char *function;
	const char *filename;
	const char *format;
	unsigned int lineno:18;
	unsigned int class_id:6;
	unsigned int flags:8;
	union { struct static_key_false dd_key_false; } key;
} __attribute__((aligned(8)));
extern void __dynamic_pr_debug(struct _ddebug *descriptor, const char *fmt, ...);
static inline __attribute__((always_inline)) _Bool arch_static_branch(struct static_key *key, _Bool branch)
{
	asm goto("1: .byte 0x0f,0x1f,0x44,0x00,0x00\n\t"
		 ".pushsection __jump_table, \"aw\"\n\t"
		 ".balign 8\n\t"
		 ".long 1b - .\n\t"
		 ".long %l[l_yes] - .\n\t"
		 ".quad %c0 + %c1 - .\n\t"
		 ".popsection\n\t"
		 : : "i" (key), "i" (branch) : : l_yes);
	return 0;
l_yes:
	return 1;
}
#define __PASTE_(a, b) a##b
#define __PASTE(a, b) __PASTE_(a, b)
#define __UNIQUE_ID(prefix) __PASTE(__PASTE(__UNIQUE_ID_, prefix), __COUNTER__)
/* One call site's descriptor, in __dyndbg as the kernel places it. */
#define DEFINE_DYNAMIC_DEBUG_METADATA(id, fmt)					\
	static struct _ddebug __attribute__((aligned(8)))			\
	__attribute__((section("__dyndbg"))) id = {				\
		.modname = "m", .function = DDEBUG_FUNCTION, .filename = __FILE__,	\
		.format = (fmt), .lineno = __LINE__, .class_id = 63, .flags = 0, \
	}
#define __dynamic_func_call(id, fmt, ...) do {					\
	DEFINE_DYNAMIC_DEBUG_METADATA(id, fmt);					\
	if (arch_static_branch(&id.key.dd_key_false.key, 0))			\
		__dynamic_pr_debug(&id, fmt, ##__VA_ARGS__);			\
} while (0)
#define pr_debug(fmt, ...) __dynamic_func_call(__UNIQUE_ID(ddebug), fmt, ##__VA_ARGS__)
/* A call site that uses its descriptor only for the key (the kernel's
 * __dynamic_func_call_no_desc, behind btrfs_debug and others): the
 * function never refers to the descriptor, only its __jump_table entry. */
#define __dynamic_func_call_no_desc(id, fmt, func, ...) do {			\
	DEFINE_DYNAMIC_DEBUG_METADATA(id, fmt);					\
	if (arch_static_branch(&id.key.dd_key_false.key, 0))			\
		func(__VA_ARGS__);						\
} while (0)
#define _dynamic_func_call_no_desc(fmt, func, ...) \
	__dynamic_func_call_no_desc(__UNIQUE_ID(ddebug), fmt, func, ##__VA_ARGS__)
