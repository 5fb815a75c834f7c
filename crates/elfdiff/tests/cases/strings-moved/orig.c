extern int printk(const char *fmt, ...);
void both(int v) { printk("first %d\n", v); printk("second %d\n", v); }
void later(int v) { printk("second %d\n", v); }
