//# outcome: changed
//# changed: sum_stats
struct stat_desc { char name[32]; unsigned long offset; };
extern unsigned long read_stat(const char *base, unsigned long offset);
static const struct stat_desc rq_stats_desc[] = {
	{ "packets", 0 }, { "bytes", 8 }, { "drops", 16 }, { "xdp_packets", 24 },
	{ "xdp_tx", 32 }, { "xdp_redirects", 40 }, { "xdp_drops", 48 }, { "kicks", 56 },
};
unsigned long sum_stats(const char *base)
{
	unsigned long s = 0;
	if (!base)
		return 0;
	for (int i = 0; i < 8; i++)
		s += read_stat(base, rq_stats_desc[i].offset);
	return s;
}
