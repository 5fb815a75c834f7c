extern int printk(const char *fmt, ...);
void report(int v) { printk("value is %d\n", v); }
void quiet(int v) { printk("quiet %d\n", v); }
