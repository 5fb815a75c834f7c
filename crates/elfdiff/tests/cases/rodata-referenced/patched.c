//# outcome: refused
//# changed: addrinfo_get
//# refused: addr_policy: stay with the running kernel's old copy: unl_family+0x8
struct policy { int type; int len; };
struct family { const char *name; const struct policy *policy; int maxattr; };
static const struct policy addr_policy[3] = { { 1, 4 }, { 1, 4 }, { 1, 4 } };
static struct family unl_family __attribute__((used)) = { "NLBLUNL", addr_policy, 3 };
int addrinfo_get(int attr, int len) {
	return addr_policy[attr % 3].type + len;
}
