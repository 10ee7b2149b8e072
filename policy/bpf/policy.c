// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// sextant's policy enforcement: identity-based L3/L4 decisions at the
// points where a host's sockets meet the network.
//
//   cgroup/connect4|6   egress, at connect(): a denied connect fails with EPERM
//   cgroup/sendmsg4|6   egress, unconnected UDP sends: EPERM
//   cgroup/post_bind4|6 records an endpoint's bound sockets (local servers' identity)
//   cgroup/sock_release forgets them
//   cgroup_skb/ingress  ingress: TCP SYNs and UDP datagrams before the socket sees them
//   cgroup_skb/egress   records flows leaving an endpoint (replies, local identity)
//   tc (TCX) ingress/egress on a network-namespace endpoint's interfaces
//
// Every table that changes with a policy revision exists twice (*_a,
// *_b); `config.active` says which one a program uses, so that a revision
// is switched by one write, never half-applied. Decisions where policy is
// enforced are reported through the `verdicts` ring buffer, aggregated per
// flow (one record per key and second, with a count).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "policy.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
/* linux/bpf.h of Debian 12 predates TCX (6.6) */
#define TCX_NEXT -1
#define TCX_DROP 2

#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The netns endpoint a TCX program instance serves: set per instance by
 * the loader. bpf_get_netns_cookie(skb) cannot tell: in tc programs it
 * answers the socket's netns, and an arriving packet has no socket yet. */
volatile const __u64 tcx_netns = 0;

#define PINNED __uint(pinning, LIBBPF_PIN_BY_NAME)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct policy_config);
	PINNED;
} config SEC(".maps");

#define EP_MAP(name)                                   \
	struct {                                       \
		__uint(type, BPF_MAP_TYPE_HASH);       \
		__uint(max_entries, 4096);             \
		__type(key, __u64);                    \
		__type(value, struct ep_info);         \
		PINNED;                                \
	} name SEC(".maps")

/* A slot's policy and ipcache tables: LPM tries, and hash maps holding
 * the tries' full-length entries (an exact port; a /32 or /128), looked
 * up first. An LPM lookup walks a node per branching bit, a hash lookup
 * costs one hash (connect4 ≈ 1,000 → 700 ns per run at 1,000 rules,
 * BenchmarkDecision); where a full-length entry exists it is the trie's
 * longest match, so the answer is the same. */
#define TABLE_MAP(name, kind, entries, key_type, value_type) \
	struct {                                             \
		__uint(type, kind);                          \
		__uint(max_entries, entries);                \
		__uint(map_flags, BPF_F_NO_PREALLOC);        \
		__type(key, key_type);                       \
		__type(value, value_type);                   \
		PINNED;                                      \
	} name SEC(".maps")
#define POL_MAP(name) TABLE_MAP(name, BPF_MAP_TYPE_LPM_TRIE, 262144, struct pol_key, struct pol_val)
#define IPC_MAP(name) TABLE_MAP(name, BPF_MAP_TYPE_LPM_TRIE, 65536, struct ipc_key, __u32)
#define POL_EXACT_MAP(name) TABLE_MAP(name, BPF_MAP_TYPE_HASH, 262144, struct pol_key, struct pol_val)
#define IPC_EXACT_MAP(name) TABLE_MAP(name, BPF_MAP_TYPE_HASH, 65536, struct ipc_key, __u32)

EP_MAP(eps_cg_a); /* cgroup id → endpoint */
EP_MAP(eps_cg_b);
EP_MAP(eps_ns_a); /* netns cookie → endpoint */
EP_MAP(eps_ns_b);
POL_MAP(pol_a);
POL_MAP(pol_b);
IPC_MAP(ipc_a);
IPC_MAP(ipc_b);
POL_EXACT_MAP(pol_exact_a);
POL_EXACT_MAP(pol_exact_b);
IPC_EXACT_MAP(ipc_exact_a);
IPC_EXACT_MAP(ipc_exact_b);

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct listen_key);
	__type(value, struct listen_val);
	PINNED;
} listeners SEC(".maps");

/* A bound socket's `listeners` key, for sock_release, in the socket's
 * own storage: freed with it, and a socket that was never bound (every
 * client's) costs sock_release one pointer test instead of a socket
 * cookie and a hash miss. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct listen_key);
	PINNED;
} bound SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
	PINNED;
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct report_key);
	__type(value, struct report_val);
	PINNED;
} reported SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
	PINNED;
} verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	PINNED;
} counters SEC(".maps");

/* Types bpf2go must see. */
const struct verdict_rec *unused_verdict_rec __attribute__((unused));
const enum hook *unused_hook __attribute__((unused));
const enum verdict *unused_verdict __attribute__((unused));
const enum reason *unused_reason __attribute__((unused));
const enum ep_flags *unused_ep_flags __attribute__((unused));
const enum counter *unused_counter __attribute__((unused));
const enum direction *unused_direction __attribute__((unused));

/* What one decision is about. */
struct flow {
	__u8 local[16];
	__u8 remote[16];
	__u16 local_port;
	__u16 remote_port;
	__u8 proto;
	__u8 dir;
	__u8 hook;
	__u8 _pad;
	__u32 pid;
	__u32 remote_identity;
	__u64 cgroup_id;
	__u64 sock_cookie;
};

struct decision {
	__u8 verdict;
	__u8 reason;
	__u8 match_type;
	__u8 report;
	__u32 cookie;
};

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &c);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline void set_v4(__u8 *dst, __be32 a)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &a, 4);
}

static __always_inline void set_v6(__u8 *dst, const __u32 *a)
{
	/* bpf_sock_addr and bpf_sock fields are read as 32-bit words */
	__u32 w0 = a[0], w1 = a[1], w2 = a[2], w3 = a[3];
	__builtin_memcpy(dst, &w0, 4);
	__builtin_memcpy(dst + 4, &w1, 4);
	__builtin_memcpy(dst + 8, &w2, 4);
	__builtin_memcpy(dst + 12, &w3, 4);
}

static __always_inline struct policy_config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

static __always_inline struct ep_info *ep_by_cgroup(__u32 slot, __u64 id)
{
	return slot ? bpf_map_lookup_elem(&eps_cg_b, &id) : bpf_map_lookup_elem(&eps_cg_a, &id);
}

static __always_inline struct ep_info *ep_by_netns(__u32 slot, __u64 cookie)
{
	return slot ? bpf_map_lookup_elem(&eps_ns_b, &cookie) : bpf_map_lookup_elem(&eps_ns_a, &cookie);
}

/* The endpoint of the current task: its cgroup or the closest ancestor
 * that is an endpoint (endpoints do not nest). */
static __always_inline struct ep_info *current_ep(__u32 slot, __u64 *cgid)
{
	__u64 cg = bpf_get_current_cgroup_id();
	*cgid = cg;
	struct ep_info *ep = ep_by_cgroup(slot, cg);
	if (ep)
		return ep;
	for (int level = 0; level < MAX_CGROUP_DEPTH; level++) {
		__u64 a = bpf_get_current_ancestor_cgroup_id(level);
		if (!a || a == cg)
			break;
		ep = ep_by_cgroup(slot, a);
		if (ep)
			return ep;
	}
	return 0;
}

static __always_inline struct ep_info *skb_ep(__u32 slot, struct __sk_buff *skb, __u64 *cgid)
{
	__u64 cg = bpf_skb_cgroup_id(skb);
	*cgid = cg;
	struct ep_info *ep = ep_by_cgroup(slot, cg);
	if (ep)
		return ep;
	for (int level = 0; level < MAX_CGROUP_DEPTH; level++) {
		__u64 a = bpf_skb_ancestor_cgroup_id(skb, level);
		if (!a || a == cg)
			break;
		ep = ep_by_cgroup(slot, a);
		if (ep)
			return ep;
	}
	return 0;
}

static __always_inline __u32 ipcache(__u32 slot, const __u8 *addr)
{
	struct ipc_key k = {.prefixlen = 128};
	__builtin_memcpy(k.addr, addr, 16);
	__u32 *id = slot ? bpf_map_lookup_elem(&ipc_exact_b, &k) : bpf_map_lookup_elem(&ipc_exact_a, &k);
	if (!id)
		id = slot ? bpf_map_lookup_elem(&ipc_b, &k) : bpf_map_lookup_elem(&ipc_a, &k);
	if (id)
		return *id;
	/* world-ipv4 (9) or world-ipv6 (10), as a dual-stack Cilium */
	if (addr[10] == 0xff && addr[11] == 0xff && !addr[0] && !addr[8] && !addr[9])
		return 9;
	return 10;
}

#define ID_HOST 1

/* The identity of a destination: the ipcache's, except that for the
 * host's own addresses a local endpoint's bound socket names the server. */
static __always_inline __u32 dst_identity(__u32 slot, __u64 netns, const __u8 *addr, __u16 port, __u8 proto)
{
	__u32 id = ipcache(slot, addr);
	if (id != ID_HOST)
		return id; /* an endpoint's own address, a CIDR, the world */
	struct listen_key lk = {.netns = netns, .port = port, .proto = proto};
	__builtin_memcpy(lk.addr, addr, 16);
	struct listen_val *lv = bpf_map_lookup_elem(&listeners, &lk);
	if (lv)
		return lv->identity;
	__builtin_memset(lk.addr, 0, 16);
	lv = bpf_map_lookup_elem(&listeners, &lk); /* [::]:port */
	if (lv)
		return lv->identity;
	lk.addr[10] = 0xff;
	lk.addr[11] = 0xff;
	lv = bpf_map_lookup_elem(&listeners, &lk); /* 0.0.0.0:port */
	if (lv)
		return lv->identity;
	return id;
}

static __always_inline struct pol_val *pol_lookup(__u32 slot, const struct pol_key *k)
{
	struct pol_val *v = slot ? bpf_map_lookup_elem(&pol_exact_b, k) : bpf_map_lookup_elem(&pol_exact_a, k);
	if (v)
		return v;
	return slot ? bpf_map_lookup_elem(&pol_b, k) : bpf_map_lookup_elem(&pol_a, k);
}

static __always_inline void decide(__u32 slot, const struct policy_config *cfg, const struct ep_info *ep,
				   const struct flow *f, struct decision *d)
{
	struct pol_key k = {
		.prefixlen = 96,
		.ep_id = ep->ep_id,
		.remote = f->remote_identity,
		.dir = f->dir,
		.proto = f->proto,
		.dport = bpf_htons(f->dir == DIR_EGRESS ? f->remote_port : f->local_port),
	};
	struct pol_val *spec = pol_lookup(slot, &k);
	struct pol_val *any = 0;
	if (ep->flags & (f->dir == DIR_INGRESS ? EP_ANY_REMOTE_INGRESS : EP_ANY_REMOTE_EGRESS)) {
		k.remote = 0;
		any = pol_lookup(slot, &k);
	}
	struct pol_val *hit = 0;
	if (spec && spec->deny)
		hit = spec;
	else if (any && any->deny)
		hit = any;
	else if (spec)
		hit = spec;
	else if (any)
		hit = any;

	__u32 enforced = ep->flags & (f->dir == DIR_INGRESS ? EP_ENFORCE_INGRESS : EP_ENFORCE_EGRESS);
	int deny = 0;
	d->verdict = VERDICT_FORWARDED;
	d->reason = REASON_NONE;
	d->match_type = 0;
	d->cookie = 0;
	d->report = enforced != 0;
	if (hit) {
		d->cookie = hit->cookie;
		d->match_type = hit->match_type;
		if (hit->deny) {
			deny = 1;
			d->reason = REASON_POLICY_DENY;
			d->report = 1;
		}
	} else if (enforced) {
		deny = 1;
		d->reason = REASON_POLICY_DENIED;
	}
	if (deny)
		d->verdict = (ep->flags & EP_AUDIT) || cfg->audit_all ? VERDICT_AUDIT : VERDICT_DROPPED;
}

/* emit reports a decision. 1: a record went out (UDP: or the decision
 * was counted into one). */
static __always_inline int emit(const struct policy_config *cfg, __u32 slot, const struct ep_info *ep,
				const struct flow *f, const struct decision *d)
{
	struct report_key rk = {
		.sock_cookie = f->sock_cookie,
		.ep_id = ep->ep_id,
		.dir = f->dir,
		.proto = f->proto,
		.verdict = d->verdict,
		.remote_port = f->remote_port,
		.local_port = f->local_port,
	};
	__builtin_memcpy(rk.remote, f->remote, 16);
	__u64 now = bpf_ktime_get_ns();
	__u32 n = 1;
	/* TCP: a connect() or a SYN is one connection's decision, reported
	 * each time (a retransmitted SYN, 1 s later or more, again). UDP has
	 * no connection: one record per flow key and second, with a count. */
	int aggregate = f->proto == IPPROTO_UDP;
	struct report_val *rv = aggregate ? bpf_map_lookup_elem(&reported, &rk) : 0;
	if (!aggregate) {
		/* nothing to look up */
	} else if (rv) {
		if (now - rv->last_ns < REPORT_INTERVAL_NS) {
			__sync_fetch_and_add(&rv->suppressed, 1);
			return 1;
		}
		n += rv->suppressed;
		rv->last_ns = now;
		rv->suppressed = 0;
	} else {
		struct report_val nv = {.last_ns = now};
		bpf_map_update_elem(&reported, &rk, &nv, BPF_ANY);
	}
	struct verdict_rec *r = bpf_ringbuf_reserve(&verdicts, sizeof(*r), 0);
	if (!r) {
		count(CNT_RINGBUF_FULL);
		return 0;
	}
	r->ts_ns = now;
	r->cgroup_id = f->cgroup_id;
	r->sock_cookie = f->sock_cookie;
	r->revision = cfg->revision[slot & 1];
	r->pid = f->pid;
	r->ep_id = ep->ep_id;
	r->identity = ep->identity;
	r->remote_identity = f->remote_identity;
	r->cookie = d->cookie;
	r->count = n;
	__builtin_memcpy(r->local_addr, f->local, 16);
	__builtin_memcpy(r->remote_addr, f->remote, 16);
	r->local_port = f->local_port;
	r->remote_port = f->remote_port;
	r->proto = f->proto;
	r->dir = f->dir;
	r->verdict = d->verdict;
	r->reason = d->reason;
	r->match_type = d->match_type;
	r->hook = f->hook;
	__builtin_memset(r->_pad, 0, sizeof(r->_pad));
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP); /* the reader polls: a wakeup per record costs more than the record */
	return 1;
}

static __always_inline int is_reply(const __u8 *peer, __u16 peer_port, __u16 local_port, __u8 proto, __u32 ep_id, int need_ep)
{
	struct flow_key fk = {.client_port = peer_port, .server_port = local_port, .proto = proto};
	__builtin_memcpy(fk.client, peer, 16);
	struct flow_val *fv = bpf_map_lookup_elem(&flows, &fk);
	if (!fv)
		return 0;
	return !need_ep || fv->client_ep == ep_id;
}

/* Egress at the socket layer (connect, sendmsg). 1: allow, 0: EPERM. */
static __always_inline int sock_egress(struct bpf_sock_addr *ctx, struct flow *f)
{
	struct policy_config *cfg = get_config();
	if (!cfg)
		return 1;
	__u32 slot = cfg->active & 1;
	struct ep_info *ep = current_ep(slot, &f->cgroup_id);
	if (!ep)
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (sk)
		f->local_port = sk->src_port;
	if (f->hook == HOOK_SENDMSG && f->local_port &&
	    is_reply(f->remote, f->remote_port, f->local_port, f->proto, 0, 0))
		return 1; /* answering a peer that was let in */
	f->dir = DIR_EGRESS;
	f->pid = bpf_get_current_pid_tgid() >> 32;
	f->sock_cookie = bpf_get_socket_cookie(ctx);
	f->remote_identity = dst_identity(slot, bpf_get_netns_cookie(ctx), f->remote, f->remote_port, f->proto);
	struct decision d;
	decide(slot, cfg, ep, f, &d);
	if (d.report)
		emit(cfg, slot, ep, f, &d);
	return d.verdict == VERDICT_DROPPED ? 0 : 1;
}

static __always_inline int l4_ok(__u32 protocol)
{
	return protocol == IPPROTO_TCP || protocol == IPPROTO_UDP;
}

SEC("cgroup/connect4")
int sextant_connect4(struct bpf_sock_addr *ctx)
{
	if (!l4_ok(ctx->protocol))
		return 1;
	struct flow f = {.hook = HOOK_CONNECT, .proto = ctx->protocol};
	set_v4(f.remote, ctx->user_ip4);
	f.remote_port = bpf_ntohs(ctx->user_port);
	return sock_egress(ctx, &f);
}

SEC("cgroup/connect6")
int sextant_connect6(struct bpf_sock_addr *ctx)
{
	if (!l4_ok(ctx->protocol))
		return 1;
	struct flow f = {.hook = HOOK_CONNECT, .proto = ctx->protocol};
	__u32 a[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	set_v6(f.remote, a);
	f.remote_port = bpf_ntohs(ctx->user_port);
	return sock_egress(ctx, &f);
}

SEC("cgroup/sendmsg4")
int sextant_sendmsg4(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	struct flow f = {.hook = HOOK_SENDMSG, .proto = IPPROTO_UDP};
	set_v4(f.remote, ctx->user_ip4);
	f.remote_port = bpf_ntohs(ctx->user_port);
	return sock_egress(ctx, &f);
}

SEC("cgroup/sendmsg6")
int sextant_sendmsg6(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	struct flow f = {.hook = HOOK_SENDMSG, .proto = IPPROTO_UDP};
	__u32 a[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	set_v6(f.remote, a);
	f.remote_port = bpf_ntohs(ctx->user_port);
	return sock_egress(ctx, &f);
}

/* post_bind: the address fields a program may read depend on its attach
 * type (src_ip4 only in post_bind4, src_ip6 only in post_bind6). */
static __always_inline int post_bind(struct bpf_sock *sk, int family)
{
	if (!l4_ok(sk->protocol))
		return 1;
	struct policy_config *cfg = get_config();
	if (!cfg)
		return 1;
	__u64 cg;
	struct ep_info *ep = current_ep(cfg->active & 1, &cg);
	if (!ep)
		return 1;
	struct listen_key lk = {.netns = bpf_get_netns_cookie(sk), .port = sk->src_port, .proto = sk->protocol};
	if (family == AF_INET) {
		set_v4(lk.addr, sk->src_ip4);
	} else {
		__u32 a[4] = {sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3]};
		set_v6(lk.addr, a);
	}
	struct listen_val lv = {.identity = ep->identity, .ep_id = ep->ep_id};
	bpf_map_update_elem(&listeners, &lk, &lv, BPF_ANY);
	struct listen_key *b = bpf_sk_storage_get(&bound, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (b)
		*b = lk;
	return 1;
}

SEC("cgroup/post_bind4")
int sextant_post_bind4(struct bpf_sock *sk) { return post_bind(sk, AF_INET); }

SEC("cgroup/post_bind6")
int sextant_post_bind6(struct bpf_sock *sk) { return post_bind(sk, AF_INET6); }

/* sock_release cannot read the socket's address: `bound` remembers it. */
SEC("cgroup/sock_release")
int sextant_sock_release(struct bpf_sock *sk)
{
	struct listen_key *lk = bpf_sk_storage_get(&bound, sk, 0, 0);
	if (!lk)
		return 1;
	struct listen_key k = *lk;
	bpf_map_delete_elem(&listeners, &k);
	return 1;
}

/* A parsed packet. */
struct pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 tcp_flags;
};

/* parse_copy reads the IP and L4 headers at off with copies (for headers
 * not in the linear data). 1: a TCP or UDP packet (first fragment or
 * unfragmented, no IPv6 extension headers). */
static __noinline int parse_copy(struct __sk_buff *skb, __u32 off, __u16 eth_proto, struct pkt *p)
{
	__u32 l4;
	if (eth_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)))
			return 0;
		if (ip.frag_off & bpf_htons(0x1fff))
			return 0; /* later fragments carry no ports */
		set_v4(p->saddr, ip.saddr);
		set_v4(p->daddr, ip.daddr);
		p->proto = ip.protocol;
		l4 = off + (ip.ihl & 0xf) * 4;
	} else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)))
			return 0;
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
		p->proto = ip6.nexthdr;
		l4 = off + sizeof(ip6);
	} else {
		return 0;
	}
	if (!l4_ok(p->proto))
		return 0;
	__u8 hdr[14];
	if (p->proto == IPPROTO_TCP ? bpf_skb_load_bytes(skb, l4, hdr, 14) : bpf_skb_load_bytes(skb, l4, hdr, 4))
		return 0;
	p->sport = (__u16)hdr[0] << 8 | hdr[1];
	p->dport = (__u16)hdr[2] << 8 | hdr[3];
	p->tcp_flags = p->proto == IPPROTO_TCP ? hdr[13] : 0;
	return 1;
}

/* parse reads the IP and L4 headers at off, as parse_copy, in place
 * (direct packet access) when they are in the linear data: no helper
 * call (tcx_ingress ≈ 40 ns less per SYN, BenchmarkDecision). */
static __always_inline int parse(struct __sk_buff *skb, __u32 off, __u16 eth_proto, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u8 *l4;
	if (eth_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + off;
		if ((void *)(ip + 1) > end)
			return parse_copy(skb, off, eth_proto, p);
		if (ip->frag_off & bpf_htons(0x1fff))
			return 0;
		p->proto = ip->protocol;
		if (!l4_ok(p->proto))
			return 0;
		set_v4(p->saddr, ip->saddr);
		set_v4(p->daddr, ip->daddr);
		l4 = (__u8 *)ip + (ip->ihl & 0xf) * 4;
	} else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;
		if ((void *)(ip6 + 1) > end)
			return parse_copy(skb, off, eth_proto, p);
		p->proto = ip6->nexthdr;
		if (!l4_ok(p->proto))
			return 0;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		l4 = (__u8 *)(ip6 + 1);
	} else {
		return 0;
	}
	if ((void *)(l4 + 14) > end)
		return parse_copy(skb, off, eth_proto, p); /* a UDP datagram this short has 4 bytes: copied too */
	p->sport = (__u16)l4[0] << 8 | l4[1];
	p->dport = (__u16)l4[2] << 8 | l4[3];
	p->tcp_flags = p->proto == IPPROTO_TCP ? l4[13] : 0;
	return 1;
}

/* established_tcp: the cheap first check of every packet program. A TCP
 * segment that is not a connection's first SYN needs no decision (the SYN
 * had it) and nothing recorded: read its flags in place (direct packet
 * access, no helper call) and leave. 0 also when it cannot tell. */
static __always_inline int established_tcp(struct __sk_buff *skb, __u32 off, __u16 eth_proto)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u8 *tcp;
	if (eth_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + off;
		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || (ip->frag_off & bpf_htons(0x1fff)))
			return 0;
		tcp = (__u8 *)ip + (ip->ihl & 0xf) * 4;
	} else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;
		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
			return 0;
		tcp = (__u8 *)(ip6 + 1);
	} else {
		return 0;
	}
	if ((void *)(tcp + 14) > end)
		return 0;
	return (tcp[13] & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN;
}

static __always_inline int new_flow(const struct pkt *p)
{
	if (p->proto == IPPROTO_TCP)
		return (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
	return 1; /* UDP: every datagram (replies are recognised by `flows`) */
}

/* Ingress of a packet into an endpoint. 1: pass, 0: drop. */
static __always_inline int pkt_ingress(const struct policy_config *cfg, __u32 slot, const struct ep_info *ep,
				       const struct pkt *p, __u8 hook, __u64 cgroup_id)
{
	if (!new_flow(p))
		return 1; /* established TCP: decided at its SYN */
	if (p->proto == IPPROTO_UDP && is_reply(p->daddr, p->dport, p->sport, p->proto, ep->ep_id, 1))
		return 1; /* a reply to a flow this endpoint started */
	struct flow f = {
		.local_port = p->dport,
		.remote_port = p->sport,
		.proto = p->proto,
		.dir = DIR_INGRESS,
		.hook = hook,
		.cgroup_id = cgroup_id,
	};
	__builtin_memcpy(f.local, p->daddr, 16);
	__builtin_memcpy(f.remote, p->saddr, 16);
	struct flow_key fk = {.client_port = p->sport, .server_port = p->dport, .proto = p->proto};
	__builtin_memcpy(fk.client, p->saddr, 16);
	struct flow_val *fv = bpf_map_lookup_elem(&flows, &fk);
	f.remote_identity = fv && fv->client_identity ? fv->client_identity : ipcache(slot, p->saddr);
	struct decision d;
	decide(slot, cfg, ep, &f, &d);
	int reported = d.report && emit(cfg, slot, ep, &f, &d);
	/* A local client's TCP entry has served once its decision is
	 * reported: the record carries the identity on to user space (which
	 * drains the ring rather than look the entry up), and a retransmitted
	 * SYN records it again. Left to the LRU, every new connection paid
	 * for evicting an old one: skb_egress 479–1115 ns per run in a full
	 * map, 249–370 with the delete (4 runs per connection, bpf_stats under
	 * BenchmarkConnect, 100 rules). */
	if (fv && reported && p->proto == IPPROTO_TCP)
		bpf_map_delete_elem(&flows, &fk);
	if (d.verdict == VERDICT_DROPPED)
		return 0;
	/* UDP: the server's replies (sendmsg, TCX egress) are recognised by it. */
	if (!fv && p->proto == IPPROTO_UDP) {
		struct flow_val nv = {};
		if (bpf_map_update_elem(&flows, &fk, &nv, BPF_ANY))
			count(CNT_FLOWS_FULL);
	}
	return 1;
}

/* Records a flow leaving a client endpoint. */
static __always_inline void record_egress(const struct ep_info *ep, const struct pkt *p)
{
	struct flow_key fk = {.client_port = p->sport, .server_port = p->dport, .proto = p->proto};
	__builtin_memcpy(fk.client, p->saddr, 16);
	if (p->proto == IPPROTO_UDP) {
		/* every datagram passes here: write only what is new */
		struct flow_val *fv = bpf_map_lookup_elem(&flows, &fk);
		if (fv && fv->client_ep == ep->ep_id && fv->client_identity == ep->identity)
			return;
	}
	struct flow_val nv = {.client_ep = ep->ep_id, .client_identity = ep->identity};
	if (bpf_map_update_elem(&flows, &fk, &nv, BPF_ANY))
		count(CNT_FLOWS_FULL);
}

SEC("cgroup_skb/ingress")
int sextant_skb_ingress(struct __sk_buff *skb)
{
	if (established_tcp(skb, 0, skb->protocol))
		return 1;
	struct policy_config *cfg = get_config();
	if (!cfg)
		return 1;
	__u32 slot = cfg->active & 1;
	__u64 cg;
	struct ep_info *ep = skb_ep(slot, skb, &cg);
	if (!ep)
		return 1;
	struct pkt p = {};
	if (!parse(skb, 0, skb->protocol, &p))
		return 1;
	return pkt_ingress(cfg, slot, ep, &p, HOOK_CGROUP_SKB, cg);
}

SEC("cgroup_skb/egress")
int sextant_skb_egress(struct __sk_buff *skb)
{
	if (established_tcp(skb, 0, skb->protocol))
		return 1;
	struct policy_config *cfg = get_config();
	if (!cfg)
		return 1;
	__u64 cg;
	struct ep_info *ep = skb_ep(cfg->active & 1, skb, &cg);
	if (!ep)
		return 1;
	struct pkt p = {};
	if (parse(skb, 0, skb->protocol, &p) && new_flow(&p))
		record_egress(ep, &p);
	return 1;
}

static __always_inline int tc_parse(struct __sk_buff *skb, struct pkt *p)
{
	struct ethhdr *eth = (void *)(long)skb->data;
	if ((void *)(eth + 1) <= (void *)(long)skb->data_end)
		return parse(skb, sizeof(*eth), eth->h_proto, p);
	struct ethhdr copy;
	if (bpf_skb_load_bytes(skb, 0, &copy, sizeof(copy)))
		return 0;
	return parse_copy(skb, sizeof(copy), copy.h_proto, p);
}

static __always_inline int tc_established_tcp(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > (void *)(long)skb->data_end)
		return 0;
	return established_tcp(skb, sizeof(*eth), eth->h_proto);
}

SEC("tc")
int sextant_tcx_ingress(struct __sk_buff *skb)
{
	if (tc_established_tcp(skb))
		return TCX_NEXT;
	struct policy_config *cfg = get_config();
	if (!cfg)
		return TCX_NEXT;
	__u32 slot = cfg->active & 1;
	struct ep_info *ep = ep_by_netns(slot, tcx_netns);
	if (!ep)
		return TCX_NEXT;
	struct pkt p = {};
	if (!tc_parse(skb, &p))
		return TCX_NEXT;
	return pkt_ingress(cfg, slot, ep, &p, HOOK_TCX_INGRESS, 0) ? TCX_NEXT : TCX_DROP;
}

SEC("tc")
int sextant_tcx_egress(struct __sk_buff *skb)
{
	if (tc_established_tcp(skb))
		return TCX_NEXT;
	struct policy_config *cfg = get_config();
	if (!cfg)
		return TCX_NEXT;
	__u32 slot = cfg->active & 1;
	struct ep_info *ep = ep_by_netns(slot, tcx_netns);
	if (!ep)
		return TCX_NEXT;
	struct pkt p = {};
	if (!tc_parse(skb, &p) || !new_flow(&p))
		return TCX_NEXT;
	if (p.proto == IPPROTO_UDP && is_reply(p.daddr, p.dport, p.sport, p.proto, 0, 0))
		return TCX_NEXT; /* answering a peer that was let in */
	struct flow f = {
		.local_port = p.sport,
		.remote_port = p.dport,
		.proto = p.proto,
		.dir = DIR_EGRESS,
		.hook = HOOK_TCX_EGRESS,
	};
	__builtin_memcpy(f.local, p.saddr, 16);
	__builtin_memcpy(f.remote, p.daddr, 16);
	f.remote_identity = dst_identity(slot, cfg->host_netns, p.daddr, p.dport, p.proto);
	struct decision d;
	decide(slot, cfg, ep, &f, &d);
	if (d.report)
		emit(cfg, slot, ep, &f, &d);
	if (d.verdict == VERDICT_DROPPED)
		return TCX_DROP;
	record_egress(ep, &p);
	return TCX_NEXT;
}
