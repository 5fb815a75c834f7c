extern int printk(const char *fmt, ...);
void f(int v) { printk("%s: %d\n", __func__, v); }
