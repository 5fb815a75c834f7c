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
int kstrtoint(const char *s, unsigned int base, int *res);

static int reserved_size = 32768;
static const char __param_str_reserved_size[] = "reserved_size";
static const struct kernel_param __param_reserved_size
	__attribute__((__used__, __section__("__param"), __aligned__(sizeof(void *)))) = {
	__param_str_reserved_size, 0, &param_ops_int, 0644, -1, 0, &reserved_size
};

int reserve(void) { return reserved_size * 2; }
