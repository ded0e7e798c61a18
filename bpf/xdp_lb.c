//go:build ignore

/* XDP balancer: a full NAT from client -> VIP to SNAT address -> real that
 * writes a PROXY v2 header into the start of the client's TCP stream. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "types.h"
#include "maps.h"
#include "csum.h"
#include "parse.h"

#ifndef AF_INET
#define AF_INET 2
#endif

#define E2BIG 7

/* last_seen is rewritten at most once per this many nanoseconds, so that
 * busy flows do not bounce its cache line between CPUs on every packet. */
#define LAST_SEEN_GRANULARITY_NS 1000000000ULL

char LICENSE[] SEC("license") = "GPL";

/* Unused globals that put the enums into BTF, where bpf2go finds them. */
const enum stat *unused_stat __attribute__((unused));
const enum flow_dir *unused_flow_dir __attribute__((unused));
const enum flow_state *unused_flow_state __attribute__((unused));
const enum config_flag *unused_config_flag __attribute__((unused));

/* The same hash as maglev.HashFlow and maglev.HashClient in Go, so that both
 * engines pick the same real for a flow. IPv4 addresses are hashed in their
 * IPv4-mapped IPv6 form. */
static __always_inline __u64 mix64(__u64 x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

#define HASH_SEED 0x9e3779b97f4a7c15ULL

static __always_inline __u64 hash_addr4(__u64 seed, __be32 addr)
{
	__u64 lo = 0x0000ffff00000000ULL | bpf_ntohl(addr);

	return mix64(seed) ^ mix64(lo + seed);
}

static __always_inline __u64 hash_flow4(__be32 saddr, __be16 sport, __be32 daddr, __be16 dport)
{
	__u64 h = hash_addr4(HASH_SEED, saddr);

	h = mix64(h ^ ((__u64)bpf_ntohs(sport) << 16) ^ (__u64)bpf_ntohs(dport));
	return mix64(h ^ hash_addr4(h, daddr));
}

static __always_inline __u64 hash_client4(__be32 saddr)
{
	return mix64(hash_addr4(HASH_SEED, saddr));
}

/* Stamps last_seen with now, a reading of the coarse clock. That clock is
 * CLOCK_MONOTONIC (the clock the sweep reads) at tick resolution and costs
 * a few nanoseconds, where bpf_ktime_get_ns took about 17 ns in the
 * Firecracker guest on Linux 6.18 that ran BenchmarkProgramKernelTimed.
 * The coarse clock lags bpf_ktime_get_ns, which stamps new flows, by up to
 * one tick, so the comparison is signed. */
static __always_inline void touch(struct flow *f, __u64 now)
{
	if ((__s64)(now - f->last_seen) > (__s64)LAST_SEEN_GRANULARITY_NS)
		f->last_seen = now;
}

/* Writes the PROXY v2 header and its checksum into f. The unique ID is the
 * node ID followed by the creation time in nanoseconds shifted left 16 bits
 * and combined with the SNAT port, which no other live flow holds. */
static __always_inline void build_proxy_header(struct flow *f, const struct lb_config *cfg,
					       __be32 caddr, __be16 cport, __be32 vaddr,
					       __be16 vport, __u16 snat_port)
{
	static const __u8 sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				     0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
	__u8 *h = f->hdr;
	__u64 uid = (f->created << 16) | snat_port;

	__builtin_memcpy(h, sig, sizeof(sig));
	h[12] = 0x21; /* version 2, PROXY command */
	h[13] = 0x11; /* TCP over IPv4 */
	h[14] = 0;
	h[15] = PROXY_HDR_LEN - 16;
	__builtin_memcpy(h + 16, &caddr, 4);
	__builtin_memcpy(h + 20, &vaddr, 4);
	__builtin_memcpy(h + 24, &cport, 2);
	__builtin_memcpy(h + 26, &vport, 2);
	h[28] = 0x05; /* PP2_TYPE_UNIQUE_ID */
	h[29] = 0;
	h[30] = PROXY_UID_LEN;
	__builtin_memcpy(h + 31, cfg->node_id, 8);
#pragma unroll
	for (int i = 0; i < 8; i++)
		h[39 + i] = (__u8)(uid >> (56 - 8 * i));
#pragma unroll
	for (int i = PROXY_HDR_LEN; i < PROXY_HDR_SPACE; i++)
		h[i] = 0;
	/* The sum covers the zero pad byte, as the checksum of a segment
	 * whose data ends with the header would. */
	f->hdr_csum = csum_bytes(h, PROXY_HDR_LEN + 1);
}

/* A cached next hop serves packets for at most this long. That bounds the
 * staleness after a change that sends no netlink notification, such as a
 * path MTU learned from ICMP. */
#define NEXTHOP_TTL_NS 100000000ULL

static __always_inline struct nexthop *nexthop_slot(__be32 daddr)
{
	__u32 slot = (((__u32)daddr * 0x9e3779b1U) >> 16) & (NEXTHOP_SLOTS - 1);

	return bpf_map_lookup_elem(&nexthops, &slot);
}

static __always_inline __u32 nexthop_generation(void)
{
	__u32 zero = 0;
	__u32 *gen = bpf_map_lookup_elem(&nexthop_gen, &zero);

	return gen ? *gen : 0;
}

/* Looks up the next hop for daddr and fills the Ethernet addresses. On
 * failure it returns the stat of the drop; the packet is left untouched.
 *
 * A bpf_fib_lookup took about 36 ns in BenchmarkProgramKernelTimed on
 * Linux 6.18, so its result is cached per CPU. A cached entry serves a
 * packet only when every input of the lookup matches and the generation
 * has not moved since the entry was filled. The entry must also be younger
 * than NEXTHOP_TTL_NS, and the packet no longer than the longest one the
 * lookup checked against the route's MTU. Failed lookups are not cached. */
static __always_inline int route(struct xdp_md *ctx, struct pkt *p, __be32 saddr, __be32 daddr,
				 __u16 tot_len, __u64 now, __u32 *ifindex)
{
	__u32 iif = ctx->ingress_ifindex;
	__u8 tos = p->iph->tos;
	__u32 gen = nexthop_generation();
	struct nexthop *nh = nexthop_slot(daddr);
	int valid = 0;
	const __u8 *dmac, *smac;
	__u32 oif;

	if (nh) {
		valid = nh->daddr == daddr && nh->saddr == saddr && nh->iif == iif &&
			nh->tos == tos && nh->gen == gen && (__s64)(nh->expires - now) > 0;
		if (valid && tot_len <= nh->max_len) {
			oif = nh->oif;
			dmac = nh->dmac;
			smac = nh->smac;
			goto out;
		}
	}

	struct bpf_fib_lookup fib = {};

	fib.family = AF_INET;
	fib.l4_protocol = IPPROTO_TCP;
	fib.tos = tos;
	fib.tot_len = tot_len;
	fib.ifindex = iif;
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;

	int rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		break;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		return STAT_DROP_NO_NEIGH;
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		return STAT_DROP_FRAG_NEEDED;
	default:
		return STAT_DROP_NO_ROUTE;
	}

	oif = fib.ifindex;
	dmac = fib.dmac;
	smac = fib.smac;

	if (nh) {
		/* A valid entry that missed only on length keeps its expiry,
		 * so a raised max_len never outlives the lookup that set the
		 * rest. */
		if (!valid) {
			nh->daddr = daddr;
			nh->saddr = saddr;
			nh->iif = iif;
			nh->tos = tos;
			nh->gen = gen;
			nh->expires = now + NEXTHOP_TTL_NS;
			nh->max_len = 0;
		}
		if (tot_len > nh->max_len)
			nh->max_len = tot_len;
		nh->oif = oif;
		__builtin_memcpy(nh->dmac, fib.dmac, ETH_ALEN);
		__builtin_memcpy(nh->smac, fib.smac, ETH_ALEN);
	}

out:
	if (oif != iif && !bpf_map_lookup_elem(&tx_ports, &oif))
		return STAT_DROP_NO_TX_PORT;
	__builtin_memcpy(p->eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, smac, ETH_ALEN);
	*ifindex = oif;
	return -1;
}

static __always_inline int transmit(struct xdp_md *ctx, __u32 ifindex)
{
	if (ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect_map(&tx_ports, ifindex, 0);
}

/* Rewrites the IPv4 and TCP addresses and ports to those stored in f and
 * returns the checksum difference of the TCP pseudo header and ports. */
static __always_inline __u32 rewrite_tuple(struct pkt *p, const struct flow *f)
{
	__u32 diff = 0;

	diff = csum_diff32(diff, p->iph->saddr, f->saddr);
	diff = csum_diff32(diff, p->iph->daddr, f->daddr);
	diff = csum_diff16(diff, p->tcp->source, f->sport);
	diff = csum_diff16(diff, p->tcp->dest, f->dport);
	p->iph->saddr = f->saddr;
	p->iph->daddr = f->daddr;
	p->tcp->source = f->sport;
	p->tcp->dest = f->dport;
	return diff;
}

static __always_inline void note_close(struct flow *f, struct tcphdr *tcp, __u8 fin_bit)
{
	__u8 old = f->state;
	__u8 state = old;

	if (tcp->fin)
		state |= fin_bit;
	if (tcp->rst)
		state |= FLOW_RST;
	if (state == old)
		return;
	f->state = state;
	if (!(old & (FLOW_FIN_CLIENT | FLOW_FIN_REAL | FLOW_RST)))
		count(STAT_FLOWS_CLOSED, 1);
}

/* Moves the Ethernet, IPv4 and TCP headers PROXY_HDR_LEN bytes towards the
 * front and writes the PROXY header into the gap, in front of the payload.
 * The headers must already be rewritten. Returns 0 on success; on failure
 * the frame is damaged and must be dropped. */
static __always_inline int insert_header(struct xdp_md *ctx, const struct flow *f, __u32 tcp_len)
{
	if (bpf_xdp_adjust_head(ctx, -PROXY_HDR_LEN))
		return -1;

	__u8 *data = (void *)(long)ctx->data;
	__u8 *data_end = (void *)(long)ctx->data_end;
	__u8 *src = data + PROXY_HDR_LEN;

	/* Fixed part: Ethernet, IPv4 and the TCP header without options. The
	 * copy runs upwards in 2-byte steps, and the source lies 47 bytes
	 * above the destination, so no byte is overwritten before it is read. */
	const __u32 fixed = sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct tcphdr);
	if (src + fixed > data_end)
		return -1;
#pragma unroll
	for (int i = 0; i < (int)fixed; i += 2)
		*(__u16 *)(data + i) = *(__u16 *)(src + i);

	/* TCP options, 4 bytes at a time. */
	__u32 opt_len = tcp_len - sizeof(struct tcphdr);
	for (__u32 off = 0; off < TCP_OPT_SPACE; off += 4) {
		if (off >= opt_len)
			break;
		__u8 *s = src + fixed + off;
		if (s + 4 > data_end)
			return -1;
		*(__u32 *)(data + fixed + off) = *(__u32 *)s;
	}

	if (opt_len > TCP_OPT_SPACE)
		return -1;
	__u8 *h = data + fixed + opt_len;
	if (h + PROXY_HDR_LEN > data_end)
		return -1;
	/* Exactly PROXY_HDR_LEN bytes: one more would overwrite the first
	 * payload byte. */
#pragma unroll
	for (int i = 0; i + 1 < PROXY_HDR_LEN; i += 2)
		*(__u16 *)(h + i) = *(const __u16 *)(f->hdr + i);
	if (PROXY_HDR_LEN & 1)
		h[PROXY_HDR_LEN - 1] = f->hdr[PROXY_HDR_LEN - 1];
	return 0;
}

/* Returns the unfolded sum of the TCP header, options included. */
static __always_inline __u32 tcp_header_sum(struct tcphdr *tcp, void *data_end, __u32 tcp_len)
{
	__u32 sum = 0;

	for (__u32 off = 0; off < 60; off += 4) {
		if (off >= tcp_len)
			break;
		__u32 *w = (void *)tcp + off;
		if ((void *)(w + 1) > data_end)
			break;
		sum = csum_add(sum, *w);
	}
	return sum;
}

static __always_inline __u32 pseudo_sum(__be32 saddr, __be32 daddr, __u32 tcp_seg_len)
{
	__u32 sum = csum_add(saddr, daddr);

	sum = csum_add(sum, bpf_htons(IPPROTO_TCP));
	return csum_add(sum, bpf_htons(tcp_seg_len));
}

/* Client to real. Inserts the PROXY header into segments that start the
 * stream until the real has acknowledged it, and moves every later sequence
 * number by the header length. */
static __always_inline int forward(struct xdp_md *ctx, struct pkt *p, struct flow *f)
{
	void *data_end = (void *)(long)ctx->data_end;
	__u32 seq = bpf_ntohl(p->tcp->seq);
	/* A RST never carries the header: the real most likely holds it
	 * already, from the handshake ACK, and expects the RST behind it. */
	int insert = !f->hdr_acked && !p->tcp->syn && !p->tcp->rst && seq == f->isn + 1;
	__u16 old_tot = p->iph->tot_len;
	__u16 new_tot = old_tot;
	__u32 ifindex = 0;
	__u32 in_len = p->len;

	if (insert)
		new_tot = bpf_htons(bpf_ntohs(old_tot) + PROXY_HDR_LEN);

	__u64 now = bpf_ktime_get_coarse_ns();
	int err = route(ctx, p, f->saddr, f->daddr, bpf_ntohs(new_tot), now, &ifindex);
	if (err >= 0) {
		count(err, 1);
		return XDP_DROP;
	}

	/* The header has an odd length, so it moves the payload to odd
	 * offsets, and the payload's part of the checksum swaps its bytes.
	 * That part is recovered from the client's checksum without reading
	 * the payload: the sum of a valid segment is 0xffff, so the payload's
	 * sum is the complement of the pseudo header's plus the TCP header's. */
	__u16 payload_sum = 0;
	__u32 seg_len = bpf_ntohs(old_tot) - sizeof(struct iphdr);
	if (insert) {
		__u32 rest = pseudo_sum(p->iph->saddr, p->iph->daddr, seg_len);
		rest = csum_add(rest, tcp_header_sum(p->tcp, data_end, p->tcp_len));
		payload_sum = (__u16)~csum_fold(rest);
	}

	__u32 diff = rewrite_tuple(p, f);

	if (insert) {
		p->tcp->check = 0;
		__u32 sum = pseudo_sum(f->saddr, f->daddr, seg_len + PROXY_HDR_LEN);
		sum = csum_add(sum, tcp_header_sum(p->tcp, data_end, p->tcp_len));
		sum = csum_add(sum, f->hdr_csum);
		sum = csum_add(sum, (__u16)((payload_sum >> 8) | (payload_sum << 8)));
		p->tcp->check = (__u16)~csum_fold(sum);
	} else {
		if (!p->tcp->syn) {
			__be32 new_seq = bpf_htonl(seq + PROXY_HDR_LEN);
			diff = csum_diff32(diff, p->tcp->seq, new_seq);
			p->tcp->seq = new_seq;
		}
		p->tcp->check = csum_apply(p->tcp->check, diff);
	}

	p->iph->tot_len = new_tot;
	ipv4_csum(p->iph);

	note_close(f, p->tcp, FLOW_FIN_CLIENT);
	touch(f, now);

	if (insert) {
		if (insert_header(ctx, f, p->tcp_len)) {
			count(STAT_DROP_HEADROOM, 1);
			return XDP_DROP;
		}
		count(STAT_HEADER_INSERTS, 1);
	}

	count(STAT_FWD_PACKETS, 1);
	count(STAT_FWD_BYTES, in_len);
	return transmit(ctx, ifindex);
}

/* Translates one acknowledgment-space value of the real into the client's
 * space: minus the header length, and never below isn+1 while the header
 * is not fully acknowledged. */
static __always_inline __u32 ack_to_client(const struct flow *f, __u32 v, int acked)
{
	__u32 out = v - PROXY_HDR_LEN;

	if (!acked && (__s32)(out - (f->isn + 1)) < 0)
		out = f->isn + 1;
	return out;
}

static long reverse_option_step(__u32 i, void *arg)
{
	struct opt_walk *w = arg;
	__u8 *k, kind, len;

	if (!next_option(w, &k, &kind, &len))
		return 1;

	/* Offsets are from the start of the TCP header, whose parity decides
	 * how a field enters the checksum. */
	__u32 base = sizeof(struct tcphdr) + (__u32)(k - w->opt);

	if (kind == TCP_OPT_MSS && len == 4 && w->syn) {
		if ((void *)(k + 4) > w->data_end)
			return 1;
		__u16 old = (__u16)k[2] << 8 | k[3];
		__u16 mss = old > PROXY_HDR_LEN + 64 ? old - PROXY_HDR_LEN : old;
		w->diff = csum_diff16_at(w->diff, base + 2, bpf_htons(old), bpf_htons(mss));
		k[2] = mss >> 8;
		k[3] = mss & 0xff;
	}

	if (kind == TCP_OPT_SACK && len >= 10) {
		__u32 edges = (len - 2) / 4;
		for (__u32 e = 0; e < 8; e++) {
			if (e >= edges)
				break;
			__u8 *q = k + 2 + 4 * e;
			if ((void *)(q + 4) > w->data_end)
				return 1;
			__u32 old_be;
			__builtin_memcpy(&old_be, q, 4);
			__u32 v = bpf_ntohl(old_be) - PROXY_HDR_LEN;
			if (!w->acked && (__s32)(v - (w->isn + 1)) < 0)
				v = w->isn + 1;
			__u32 new_be = bpf_htonl(v);
			w->diff = csum_diff32_at(w->diff, base + 2 + 4 * e, old_be, new_be);
			__builtin_memcpy(q, &new_be, 4);
		}
	}
	return 0;
}

/* Walks the options of a segment from the real: lowers the MSS of a SYN-ACK
 * by the header length and moves every SACK block edge back. Returns the
 * updated checksum difference. */
static __always_inline __u32 fix_reverse_options(struct pkt *p, void *data_end,
						 const struct flow *f, int acked, __u32 diff)
{
	struct opt_walk w = {
		.opt = (__u8 *)(p->tcp + 1),
		.data_end = data_end,
		.opt_len = p->tcp_len - sizeof(struct tcphdr),
		.isn = f->isn,
		.acked = acked,
		.syn = p->tcp->syn,
		.diff = diff,
	};

	bpf_loop(TCP_OPT_SPACE, reverse_option_step, &w, 0);
	return w.diff;
}

/* Real to client. */
static __always_inline int reverse(struct xdp_md *ctx, struct pkt *p, struct flow *f)
{
	void *data_end = (void *)(long)ctx->data_end;
	__u32 ifindex = 0;
	int acked = f->hdr_acked;

	__u64 now = bpf_ktime_get_coarse_ns();
	int err = route(ctx, p, f->saddr, f->daddr, bpf_ntohs(p->iph->tot_len), now, &ifindex);
	if (err >= 0) {
		count(err, 1);
		return XDP_DROP;
	}

	__u32 diff = rewrite_tuple(p, f);

	if (p->tcp->ack) {
		__u32 ack = bpf_ntohl(p->tcp->ack_seq);

		if (!acked && (__s32)(ack - (f->isn + 1 + PROXY_HDR_LEN)) >= 0) {
			struct flow_key fk = {
				.saddr = f->daddr,
				.daddr = f->saddr,
				.sport = f->dport,
				.dport = f->sport,
			};
			struct flow *fwd = bpf_map_lookup_elem(&flows, &fk);

			if (fwd)
				fwd->hdr_acked = 1;
			f->hdr_acked = 1;
			acked = 1;
		}

		__be32 new_ack = bpf_htonl(ack_to_client(f, ack, acked));
		diff = csum_diff32(diff, p->tcp->ack_seq, new_ack);
		p->tcp->ack_seq = new_ack;
	}

	if (p->tcp_len > sizeof(struct tcphdr) && !only_timestamps(p, data_end))
		diff = fix_reverse_options(p, data_end, f, acked, diff);
	p->tcp->check = csum_apply(p->tcp->check, diff);
	ipv4_csum(p->iph);

	/* Connection state lives in the forward entry only, so that a FIN in
	 * each direction counts one closing connection. */
	if (p->tcp->fin || p->tcp->rst || p->tcp->syn) {
		struct flow_key fk = {
			.saddr = f->daddr,
			.daddr = f->saddr,
			.sport = f->dport,
			.dport = f->sport,
		};
		struct flow *fwd = bpf_map_lookup_elem(&flows, &fk);

		if (fwd) {
			if (p->tcp->syn && p->tcp->ack)
				fwd->state |= FLOW_ESTABLISHED;
			note_close(fwd, p->tcp, FLOW_FIN_REAL);
		}
	}
	touch(f, now);

	count(STAT_REV_PACKETS, 1);
	count(STAT_REV_BYTES, p->len);
	return transmit(ctx, ifindex);
}

/* Starts a flow for a SYN to a VIP, or returns the stat that explains why
 * the kernel gets the SYN instead. */
static __always_inline int new_flow(struct pkt *p, void *data_end, const struct vip_meta *vip)
{
	__u32 zero = 0;
	struct lb_config *cfg = bpf_map_lookup_elem(&config, &zero);

	if (!cfg || !cfg->snat_addr || (cfg->flags & CONFIG_NEW_FLOWS_OFF))
		return STAT_PASS_NEW_FLOWS_OFF;
	if (p->payload_len)
		return STAT_PASS_SYN_DATA;
	if (has_fastopen(p, data_end))
		return STAT_PASS_FAST_OPEN;

	__u64 hash;
	if (vip->flags & VIP_CLIENT_AFFINITY)
		hash = hash_client4(p->iph->saddr);
	else
		hash = hash_flow4(p->iph->saddr, p->tcp->source, p->iph->daddr, p->tcp->dest);
	if (!vip->ring_size || vip->ring_size > RING_SLOTS_MAX)
		return STAT_PASS_NO_REAL;
	__u32 slot = vip->id * RING_SLOTS_MAX + (__u32)(hash % vip->ring_size);
	__u32 *ri = bpf_map_lookup_elem(&rings, &slot);
	if (!ri)
		return STAT_PASS_NO_REAL;
	__u32 real_id = *ri;
	struct real *r = bpf_map_lookup_elem(&reals, &real_id);
	if (!r || !r->addr)
		return STAT_PASS_NO_REAL;

	__u16 port;
	if (bpf_map_pop_elem(&free_ports, &port))
		return STAT_PASS_NO_PORT;

	__u64 now = bpf_ktime_get_ns();
	struct flow_key rk = {
		.saddr = r->addr,
		.daddr = cfg->snat_addr,
		.sport = r->port,
		.dport = bpf_htons(port),
	};
	struct flow fv = {
		.saddr = p->iph->daddr,
		.daddr = p->iph->saddr,
		.sport = p->tcp->dest,
		.dport = p->tcp->source,
		.isn = bpf_ntohl(p->tcp->seq),
		.last_seen = now,
		.created = now,
		.real = real_id,
		.dir = FLOW_REVERSE,
	};

	int err = bpf_map_update_elem(&flows, &rk, &fv, BPF_NOEXIST);
	if (err) {
		bpf_map_push_elem(&free_ports, &port, 0);
		return STAT_PASS_TABLE_FULL;
	}

	struct flow_key fk = {
		.saddr = p->iph->saddr,
		.daddr = p->iph->daddr,
		.sport = p->tcp->source,
		.dport = p->tcp->dest,
	};
	fv.saddr = cfg->snat_addr;
	fv.daddr = r->addr;
	fv.sport = bpf_htons(port);
	fv.dport = r->port;
	fv.dir = FLOW_FORWARD;
	build_proxy_header(&fv, cfg, p->iph->saddr, p->tcp->source, p->iph->daddr, p->tcp->dest,
			   port);

	err = bpf_map_update_elem(&flows, &fk, &fv, BPF_NOEXIST);
	if (err) {
		bpf_map_delete_elem(&flows, &rk);
		bpf_map_push_elem(&free_ports, &port, 0);
		return STAT_PASS_TABLE_FULL;
	}

	count(STAT_NEW_FLOWS, 1);
	return -1;
}

/* Ends a forward flow and its reverse entry and returns the SNAT port. The
 * port goes back only when this call removed the forward entry, so a sweep
 * from userspace that removes the same flow cannot return it twice. */
static __always_inline void release_flow(const struct flow_key *fk, const struct flow *f)
{
	struct flow_key rk = {
		.saddr = f->daddr,
		.daddr = f->saddr,
		.sport = f->dport,
		.dport = f->sport,
	};
	__u16 port = bpf_ntohs(f->sport);

	if (bpf_map_delete_elem(&flows, fk))
		return;
	bpf_map_delete_elem(&flows, &rk);
	bpf_map_push_elem(&free_ports, &port, 0);
}

SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt p = {};

	int reason = parse_tcp4(ctx, &p);
	if (reason >= 0) {
		count(reason, 1);
		return XDP_PASS;
	}

	struct flow_key key = {
		.saddr = p.iph->saddr,
		.daddr = p.iph->daddr,
		.sport = p.tcp->source,
		.dport = p.tcp->dest,
	};
	struct flow *f = bpf_map_lookup_elem(&flows, &key);
	int syn_only = p.tcp->syn && !p.tcp->ack;

	/* A SYN with another ISN on a known flow is a new connection from a
	 * reused client port. It gets a real from the current table like any
	 * new flow, because the old real may have gone down since. */
	if (f && f->dir == FLOW_FORWARD && syn_only && bpf_ntohl(p.tcp->seq) != f->isn) {
		release_flow(&key, f);
		count(STAT_FLOWS_CLOSED, 1);
		f = NULL;
	}

	if (!f) {
		if (!syn_only || p.tcp->rst || p.tcp->fin) {
			count(STAT_PASS_NO_FLOW, 1);
			return XDP_PASS;
		}
		struct vip_key vk = {
			.addr = p.iph->daddr,
			.port = p.tcp->dest,
			.proto = IPPROTO_TCP,
		};
		struct vip_meta *vip = bpf_map_lookup_elem(&vips, &vk);
		if (!vip) {
			count(STAT_PASS_NO_FLOW, 1);
			return XDP_PASS;
		}
		reason = new_flow(&p, data_end, vip);
		if (reason >= 0) {
			count(reason, 1);
			return XDP_PASS;
		}
		f = bpf_map_lookup_elem(&flows, &key);
		if (!f) {
			count(STAT_PASS_TABLE_FULL, 1);
			return XDP_PASS;
		}
	}

	if (f->dir == FLOW_FORWARD)
		return forward(ctx, &p, f);
	return reverse(ctx, &p, f);
}
