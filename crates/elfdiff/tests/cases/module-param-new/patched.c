//# outcome: refused
//# changed: limit
//# data-new: __param_str_limit limit_default
//# refused: __param_limit: a new module parameter (limit)
/* The fix makes the limit a module parameter (module_param(limit, int,
 * 0644)): a new entry of the __param table. */
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
static const char __param_str_limit[] = "limit";
static const struct kernel_param __param_limit
	__attribute__((__used__, __section__("__param"), __aligned__(sizeof(void *)))) = {
	__param_str_limit, 0, &param_ops_int, 0644, -1, 0, &limit_default
};
int limit(int n) { return n >= limit_default ? limit_default : n; }
