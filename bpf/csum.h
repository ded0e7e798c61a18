/* Internet checksum helpers: incremental updates (RFC 1624) and the IPv4
 * header checksum. */
#ifndef TIDEGATE_CSUM_H
#define TIDEGATE_CSUM_H

#include <linux/types.h>
#include <linux/ip.h>

#include "types.h"

/* All sums work on values as they lie in memory. The one's complement sum
 * does not depend on byte order, so no value is swapped. */

static __always_inline __u32 csum_add(__u32 sum, __u32 add)
{
	sum += add;
	return sum + (sum < add);
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* Adds the change of a 32-bit field to the running difference diff. */
static __always_inline __u32 csum_diff32(__u32 diff, __u32 from, __u32 to)
{
	return csum_add(csum_add(diff, ~from), to);
}

static __always_inline __u32 csum_diff16(__u32 diff, __u16 from, __u16 to)
{
	return csum_add(csum_add(diff, (__u16)~from), to);
}

/* Adds the change of a 32-bit field that starts at byte offset off from the
 * start of the checksummed data. A field at an odd offset straddles 16-bit
 * words, and its contribution to the sum is the byte-swapped one. */
static __always_inline __u32 csum_diff32_at(__u32 diff, __u32 off, __u32 from, __u32 to)
{
	__u16 d = csum_fold(csum_diff32(0, from, to));

	if (off & 1)
		d = (__u16)((d >> 8) | (d << 8));
	return csum_add(diff, d);
}

static __always_inline __u32 csum_diff16_at(__u32 diff, __u32 off, __u16 from, __u16 to)
{
	__u16 d = csum_fold(csum_diff16(0, from, to));

	if (off & 1)
		d = (__u16)((d >> 8) | (d << 8));
	return csum_add(diff, d);
}

/* Applies a running difference to a stored checksum. */
static __always_inline __u16 csum_apply(__u16 check, __u32 diff)
{
	__u32 sum = csum_add((__u16)~check, diff);

	return (__u16)~csum_fold(sum);
}

/* Recomputes the checksum of an option-free IPv4 header. */
static __always_inline void ipv4_csum(struct iphdr *iph)
{
	__u16 *w = (__u16 *)iph;
	__u32 sum = 0;

	iph->check = 0;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*iph) / 2); i++)
		sum += w[i];
	iph->check = (__u16)~csum_fold(sum);
}

/* Returns the unfolded sum of n bytes, n even. */
static __always_inline __u32 csum_bytes(const __u8 *p, int n)
{
	const __u16 *w = (const __u16 *)p;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < PROXY_HDR_SPACE / 2; i++) {
		if (2 * i >= n)
			break;
		sum += w[i];
	}
	return sum;
}

#endif
