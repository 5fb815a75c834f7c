//# outcome: changed
//# changed: f
//# data-changed: __func__.N
extern int printk(const char *fmt, ...);
static inline __attribute__((always_inline)) void check_value_in_range(int v) { printk("%s: %d\n", __func__, v); }
void f(int v) { check_value_in_range(v); }
