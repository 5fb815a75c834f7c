/* A module parameter as module_param_named() declares it: an entry of the
 * __param table, which the module loader and sysfs read by section. */
struct kernel_param;
struct kernel_param_ops {
	unsigned int flags;
	int (*set)(const char *val, const struct kernel_param *kp);
	int (*get)(char *buffer, const struct kernel_param *kp);
};
struct kernel_param {
	const char *name;
	void *mod;
	const struct kernel_param_ops *ops;
	unsigned short perm;
	signed char level;
	unsigned char flags;
	void *arg;
};
extern const struct kernel_param_ops param_ops_int;

static int limit_default = 4;
int limit(int n) { return n > limit_default ? limit_default : n; }
