//# outcome: changed
//# changed: report
//# relocs: .text.report __fentry__ printk .rodata.report.str1.1 .rodata.__func__.1
extern int printk(const char *fmt, ...);
void report(int v) { if (v) printk("%s: %d\n", __func__, v); }
void quiet(int v) { printk("%s: quiet %d\n", __func__, v); }
