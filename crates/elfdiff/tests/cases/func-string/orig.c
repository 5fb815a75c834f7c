extern int printk(const char *fmt, ...);
void report(int v) { printk("%s: %d\n", __func__, v); }
void quiet(int v) { printk("%s: quiet %d\n", __func__, v); }
