/* The fix adds a member in the middle: count and total move. Code that
 * reads them at their new offsets would read instances allocated before
 * the patch at the wrong place: refused, naming the type and what moved
 * (the objects carry DWARF, as the kernel's do). */
//# cflags: -g
//# outcome: refused
//# changed: dev_count dev_total
//# refused: struct dev_state: layout changed (size 16 -> 24 bytes; new member copy at 4; count moved 4 -> 8; total moved 8 -> 16)
struct dev_state {
	int flags;
	int copy;
	int count;
	long total;
};
int dev_count(struct dev_state *d) { return d->count; }
long dev_total(struct dev_state *d) { return d->total; }
