// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// Both ends of a loopback connection traced: the bytes one end writes are
// the bytes the other end reads, so the reader need not walk them again.
// The writer offers its egress direction (peers map, keyed by its
// addresses and network namespace) from the TCP sequence number where its
// walk begins; the reader, at the first chunk of its ingress direction,
// claims the offer when its chunk starts exactly there, ships one EV_PEER
// and from then on returns at once for that direction: no user read, no
// walk, no record. User space turns the writer's egress entries into the
// reader's ingress events (same kinds, numbers and order; the writer's
// times: when the bytes reached the reader's socket).
//
// Exactness: offer and claim meet in one compare-and-swap on a word that
// holds the writer's connection id (unique), so a claim succeeds only on
// the offer it read and never after the writer closed it. The writer
// closes its offer at its OFFER_RECORDS-th egress record, before reserving
// it: a claim that won is then ahead of that record in the ring (its
// EV_PEER was reserved before its compare-and-swap), so user space, which
// keeps the records flagged CHUNK_OFFERED, knows whether to turn them into
// the reader's events once the first record without the flag arrives. A
// reader that cannot claim (no offer, another position, too late, no
// room for EV_PEER) walks its bytes itself, as without a traced peer.
#pragma once

#include "chunk.h"

/* Set by user space before load: 1 to offer and claim (socket capture). */
const volatile __u32 mirror_on = 0;

#define OFFER_RECORDS 4 /* the offer closes at the writer's 4th egress record */

#define OFFER_CLAIMED (1ull << 63)
#define OFFER_CLOSED (1ull << 62)
#define IFF_LOOPBACK 0x8

/* One end of a TCP connection as the writer sees it (the reader looks it
 * up with its own addresses swapped). IPv4-mapped IPv6 addresses are kept
 * as IPv4: the two ends of a dual-stack connection see different families. */
struct peer_key {
	__u32 netns;
	__u16 lport;
	__u16 rport;
	__u8 laddr[16];
	__u8 raddr[16];
};

struct peer_offer {
	__u64 word;     /* the writer's conn id, | OFFER_CLAIMED or OFFER_CLOSED once decided */
	__u32 from_seq; /* TCP sequence number the writer's egress walk begins at */
	__u32 _pad;
};

/* Offers live from the writer's first chunk to the reader's claim or the
 * writer's 4th egress record: few at any time. An evicted offer is only a
 * claim that does not happen. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct peer_key);
	__type(value, struct peer_offer);
} peers SEC(".maps");

/* Does the socket's route go through the loopback device (127/8, ::1 and
 * the host's own addresses)? */
static __always_inline int sk_loopback(__u64 sk)
{
	struct sock *s = bpf_rdonly_cast((void *)sk, bpf_core_type_id_kernel(struct sock));
	struct dst_entry *dst = s->sk_dst_cache;
	if (!dst)
		return 0;
	struct net_device *dev = dst->dev;
	if (!dev)
		return 0;
	return dev->flags & IFF_LOOPBACK;
}

static __always_inline void addr_of(__u8 *dst, const __u8 *v6, __u32 v4, int is_v6)
{
	__builtin_memset(dst, 0, 16);
	if (is_v6) {
		__u32 w0, w1, w2, w3;
		__builtin_memcpy(&w0, v6, 4);
		__builtin_memcpy(&w1, v6 + 4, 4);
		__builtin_memcpy(&w2, v6 + 8, 4);
		__builtin_memcpy(&w3, v6 + 12, 4);
		if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff)) {
			__builtin_memcpy(dst, &w3, 4); /* IPv4-mapped */
			return;
		}
		__builtin_memcpy(dst, &w0, 4);
		__builtin_memcpy(dst + 4, &w1, 4);
		__builtin_memcpy(dst + 8, &w2, 4);
		__builtin_memcpy(dst + 12, &w3, 4);
		return;
	}
	__builtin_memcpy(dst, &v4, 4);
}

/* The key of the socket's own egress (swap: of the other end's egress, the
 * direction this socket reads). */
static __always_inline void peer_key_of(__u64 sk, struct peer_key *k, int swap)
{
	struct sock *s = bpf_rdonly_cast((void *)sk, bpf_core_type_id_kernel(struct sock));
	struct net *net = s->__sk_common.skc_net.net;
	int v6 = s->__sk_common.skc_family == AF_INET6;
	__u8 *l = swap ? k->raddr : k->laddr;
	__u8 *r = swap ? k->laddr : k->raddr;
	__u16 lport = s->__sk_common.skc_num;
	__u16 rport = bpf_ntohs(s->__sk_common.skc_dport);
	k->netns = net ? net->ns.inum : 0;
	k->lport = swap ? rport : lport;
	k->rport = swap ? lport : rport;
	addr_of(l, s->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, s->__sk_common.skc_rcv_saddr, v6);
	addr_of(r, s->__sk_common.skc_v6_daddr.in6_u.u6_addr8, s->__sk_common.skc_daddr, v6);
}

/* The key of the current chunk's connection (swap: of its other end). */
static __always_inline void work_peer_key(struct work *w, struct peer_key *k, int swap)
{
	__builtin_memset(k, 0, sizeof(*k));
	peer_key_of(w->sk, k, swap);
}

/* Offers the egress direction of the connection just named (w->conn_id),
 * whose walk begins at TCP sequence number from. Returns 1 when offered. */
__noinline int offer_egress(__u32 slot, __u32 from)
{
	struct work *w = work_get(slot);
	if (!w || !sk_loopback(w->sk))
		return 0;
	struct peer_key k;
	work_peer_key(w, &k, 0);
	struct peer_offer v = {.word = w->conn_id, .from_seq = from};
	return bpf_map_update_elem(&peers, &k, &v, BPF_ANY) == 0;
}

/* The writer closes its offer: claimed or not, it is decided from here. */
__noinline int offer_close(__u32 slot)
{
	struct work *w = work_get(slot);
	if (!w)
		return 0;
	struct peer_key k;
	work_peer_key(w, &k, 0);
	struct peer_offer *v = bpf_map_lookup_elem(&peers, &k);
	if (!v)
		return 0;
	__u64 word = w->conn_id;
	__sync_val_compare_and_swap(&v->word, word, word | OFFER_CLOSED);
	if ((v->word & ~(OFFER_CLAIMED | OFFER_CLOSED)) == word)
		bpf_map_delete_elem(&peers, &k);
	return 0;
}

/* The first chunk of an ingress direction, starting at TCP sequence number
 * start: claims the other end's offer if it begins there. Returns 1 when
 * claimed (EV_PEER shipped): the direction is never walked. */
__noinline int claim_ingress(__u32 slot, __u32 start)
{
	struct work *w = work_get(slot);
	if (!w)
		return 0;
	struct peer_key k;
	work_peer_key(w, &k, 1);
	struct peer_offer *v = bpf_map_lookup_elem(&peers, &k);
	if (!v)
		return 0;
	__u64 word = v->word;
	if ((word & (OFFER_CLAIMED | OFFER_CLOSED)) || v->from_seq != start)
		return 0;
	/* Room for EV_PEER first: a claim user space never learns of would
	 * lose the direction. */
	struct ev_peer *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	if (__sync_val_compare_and_swap(&v->word, word, word | OFFER_CLAIMED) != word) {
		bpf_ringbuf_discard(e, 0);
		return 0;
	}
	e->hdr.ts_ns = chunk_time(w);
	e->hdr.conn_id = w->conn_id;
	e->hdr.pid = w->pid;
	e->hdr.tid = w->tid;
	e->hdr.seq = 0;
	e->hdr.data_len = 0;
	e->hdr.kind = EV_PEER;
	e->hdr.dir = DIR_INGRESS;
	e->peer_conn_id = word;
	bpf_ringbuf_submit(e, rb_flags_reserved(sizeof(*e)));
	return 1;
}
