struct dev_state {
	int flags;
	int count;
};
enum mode { MODE_A, MODE_B };
int dev_count(struct dev_state *d, enum mode m) { return m == MODE_B ? d->count : 0; }
