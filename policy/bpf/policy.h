// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// The wire format between sextant's policy programs (policy.c) and user
// space (policy/datapath). bpf2go generates the Go mirror of every type
// named with -type in policy/datapath/gen.go: keep this file the single
// source of truth.
#pragma once

#include <linux/types.h>

#define MAX_CGROUP_DEPTH 16 /* cgroup ancestor levels searched for an endpoint */
#define REPORT_INTERVAL_NS 1000000000ULL /* one verdict per flow key per second */

enum direction {
	DIR_INGRESS = 0,
	DIR_EGRESS = 1,
};

/* struct ep_info.flags */
enum ep_flags {
	EP_ENFORCE_INGRESS = 1, /* ingress is default deny */
	EP_ENFORCE_EGRESS = 2,  /* egress is default deny */
	EP_AUDIT = 4,           /* decide and report, never drop */
	/* The direction's table has entries for any remote identity (remote
	 * 0): without one, decide() skips that LPM lookup (connect4 ≈ 150 ns
	 * less at 1,000 rules, BenchmarkDecision). */
	EP_ANY_REMOTE_INGRESS = 8,
	EP_ANY_REMOTE_EGRESS = 16,
};

enum verdict {
	VERDICT_FORWARDED = 0,
	VERDICT_DROPPED = 1,
	VERDICT_AUDIT = 2, /* would have been dropped; audit mode let it pass */
};

enum reason {
	REASON_NONE = 0,
	REASON_POLICY_DENIED = 1, /* default deny: no rule allowed it (Hubble POLICY_DENIED) */
	REASON_POLICY_DENY = 2,   /* a deny rule matched (Hubble POLICY_DENY) */
};

/* Where the decision was taken. */
enum hook {
	HOOK_CONNECT = 1,     /* cgroup/connect4|6: the caller gets EPERM */
	HOOK_SENDMSG = 2,     /* cgroup/sendmsg4|6 (unconnected UDP): EPERM */
	HOOK_CGROUP_SKB = 3,  /* cgroup_skb/ingress: the packet is dropped */
	HOOK_TCX_INGRESS = 4, /* TCX ingress on a netns endpoint's interface */
	HOOK_TCX_EGRESS = 5,  /* TCX egress on a netns endpoint's interface */
};

/* An endpoint as the programs know it (maps eps_cg_*, eps_ns_*). */
struct ep_info {
	__u32 ep_id;    /* local endpoint number: the policy key's first field */
	__u32 identity; /* its security identity */
	__u32 flags;    /* enum ep_flags */
	__u32 _pad;
};

/* Longest-prefix key of the policy tables (pol_a, pol_b). Full length
 * is 96 bits; an entry's prefix covers ep_id, remote, dir (72 bits), then
 * proto (80) and the top bits of dport (BE). remote 0 = any identity. */
struct pol_key {
	__u32 prefixlen;
	__u32 ep_id;
	__u32 remote;
	__u8 dir;
	__u8 proto;
	__be16 dport;
};

struct pol_val {
	__u8 deny;
	__u8 match_type; /* Cilium's monitor API PolicyMatch* numbers */
	__u16 _pad;
	__u32 cookie;    /* user space's index of the rules behind this entry */
};

/* Longest-prefix key of the ipcache (ipc_a, ipc_b): IPv4 as ::ffff:a.b.c.d. */
struct ipc_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Global settings and the active revision (array map `config`, one entry).
 * User space fills the inactive slot, writes its revision, then flips
 * `active`: a program reads `active` once and uses that slot only. */
struct policy_config {
	__u32 active; /* 0: maps *_a, 1: maps *_b */
	__u32 audit_all;
	__u64 revision[2];
	__u64 host_netns; /* cookie of the host's network namespace */
};

/* A bound socket of an endpoint (map `listeners`), so that a local
 * client's connect() to 127.0.0.1:port knows the server's endpoint. */
struct listen_key {
	__u64 netns;
	__u8 addr[16]; /* :: for a wildcard bind */
	__u16 port;    /* host order */
	__u8 proto;
	__u8 _pad[5];
};

struct listen_val {
	__u32 identity;
	__u32 ep_id;
};

/* A flow seen leaving a client endpoint or admitted into a server
 * endpoint (map `flows`): replies are recognised by it, and a server
 * learns a local client's identity from it. */
struct flow_key {
	__u8 client[16];
	__u16 client_port; /* host order */
	__u16 server_port;
	__u8 proto;
	__u8 _pad[3];
};

struct flow_val {
	__u32 client_ep;       /* 0 when the client is not an endpoint */
	__u32 client_identity; /* 0 when unknown */
};

/* Aggregation of verdicts (map `reported`). */
struct report_key {
	__u64 sock_cookie; /* 0 for packet hooks */
	__u32 ep_id;
	__u8 dir;
	__u8 proto;
	__u8 verdict;
	__u8 _pad;
	__u8 remote[16];
	__u16 remote_port;
	__u16 local_port;
	__u32 _pad2;
};

struct report_val {
	__u64 last_ns;
	__u32 suppressed; /* decisions not reported since last_ns */
	__u32 _pad;
};

/* One decision, as shipped through the ring buffer `verdicts`. */
struct verdict_rec {
	__u64 ts_ns;       /* bpf_ktime_get_ns() */
	__u64 cgroup_id;   /* of the task (connect/sendmsg) or the socket (cgroup_skb) */
	__u64 sock_cookie;
	__u64 revision;
	__u32 pid;         /* tgid; 0 for packet hooks */
	__u32 ep_id;
	__u32 identity;
	__u32 remote_identity;
	__u32 cookie;      /* rules behind the entry; 0: default */
	__u32 count;       /* decisions this record stands for (1 + suppressed) */
	__u8 local_addr[16];  /* IPv4 as ::ffff:a.b.c.d; :: when not known yet */
	__u8 remote_addr[16];
	__u16 local_port;  /* host order; 0 when not known yet (connect) */
	__u16 remote_port;
	__u8 proto;
	__u8 dir;          /* enum direction */
	__u8 verdict;      /* enum verdict */
	__u8 reason;       /* enum reason */
	__u8 match_type;
	__u8 hook;         /* enum hook */
	__u8 _pad[6];
};

/* Per-CPU counters (array `counters`). */
enum counter {
	CNT_RINGBUF_FULL = 0, /* a verdict record could not be reserved */
	CNT_FLOWS_FULL = 1,   /* a flow could not be recorded */
	CNT_MAX = 4,
};
