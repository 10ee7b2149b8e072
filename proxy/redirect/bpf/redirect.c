// SPDX-License-Identifier: GPL-2.0
// Connect-time redirect to the node proxy, keeping the original
// destination for it.
//
// cgroup/connect4 and connect6 rewrite a TCP connect() to a redirected
// address (services) into a connect() to the proxy's listener and note
// the original destination under the socket's cookie. sockops, at
// TCP_CONNECT (the local port is bound by then), moves the note to the
// client's local address: the proxy sees that address as the accepted
// connection's peer. cgroup/getsockopt answers getsockopt(SOL_IP,
// SO_ORIGINAL_DST) on the proxy's accepted socket from that note, as
// netfilter would: stock Envoy's original_dst listener filter and the Go
// forwarder read it the same way.
//
// Nothing runs on the path of a process that makes no connect() or
// getsockopt(SOL_IP, SO_ORIGINAL_DST); every other call returns at the
// first test. Sockets carrying the proxy's mark (its upstream side) are
// never redirected, so the proxy does not loop back to itself.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOL_IP 0
#define SO_ORIGINAL_DST 80

char LICENSE[] SEC("license") = "GPL";

// An address: IPv6, or IPv4 mapped (::ffff:a.b.c.d); both in network
// byte order.
struct addr {
	__u32 ip6[4];
	__u16 port;
	__u16 pad;
};

// The proxy's upstream sockets carry this mark (SO_MARK); 0: none.
volatile const __u32 skip_mark = 0;

// Redirected destination → the proxy listener connections go to.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct addr);
	__type(value, struct addr);
} services SEC(".maps");

// Socket cookie → original destination, from connect() to TCP_CONNECT.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct addr);
} by_cookie SEC(".maps");

// Client's local address → original destination, for the proxy.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct addr);
	__type(value, struct addr);
} by_client SEC(".maps");

// Counters: [0] redirected connects, [1] original destinations answered.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 i)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &i);
	if (c)
		(*c)++;
}

static __always_inline void v4mapped(struct addr *a, __u32 ip4)
{
	a->ip6[0] = 0;
	a->ip6[1] = 0;
	a->ip6[2] = bpf_htonl(0xffff);
	a->ip6[3] = ip4;
}

static __always_inline int is_v4mapped(const struct addr *a)
{
	return a->ip6[0] == 0 && a->ip6[1] == 0 && a->ip6[2] == bpf_htonl(0xffff);
}

// lookup returns the proxy listener for a connect() to dst, noting dst
// under the socket's cookie; NULL when the connect is not redirected.
static __always_inline struct addr *lookup(struct bpf_sock_addr *ctx, struct addr *dst)
{
	if (ctx->protocol != IPPROTO_TCP)
		return NULL;
	if (skip_mark) {
		struct bpf_sock *sk = ctx->sk;
		if (sk && sk->mark == skip_mark)
			return NULL;
	}
	struct addr *proxy = bpf_map_lookup_elem(&services, dst);
	if (!proxy)
		return NULL;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&by_cookie, &cookie, dst, BPF_ANY))
		return NULL; // no note, no redirect: the proxy could not route it
	count(0);
	return proxy;
}

SEC("cgroup/connect4")
int redirect_connect4(struct bpf_sock_addr *ctx)
{
	struct addr dst = {};
	v4mapped(&dst, ctx->user_ip4);
	dst.port = (__u16)ctx->user_port;
	struct addr *proxy = lookup(ctx, &dst);
	if (!proxy || !is_v4mapped(proxy))
		return 1;
	ctx->user_ip4 = proxy->ip6[3];
	ctx->user_port = proxy->port;
	return 1;
}

SEC("cgroup/connect6")
int redirect_connect6(struct bpf_sock_addr *ctx)
{
	struct addr dst = {};
	dst.ip6[0] = ctx->user_ip6[0];
	dst.ip6[1] = ctx->user_ip6[1];
	dst.ip6[2] = ctx->user_ip6[2];
	dst.ip6[3] = ctx->user_ip6[3];
	dst.port = (__u16)ctx->user_port;
	struct addr *proxy = lookup(ctx, &dst);
	if (!proxy)
		return 1;
	ctx->user_ip6[0] = proxy->ip6[0];
	ctx->user_ip6[1] = proxy->ip6[1];
	ctx->user_ip6[2] = proxy->ip6[2];
	ctx->user_ip6[3] = proxy->ip6[3];
	ctx->user_port = proxy->port;
	return 1;
}

SEC("sockops")
int redirect_sockops(struct bpf_sock_ops *skops)
{
	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct addr *dst = bpf_map_lookup_elem(&by_cookie, &cookie);
	if (!dst)
		return 1;
	// Every field read on its own: clang would otherwise pick between
	// local_ip4 and local_ip6[3] by a computed context offset, which the
	// verifier refuses.
	__u32 family = skops->family, ip4 = skops->local_ip4;
	__u32 a0 = skops->local_ip6[0], a1 = skops->local_ip6[1], a2 = skops->local_ip6[2];
	asm volatile("" ::: "memory");
	__u32 a3 = skops->local_ip6[3];
	struct addr local = {};
	if (family == AF_INET) {
		v4mapped(&local, ip4);
	} else {
		local.ip6[0] = a0;
		local.ip6[1] = a1;
		local.ip6[2] = a2;
		local.ip6[3] = a3;
	}
	local.port = bpf_htons((__u16)skops->local_port); // local_port is in host order
	struct addr orig = *dst;
	bpf_map_update_elem(&by_client, &local, &orig, BPF_ANY);
	bpf_map_delete_elem(&by_cookie, &cookie);
	return 1;
}

struct sockaddr_in4 {
	__u16 family;
	__u16 port;
	__u32 addr;
	__u8 zero[8];
};

SEC("cgroup/getsockopt")
int redirect_getsockopt(struct bpf_sockopt *ctx)
{
	if (ctx->level != SOL_IP || ctx->optname != SO_ORIGINAL_DST)
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk || sk->family != AF_INET)
		return 1;
	// The accepted socket's peer is the client's local address.
	struct addr peer = {};
	v4mapped(&peer, sk->dst_ip4);
	peer.port = (__u16)sk->dst_port;
	struct addr *orig = bpf_map_lookup_elem(&by_client, &peer);
	if (!orig || !is_v4mapped(orig))
		return 1;
	struct sockaddr_in4 *sin = ctx->optval;
	if ((void *)(sin + 1) > ctx->optval_end)
		return 1;
	sin->family = AF_INET;
	sin->port = orig->port;
	sin->addr = orig->ip6[3];
	__builtin_memset(sin->zero, 0, sizeof(sin->zero));
	ctx->optlen = sizeof(*sin);
	// Two 32-bit context stores: without the barrier clang merges them
	// into one 64-bit store, which the verifier refuses.
	asm volatile("" ::: "memory");
	ctx->retval = 0;
	count(1);
	return 1;
}
