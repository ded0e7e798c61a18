/* Header parsing for Ethernet, IPv4 and TCP, with bounds checks the
 * verifier can follow. */
#ifndef TIDEGATE_PARSE_H
#define TIDEGATE_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>

#include "types.h"

#define TCP_OPT_EOL 0
#define TCP_OPT_NOP 1
#define TCP_OPT_MSS 2
#define TCP_OPT_SACK 5
#define TCP_OPT_TIMESTAMP 8
#define TCP_OPT_FASTOPEN 34
#define TCP_OPT_EXP 254
#define TCP_FASTOPEN_MAGIC 0xF989

/* TCP options take at most 40 bytes, so a walk ends within 40 steps. */
#define TCP_OPT_SPACE 40

struct pkt {
	struct ethhdr *eth;
	struct iphdr *iph;
	struct tcphdr *tcp;
	__u32 tcp_len;     /* TCP header length including options */
	__u32 payload_len; /* TCP payload length from the IP total length */
	__u32 len;         /* frame length */
};

/* Parses an Ethernet frame carrying IPv4 and TCP. Returns -1 when the
 * frame is one the balancer may handle, or the stat that explains why the
 * kernel gets it. */
static __always_inline int parse_tcp4(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	p->len = data_end - data;
	p->eth = data;
	if ((void *)(p->eth + 1) > data_end)
		return STAT_PASS_NOT_IPV4;
	if (p->eth->h_proto != bpf_htons(ETH_P_IP))
		return STAT_PASS_NOT_IPV4;

	p->iph = (void *)(p->eth + 1);
	if ((void *)(p->iph + 1) > data_end)
		return STAT_PASS_NOT_IPV4;
	if (p->iph->version != 4)
		return STAT_PASS_NOT_IPV4;
	if (p->iph->protocol != IPPROTO_TCP)
		return STAT_PASS_NOT_TCP;
	if (p->iph->ihl != 5)
		return STAT_PASS_IP_OPTIONS;
	if (p->iph->frag_off & bpf_htons(0x3fff))
		return STAT_PASS_FRAGMENT;

	p->tcp = (void *)(p->iph + 1);
	if ((void *)(p->tcp + 1) > data_end)
		return STAT_PASS_BAD_TCP;
	p->tcp_len = p->tcp->doff * 4;
	if (p->tcp_len < sizeof(struct tcphdr))
		return STAT_PASS_BAD_TCP;
	if ((void *)p->tcp + p->tcp_len > data_end)
		return STAT_PASS_BAD_TCP;

	__u32 tot = bpf_ntohs(p->iph->tot_len);
	if (tot < sizeof(struct iphdr) + p->tcp_len || tot > p->len - sizeof(struct ethhdr))
		return STAT_PASS_BAD_TCP;
	p->payload_len = tot - sizeof(struct iphdr) - p->tcp_len;
	return -1;
}

/* Reports whether the options are exactly NOP, NOP and timestamps, the
 * layout Linux sends on every segment after the handshake when timestamps
 * are on. Such a segment has no MSS or SACK option to rewrite, so the
 * reverse path skips its option walk. */
static __always_inline int only_timestamps(struct pkt *p, void *data_end)
{
	__u8 *opt = (__u8 *)(p->tcp + 1);

	if (p->tcp_len != sizeof(struct tcphdr) + 12)
		return 0;
	if ((void *)(opt + 4) > data_end)
		return 0;
	return opt[0] == TCP_OPT_NOP && opt[1] == TCP_OPT_NOP && opt[2] == TCP_OPT_TIMESTAMP &&
	       opt[3] == 10;
}

/* State of a TCP option walk driven by bpf_loop. The walk runs as a
 * bpf_loop callback because an open-coded loop over variable-length options
 * makes the verifier explore every combination of option lengths: on Linux
 * 6.18 with clang 19 that exceeded the limit of one million instructions. */
struct opt_walk {
	__u8 *opt;      /* first option byte */
	void *data_end;
	__u32 off;      /* offset of the next option from opt */
	__u32 opt_len;  /* bytes of options */
	__u32 found;    /* set by the callback */
	__u32 isn;      /* reverse walks: the flow's client ISN */
	__u32 acked;    /* reverse walks: header fully acknowledged */
	__u32 syn;      /* reverse walks: the segment is a SYN-ACK */
	__u32 diff;     /* reverse walks: running checksum difference */
};

/* Returns the next option of the walk in *kind and *len and its first byte
 * in *at, or 0 when the walk is over. */
static __always_inline int next_option(struct opt_walk *w, __u8 **at, __u8 *kind, __u8 *len)
{
	__u32 off = w->off;

	if (off >= w->opt_len || off >= TCP_OPT_SPACE)
		return 0;
	/* A no-op for off < 40; it gives the verifier one bounded range for
	 * every path instead of one per option layout. */
	off &= 0x3f;
	__u8 *k = w->opt + off;
	if ((void *)(k + 1) > w->data_end)
		return 0;
	*kind = k[0];
	*at = k;
	if (*kind == TCP_OPT_EOL)
		return 0;
	if (*kind == TCP_OPT_NOP) {
		*len = 1;
		w->off = off + 1;
		return 1;
	}
	if ((void *)(k + 2) > w->data_end)
		return 0;
	*len = k[1];
	/* An option that claims to run past the option space would make
	 * callers edit the payload. */
	if (*len < 2 || off + *len > w->opt_len)
		return 0;
	w->off = off + *len;
	return 1;
}

static long fastopen_step(__u32 i, void *arg)
{
	struct opt_walk *w = arg;
	__u8 *k, kind, len;

	if (!next_option(w, &k, &kind, &len))
		return 1;
	if (kind == TCP_OPT_FASTOPEN) {
		w->found = 1;
		return 1;
	}
	if (kind == TCP_OPT_EXP && len >= 4) {
		if ((void *)(k + 4) > w->data_end)
			return 1;
		if (((__u16)k[2] << 8 | k[3]) == TCP_FASTOPEN_MAGIC) {
			w->found = 1;
			return 1;
		}
	}
	return 0;
}

/* Reports whether a SYN carries a TCP Fast Open option, in its IANA form
 * (kind 34) or the experimental form (kind 254 with magic 0xF989). */
static __always_inline int has_fastopen(struct pkt *p, void *data_end)
{
	struct opt_walk w = {
		.opt = (__u8 *)(p->tcp + 1),
		.data_end = data_end,
		.opt_len = p->tcp_len - sizeof(struct tcphdr),
	};

	bpf_loop(TCP_OPT_SPACE, fastopen_step, &w, 0);
	return w.found;
}

#endif
