extern int printk(const char *fmt, ...);
int a(int v) { printk("a %d\n", v); return v; }
