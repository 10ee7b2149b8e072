// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// Per-connection state and what the TCP socket tells about a chunk: its
// place in the byte stream, whether the connection is new, its addresses.
// Both capture paths keep the same struct conn_state: socket capture in
// the socket's own storage (BPF_MAP_TYPE_SK_STORAGE, freed with it),
// syscall capture in an LRU keyed by (tgid, fd).
#pragma once

#include "emit.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOCK_STREAM 1
#define RCV_SHUTDOWN 1

#define PROTO_NOT_HTTP 0xff /* negative cache: never look at this socket again */
#define DETECT_TRIES 4      /* chunks tried for protocol detection before giving up */

/* Parse status of one direction. */
enum dir_status {
	DS_NONE = 0,      /* not HTTP (yet) */
	DS_OK = 1,        /* in step with the stream: walking */
	DS_UNALIGNED = 2, /* HTTP/2 midstream or after a loss: looking for a frame boundary */
	DS_DEAD = 3,      /* gave up after EV_PARSE_ERR: ship nothing */
};

/* HTTP/2 walker state of one direction. Spans chunks: Go's server reads a
 * frame's header and its payload with separate read()s. */
struct h2_dir {
	__u8 in_payload;   /* 1: walking a payload, 0: collecting a frame header */
	__u8 type;         /* current frame: type */
	__u8 flags;        /* current frame: flags */
	__u8 hdr_have;     /* frame header bytes collected so far */
	__u8 pad_len;      /* DATA: pad length (PADDED) */
	__u8 pfx_have;     /* DATA: bytes of a gRPC prefix collected so far */
	__u8 stream_known; /* DATA: the stream had gRPC state in `streams` */
	__u8 want_preface; /* the next chunk must start with the client preface */
	__u8 streams_used; /* this direction ever stored gRPC state in `streams` */
	__u8 acc_on;       /* acc_* hold DATA not reported yet */
	__u8 acc_flags;    /* END_STREAM of the last summed frame */
	__u8 _pad;
	__u32 skip;       /* bytes to skip before the next frame header (client preface) */
	__u32 stream;     /* current frame: stream id */
	__u32 flen;       /* current frame: payload length */
	__u32 off;        /* current frame: payload bytes already walked */
	__u32 msg_left;   /* DATA: bytes left of the current gRPC message */
	__u32 grpc_msgs;  /* DATA: gRPC prefixes that began in the current frame */
	__u32 acc_stream; /* DATA summary: stream, data bytes and gRPC messages */
	__u32 acc_bytes;
	__u32 acc_msgs;
	__u8 hdr[16]; /* frame header (9 used; 16 so a masked index is always in bounds) */
	__u8 pfx[8];  /* gRPC prefix (5 used) */
	__u8 val[8];  /* RST_STREAM/GOAWAY: first payload bytes */
};

/* HTTP/1 framing state of one direction. */
struct h1_dir {
	__u8 mode;     /* enum h1_mode */
	__u8 line;     /* enum h1_line: what the current header line is */
	__u8 cl_i;     /* bytes of "content-length:" matched at this line's start */
	__u8 te_i;     /* bytes of "transfer-encoding:" matched */
	__u8 ch_i;     /* bytes of "chunked" matched in a Transfer-Encoding value */
	__u8 bits;     /* H1B_* */
	__u8 sl_have;  /* bytes of the start line kept in sl */
	__u8 _pad;
	__u32 line_len; /* bytes of the current line so far */
	__u32 head_len; /* bytes of the current start line and header block so far */
	__u64 left;     /* body (Content-Length) or chunk-data bytes still to come */
	__u64 cl;       /* Content-Length value being parsed */
	__u64 hidden;   /* bytes of this direction that no entry stands for yet */
	__u8 sl[16];    /* start of the start line: method or status */
};

/* One direction of a connection: kept small, it is read and written back
 * for every chunk, and every cache line of it that misses costs ~100 ns
 * on the target VM at 5000 req/s. */
struct dir_state {
	__u32 seq;      /* seq of the next entry */
	__u32 next_tcp; /* TCP sequence number the next chunk starts at */
	__u64 last_ts;  /* time of the last chunk that left something pending */
	__u8 tcp_known; /* next_tcp is set */
	__u8 status;    /* enum dir_status (HTTP/2) */
	__u8 _pad[6];
	union {
		struct h2_dir h2;
		struct h1_dir h1;
	};
} __attribute__((aligned(64))); /* its own two cache lines: the directions of
				   a socket may run on two CPUs */

struct conn_state {
	__u64 conn_id;    /* 0 until EV_CONN */
	__u64 file;       /* syscall capture: struct file * behind the fd, tells fd reuse apart */
	__u64 proc_start; /* syscall capture: start time of the process (pid reuse) */
	__u32 pid;        /* tgid that owned the connection when it was recognised */
	__u32 fd;         /* socket capture: 1 + the last fd proven to be this socket */
	__u32 _pad;
	__u8 proto;       /* enum conn_proto, 0 = undecided, PROTO_NOT_HTTP */
	__u8 tries;       /* chunks that matched no protocol */
	__u8 h1_upgraded; /* HTTP/1: 101 or CONNECT: both directions stop */
	__u8 h1_req_dir;  /* HTTP/1: 1 + direction requests travel in, 0 = unknown */
	__u32 h1_reqs;    /* HTTP/1: requests seen, responses seen, and which */
	__u32 h1_resps;   /* requests were HEAD (bit i % 64): their responses have no body */
	__u64 h1_head_bits;
	struct dir_state d[2]; /* index = enum ev_dir */
};

/* bpf_rdonly_cast: read-only view of a kernel address as a BTF type. Loads
 * through it are plain (fault-checked) loads, not helper calls. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

static __always_inline struct tcp_sock *tcp_of(__u64 sk)
{
	return bpf_rdonly_cast((void *)sk, bpf_core_type_id_kernel(struct tcp_sock));
}

/* Only TCP over IPv4/IPv6 is traced. Plain loads: this runs on every
 * socket read/write of the host (unix, netlink, UDP...). */
static __always_inline int sk_is_tcp(__u64 sk)
{
	struct sock *s = bpf_rdonly_cast((void *)sk, bpf_core_type_id_kernel(struct sock));
	__u16 family = s->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	return s->sk_protocol == IPPROTO_TCP && s->sk_type == SOCK_STREAM;
}

/* The TCP sequence number a chunk of len bytes started at: the stream
 * position of the chunk. The sender's write_seq and the receiver's
 * copied_seq have moved past it when the hooks run. */
static __always_inline __u32 chunk_tcp_start(__u64 sk, __u32 dir, __u32 len)
{
	struct tcp_sock *tp = tcp_of(sk);
	if (dir == DIR_EGRESS)
		return tp->write_seq - len;
	/* A read that takes the last data and the FIN with it moves
	 * copied_seq one further, over the FIN (tcp_recvmsg). */
	__u32 copied = tp->copied_seq;
	if ((tp->inet_conn.icsk_inet.sk.sk_shutdown & RCV_SHUTDOWN) && copied == tp->rcv_nxt)
		copied--;
	return copied - len;
}

/* When the bytes of a write left: the hook runs after the copy, and a
 * response may already have been read on another thread by then (a
 * loopback peer answers within the sender's syscall). When everything
 * written has been transmitted, the last transmit stamp (same clock as
 * bpf_ktime_get_ns) lies between the start of the write and now. */
static __always_inline __u64 egress_time(__u64 sk, __u64 now)
{
	struct tcp_sock *tp = tcp_of(sk);
	__u64 sent = tp->tcp_wstamp_ns;
	if (tp->snd_nxt == tp->write_seq && sent && sent <= now)
		return sent;
	return now;
}

/* Bytes the process has read from the socket so far: everything received
 * minus what still waits in the receive queue. */
static __always_inline __u64 bytes_consumed(__u64 sk)
{
	struct tcp_sock *tp = tcp_of(sk);
	return tp->bytes_received - (__u32)(tp->rcv_nxt - tp->copied_seq);
}

/* At most n bytes were ever written on the socket: sent (a retransmission
 * counts again, so never fewer) and queued, each at most n. Not their sum:
 * while a write is being transmitted on another CPU, bytes_sent already
 * counts bytes that write_seq - snd_nxt still does (a 24-byte preface was
 * seen as 48 written). */
static __always_inline int written_at_most(__u64 sk, __u32 n)
{
	struct tcp_sock *tp = tcp_of(sk);
	return tp->bytes_sent <= n && (__u32)(tp->write_seq - tp->snd_nxt) <= n;
}

/* Global connection id counter. */
__u64 next_conn_id = 0;

/* Names the connection once, even when both directions' first chunks
 * race on two CPUs: the loser takes the winner's id. Returns 1 for the
 * caller that assigned it (and ships EV_CONN). */
static __always_inline int conn_name(struct conn_state *c)
{
	__u64 id = __sync_fetch_and_add(&next_conn_id, 1) + 1;
	return __sync_val_compare_and_swap(&c->conn_id, 0, id) == 0;
}
