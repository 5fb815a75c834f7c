//# outcome: refused
//# new: reserved_size_set
//# data-new: reserved_size_ops
//# refused: __param_reserved_size: the kernel reads __param as a table
/* The fix validates the parameter with ops of its own (drivers/scsi/sg.c,
 * 6.1.192: def_reserved_size limited to 1 MB): the running module's
 * __param entry keeps pointing at the old ops, so the check would never
 * run; and a copy of the entry in the patch module would be registered as
 * a parameter of the patch itself. */
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
int param_get_int(char *buffer, const struct kernel_param *kp);
int kstrtoint(const char *s, unsigned int base, int *res);

static int reserved_size = 32768;

static int reserved_size_set(const char *val, const struct kernel_param *kp)
{
	int size, ret = kstrtoint(val, 0, &size);
	if (ret)
		return ret;
	if (size < 0 || size > 1048576)
		return -34;
	reserved_size = size;
	return 0;
}

static const struct kernel_param_ops reserved_size_ops = {
	.set = reserved_size_set,
	.get = param_get_int,
};

static const char __param_str_reserved_size[] = "reserved_size";
static const struct kernel_param __param_reserved_size
	__attribute__((__used__, __section__("__param"), __aligned__(sizeof(void *)))) = {
	__param_str_reserved_size, 0, &reserved_size_ops, 0644, -1, 0, &reserved_size
};

int reserve(void) { return reserved_size * 2; }
