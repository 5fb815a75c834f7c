/* One-shot flags as the kernel makes them: DO_ONCE_LITE_IF (6.1,
 * include/linux/once_lite.h) behind WARN_ONCE and pr_*_once, and the
 * older WARN_ONCE/printk_once statics of 4.x kernels. */
extern int printk(const char *fmt, ...);
#define DO_ONCE_LITE_IF(condition, func, ...)					\
	({									\
		static _Bool __attribute__((section(".data..once"))) __already_done; \
		_Bool __ret_cond = !!(condition);				\
		_Bool __ret_once = 0;						\
		if (__builtin_expect(__ret_cond && !__already_done, 0)) {	\
			__already_done = 1;					\
			__ret_once = 1;						\
		}								\
		if (__builtin_expect(__ret_once, 0))				\
			func(__VA_ARGS__);					\
		__builtin_expect(__ret_cond, 0);				\
	})
#define pr_info_once(fmt, ...) DO_ONCE_LITE_IF(1, printk, fmt, ##__VA_ARGS__)
#define WARN_ONCE(cond, fmt, ...) DO_ONCE_LITE_IF(cond, printk, fmt, ##__VA_ARGS__)
#define OLD_WARN_ONCE(cond, fmt) ({					\
		static _Bool __attribute__((section(".data.unlikely"))) __warned; \
		int __ret = !!(cond);					\
		if (__builtin_expect(__ret && !__warned, 0)) {		\
			__warned = 1;					\
			printk(fmt);					\
		}							\
		__ret; })
#define OLD_PRINTK_ONCE(fmt) ({						\
		static _Bool __attribute__((section(".data.unlikely"))) __print_once; \
		if (!__print_once) {					\
			__print_once = 1;				\
			printk(fmt);					\
		} })
