/* With debugging information, a fix to code alone (the layouts the same)
 * is built as usual: no type is reported. */
//# cflags: -g
//# outcome: changed
//# changed: dev_count
struct dev_state {
	int flags;
	int count;
};
enum mode { MODE_A, MODE_B };
int dev_count(struct dev_state *d, enum mode m) { return m == MODE_B && d->count > 0 ? d->count : 0; }
