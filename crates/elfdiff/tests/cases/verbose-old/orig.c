/* Dynamic debug before 5.9: descriptors in __verbose (renamed __dyndbg
 * later), struct _ddebug without a static key (CONFIG_JUMP_LABEL off). */
struct _ddebug {
	const char *modname, *function, *filename, *format;
	unsigned int lineno:18;
	unsigned int flags:8;
} __attribute__((aligned(8)));
void __dynamic_pr_debug(struct _ddebug *d, const char *fmt, ...);
#define pr_debug(fmt, ...) do {						\
	static struct _ddebug __attribute__((aligned(8), used,		\
		section("__verbose"))) descriptor = {			\
		"m", __func__, __FILE__, fmt, __LINE__, 0 };		\
	if (__builtin_expect(descriptor.flags & 1, 0))			\
		__dynamic_pr_debug(&descriptor, fmt, ##__VA_ARGS__);	\
} while (0)
int probe(int v) { pr_debug("probe %d\n", v); return v + 1; }
int later(int v) { pr_debug("later %d\n", v); return v * 3; }
