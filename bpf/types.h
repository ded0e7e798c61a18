/* Structs and enums shared with the Go control plane through bpf2go. */
#ifndef TIDEGATE_TYPES_H
#define TIDEGATE_TYPES_H

#include <linux/types.h>

/* Slots reserved per VIP in the rings array; a VIP's Maglev table may be
 * smaller but not larger. */
#define RING_SLOTS_MAX 65537

/* PROXY v2 header for TCP over IPv4: 16-byte preamble, 12 bytes of
 * addresses and a PP2_TYPE_UNIQUE_ID TLV with a 16-byte value, byte for
 * byte what the userspace engine writes (l4/proxyheader). */
#define PROXY_UID_LEN 16
#define PROXY_HDR_LEN 47
/* Room for the header plus the zero byte that pads it to an even length
 * for checksumming, rounded up to keep struct flow free of padding. */
#define PROXY_HDR_SPACE 52

enum flow_dir {
	FLOW_FORWARD = 1, /* client to real: key is client -> VIP */
	FLOW_REVERSE = 2, /* real to client: key is real -> SNAT address */
};

/* Bits of flow.state. */
enum flow_state {
	FLOW_ESTABLISHED = 1, /* the real's SYN-ACK passed */
	FLOW_FIN_CLIENT = 2,
	FLOW_FIN_REAL = 4,
	FLOW_RST = 8,
};

/* Per-CPU counters, one slot each. Go names them in metrics.go. */
enum stat {
	STAT_FWD_PACKETS,
	STAT_FWD_BYTES,
	STAT_REV_PACKETS,
	STAT_REV_BYTES,
	STAT_NEW_FLOWS,
	STAT_HEADER_INSERTS,
	STAT_FLOWS_CLOSED,
	STAT_PASS_NOT_IPV4,
	STAT_PASS_NOT_TCP,
	STAT_PASS_IP_OPTIONS,
	STAT_PASS_FRAGMENT,
	STAT_PASS_NO_FLOW,
	STAT_PASS_SYN_DATA,
	STAT_PASS_FAST_OPEN,
	STAT_PASS_NO_REAL,
	STAT_PASS_NO_PORT,
	STAT_PASS_TABLE_FULL,
	STAT_PASS_NEW_FLOWS_OFF,
	STAT_PASS_BAD_TCP,
	STAT_DROP_NO_NEIGH,
	STAT_DROP_NO_ROUTE,
	STAT_DROP_FRAG_NEEDED,
	STAT_DROP_NO_TX_PORT,
	STAT_DROP_HEADROOM,
	STAT_MAX,
};

/* Bits of lb_config.flags. */
enum config_flag {
	CONFIG_NEW_FLOWS_OFF = 1, /* hand every new flow to the kernel */
};

/* Runtime settings, slot 0 of the config array. */
struct lb_config {
	__be32 snat_addr;
	__u16 port_min; /* host order, for the control plane's bookkeeping */
	__u16 port_max;
	__u32 flags;
	__u32 pad;
	__u8 node_id[8]; /* first half of every PROXY unique ID */
};

struct vip_key {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct vip_meta {
	__u32 id;        /* selects the ring: slots id*RING_SLOTS_MAX .. +ring_size */
	__u32 ring_size; /* prime, at most RING_SLOTS_MAX */
	__u32 flags;     /* VIP_CLIENT_AFFINITY */
};

#define VIP_CLIENT_AFFINITY 1

struct real {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

/* Slots of the next-hop cache per CPU, a power of two. */
#define NEXTHOP_SLOTS 4096

/* One cached bpf_fib_lookup result. A hit needs every input of the lookup
 * (daddr, saddr, iif, tos) to match. */
struct nexthop {
	__be32 daddr;
	__be32 saddr;
	__u32 iif;     /* ingress ifindex */
	__u32 gen;     /* nexthop_gen when filled */
	__u64 expires; /* bpf_ktime_get_coarse_ns */
	__u32 oif;     /* egress ifindex */
	__u16 max_len; /* largest IPv4 total length the lookup checked against the MTU */
	__u8 tos;
	__u8 pad;
	__u8 dmac[6];
	__u8 smac[6];
	__u32 pad2;
};

/* A flow table key is the 4-tuple as it appears on the wire. */
struct flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
};

/* One direction of a NATed connection. Both directions share the layout;
 * the reverse entry leaves the header fields zero. */
struct flow {
	__be32 saddr; /* rewritten source address and port */
	__be32 daddr; /* rewritten destination address and port */
	__be16 sport;
	__be16 dport;
	__u32 isn;       /* client's initial sequence number, host order */
	__u64 last_seen; /* bpf_ktime_get_ns of the latest packet, coarse */
	__u64 created;
	__u32 real;      /* index into reals */
	__u32 hdr_csum;  /* one's complement sum of hdr, unfolded */
	__u8 dir;        /* enum flow_dir */
	__u8 state;      /* enum flow_state bits, forward entry only */
	__u8 hdr_acked;  /* the real acknowledged the whole PROXY header */
	__u8 pad;
	__u8 hdr[PROXY_HDR_SPACE];
};

#endif
