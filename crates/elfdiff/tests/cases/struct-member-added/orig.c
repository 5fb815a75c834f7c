/* A structure the running kernel holds instances of (a device's state). */
struct dev_state {
	int flags;
	int count;
	long total;
};
int dev_count(struct dev_state *d) { return d->count; }
long dev_total(struct dev_state *d) { return d->total; }
