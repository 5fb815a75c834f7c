struct policy { int type; int len; };
struct family { const char *name; const struct policy *policy; int maxattr; };
static const struct policy addr_policy[3] = { { 1, 0 }, { 1, 0 }, { 1, 0 } };
static struct family unl_family __attribute__((used)) = { "NLBLUNL", addr_policy, 3 };
int addrinfo_get(int attr, int len) {
	if (len != 4)
		return -22;
	return addr_policy[attr % 3].type + len;
}
