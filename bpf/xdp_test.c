//go:build ignore

/* Test-only XDP programs: a pass-through for veth peers, and a one-time
 * drop that simulates packet loss on kernels without netem. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

/* A rule drops the next `remaining` IPv4 TCP segments to dport whose
 * payload length lies within [min_payload, max_payload]. */
struct drop_rule {
	__u32 remaining;
	__u16 dport; /* host order */
	__u16 pad;
	__u32 min_payload;
	__u32 max_payload;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drop_rule);
} drop_rules SEC(".maps");

/* Frames dropped so far, for the test to check that the drop happened. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

/* Native XDP on a veth delivers frames redirected to it only when its peer
 * runs an XDP program, and this one passes everything. */
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int xdp_drop_once(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end || iph->protocol != IPPROTO_TCP || iph->ihl != 5)
		return XDP_PASS;
	struct tcphdr *tcp = (void *)(iph + 1);
	if ((void *)(tcp + 1) > data_end)
		return XDP_PASS;

	struct drop_rule *r = bpf_map_lookup_elem(&drop_rules, &zero);
	if (!r || !r->remaining || bpf_ntohs(tcp->dest) != r->dport)
		return XDP_PASS;
	__u32 payload = bpf_ntohs(iph->tot_len) - sizeof(*iph) - tcp->doff * 4;
	if (payload < r->min_payload || payload > r->max_payload)
		return XDP_PASS;

	/* Two CPUs may race for the last drop; the fetch-and-subtract decides,
	 * and the loser undoes its decrement. */
	if ((__s32)__sync_fetch_and_sub(&r->remaining, 1) <= 0) {
		__sync_fetch_and_add(&r->remaining, 1);
		return XDP_PASS;
	}
	__u64 *n = bpf_map_lookup_elem(&dropped, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	return XDP_DROP;
}
