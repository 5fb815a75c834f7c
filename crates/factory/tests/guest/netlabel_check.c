/* Observes the netlabel fix of Debian 6.1.192-3 from user space: asks the
 * kernel to add a static label (NLBL_UNLABEL_C_STATICADD) whose IPv4
 * address and mask attributes are 2 bytes long instead of 4. The fixed
 * kernel rejects them in netlink policy validation (NLA_POLICY_EXACT_LEN:
 * -ERANGE, "binary attribute size out of range"); the unfixed kernel lets
 * them through the policy, and a patched handler that trusts the policy
 * would read past the attributes. Exit 0 when the policy rejects them, 1
 * when it does not, 2 when the question could not be asked. Static, so it
 * runs in the lab's busybox initramfs. */
#include <errno.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NLBL_UNLABEL_C_STATICADD 3
#define NLBL_UNLABEL_A_IPV4ADDR 4
#define NLBL_UNLABEL_A_IPV4MASK 5
#define NLBL_UNLABEL_A_IFACE 6
#define NLBL_UNLABEL_A_SECCTX 7

struct req {
	struct nlmsghdr n;
	struct genlmsghdr g;
	char buf[256];
};

static void put_attr(struct req *r, int type, const void *data, int len)
{
	struct nlattr *a = (struct nlattr *)((char *)r + NLMSG_ALIGN(r->n.nlmsg_len));
	a->nla_type = type;
	a->nla_len = NLA_HDRLEN + len;
	memcpy((char *)a + NLA_HDRLEN, data, len);
	r->n.nlmsg_len = NLMSG_ALIGN(r->n.nlmsg_len) + NLA_ALIGN(a->nla_len);
}

/* Sends the request and returns the error the kernel answers (0 for
 * success), copying the extended-ack message, if any, into msg. */
static int ask(int fd, struct req *r, char *reply, int size, char *msg, int msglen)
{
	if (send(fd, r, r->n.nlmsg_len, 0) < 0) {
		perror("send");
		return 1;
	}
	int n = recv(fd, reply, size, 0);
	if (n < 0) {
		perror("recv");
		return 1;
	}
	struct nlmsghdr *h = (struct nlmsghdr *)reply;
	if (!NLMSG_OK(h, n) || h->nlmsg_type != NLMSG_ERROR)
		return 0;
	struct nlmsgerr *e = NLMSG_DATA(h);
	msg[0] = 0;
	if (h->nlmsg_flags & NLM_F_ACK_TLVS) {
		int off = NLMSG_HDRLEN + sizeof(*e);
		if (!(h->nlmsg_flags & NLM_F_CAPPED))
			off += e->msg.nlmsg_len - NLMSG_HDRLEN;
		for (struct nlattr *a = (struct nlattr *)(reply + off);
		     (char *)a + NLA_HDRLEN <= reply + h->nlmsg_len && a->nla_len >= NLA_HDRLEN;
		     a = (struct nlattr *)((char *)a + NLA_ALIGN(a->nla_len)))
			if (a->nla_type == NLMSGERR_ATTR_MSG)
				snprintf(msg, msglen, "%.*s", (int)(a->nla_len - NLA_HDRLEN),
					 (char *)a + NLA_HDRLEN);
	}
	return -e->error;
}

int main(void)
{
	int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_GENERIC);
	int one = 1;
	char reply[8192], msg[256];
	if (fd < 0 || setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one)) < 0) {
		perror("netlink socket");
		return 2;
	}
	struct req r = { 0 };
	r.n.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
	r.n.nlmsg_type = GENL_ID_CTRL;
	r.n.nlmsg_flags = NLM_F_REQUEST;
	r.g.cmd = CTRL_CMD_GETFAMILY;
	r.g.version = 1;
	put_attr(&r, CTRL_ATTR_FAMILY_NAME, "NLBL_UNLBL", sizeof("NLBL_UNLBL"));
	if (ask(fd, &r, reply, sizeof(reply), msg, sizeof(msg)) != 0) {
		fprintf(stderr, "netlabel's generic netlink family NLBL_UNLBL not found\n");
		return 2;
	}
	int family = -1;
	struct nlmsghdr *h = (struct nlmsghdr *)reply;
	int alen = h->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN);
	for (struct nlattr *a = (struct nlattr *)((char *)NLMSG_DATA(h) + GENL_HDRLEN);
	     alen >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= alen;
	     alen -= NLA_ALIGN(a->nla_len), a = (struct nlattr *)((char *)a + NLA_ALIGN(a->nla_len)))
		if (a->nla_type == CTRL_ATTR_FAMILY_ID)
			family = *(unsigned short *)((char *)a + NLA_HDRLEN);
	if (family < 0) {
		fprintf(stderr, "no family id in the answer\n");
		return 2;
	}

	memset(&r, 0, sizeof(r));
	r.n.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
	r.n.nlmsg_type = family;
	r.n.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	r.n.nlmsg_seq = 2;
	r.g.cmd = NLBL_UNLABEL_C_STATICADD;
	r.g.version = 3;
	const unsigned char short_addr[2] = { 10, 0 };
	put_attr(&r, NLBL_UNLABEL_A_IPV4ADDR, short_addr, 2);
	put_attr(&r, NLBL_UNLABEL_A_IPV4MASK, short_addr, 2);
	put_attr(&r, NLBL_UNLABEL_A_IFACE, "lo", 3);
	put_attr(&r, NLBL_UNLABEL_A_SECCTX, "unconfined", 11);
	int err = ask(fd, &r, reply, sizeof(reply), msg, sizeof(msg));
	printf("2-byte IPv4 address and mask: %s (%d)%s%s\n", err ? strerror(err) : "accepted", err,
	       msg[0] ? ", kernel says: " : "", msg);
	if (err == ERANGE && strstr(msg, "size out of range")) {
		printf("rejected by the attribute policy, as the fixed kernel does\n");
		return 0;
	}
	printf("not rejected by the attribute policy\n");
	return 1;
}
