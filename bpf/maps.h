/* BPF maps of the XDP balancer. The control plane resizes and pins them. */
#ifndef TIDEGATE_MAPS_H
#define TIDEGATE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"

/* Sizes here are defaults for the object file; the loader overrides the
 * max_entries of flows, free_ports and rings from configuration. */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct vip_key);
	__type(value, struct vip_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct real);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} reals SEC(".maps");

/* Maglev tables of all VIPs, RING_SLOTS_MAX slots per VIP id. Each slot is
 * an index into reals. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16 * RING_SLOTS_MAX);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rings SEC(".maps");

/* NOTE: a plain hash, not an LRU hash. An LRU could evict one direction of
 * a NAT pair and keep the other, which would leak the SNAT port. Expiry is
 * the control plane's sweep, and a full table sends new flows to the
 * kernel. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flows SEC(".maps");

/* Free SNAT source ports, host order. New flows pop one; the control
 * plane's sweep pushes it back when the flow expires. */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 4096);
	__type(value, __u16);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} free_ports SEC(".maps");

/* Interfaces the balancer may redirect to, keyed by ifindex. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tx_ports SEC(".maps");

/* Cached bpf_fib_lookup results, direct-mapped by destination address,
 * one copy per CPU so that no entry is written by two CPUs at once. The map
 * is not pinned, so a new program starts with an empty cache. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NEXTHOP_SLOTS);
	__type(key, __u32);
	__type(value, struct nexthop);
} nexthops SEC(".maps");

/* Slot 0 is the next-hop generation. The control plane increments it on
 * every link, address, route and neighbour change, which invalidates every
 * entry of nexthops. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} nexthop_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

static __always_inline void count(__u32 stat, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &stat);

	if (v)
		*v += n;
}

#endif
