#define __read_mostly __attribute__((__section__(".data..read_mostly")))
struct pool { const char *name; unsigned int size; void *cache; };
extern void *make_cache(const char *name, unsigned int size);
static struct pool pools[] __read_mostly = {
	{ "pool-1", 1 }, { "pool-4", 4 }, { "pool-16", 16 }, { "pool-64", 64 },
};
static void *workqueue __read_mostly;
int create_pools(void)
{
	struct pool *p;

	for (p = pools; p < pools + sizeof(pools) / sizeof(pools[0]); p++)
		p->cache = make_cache(p->name, p->size);
	return workqueue != 0;
}
