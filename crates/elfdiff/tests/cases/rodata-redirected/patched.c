//# outcome: changed
//# changed: addrinfo_get
//# new: redirect
//# data-changed: addr_policy
//# note: addr_policy changed: the patch carries its own copy; the references unl_family+0x8 are redirected
/* What the author adds to the fix: a callback that points the family at
 * the patch's copy of the table, and the declaration that it does
 * (NOREBOOT_DATA_REDIRECTED, spelled out: C cases see no kernel headers). */
struct policy { int type; int len; };
struct family { const char *name; const struct policy *policy; int maxattr; };
static const struct policy addr_policy[3] = { { 1, 4 }, { 1, 4 }, { 1, 4 } };
static struct family unl_family __attribute__((used)) = { "NLBLUNL", addr_policy, 3 };
int addrinfo_get(int attr, int len) {
	return addr_policy[attr % 3].type + len;
}
int redirect(void) { unl_family.policy = addr_policy; return 0; }
static const void *__noreboot_redirected_addr_policy __attribute__((used, section(".discard.noreboot.redirected"))) = addr_policy;
