// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// sextant kernel side: syscall tracepoints see the bytes every process
// reads from and writes to its TCP sockets, recognise HTTP/2 and HTTP/1.x,
// walk HTTP/2 frames and ship compact records (events.h) through one ring
// buffer. HPACK is never decoded here: header block bytes are shipped raw and
// in order, user space owns the decoding.
//
// Why syscall tracepoints: kprobes and fentry are not available on the
// target kernels (lockdown, CONFIG_KPROBES=n); sys_enter/sys_exit give the
// user buffer and, on exit, the exact number of bytes transferred.
//
// Verifier budget: the frame walker is a bpf_loop callback calling global
// (separately verified) functions, and all working state lives in one
// per-CPU scratch value (struct work) that every function looks up itself.
// That keeps every function small for the verifier.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "events.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOCK_STREAM 1
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define MSG_PEEK 2

#define MAX_IOV 16          /* iovec segments walked per readv/writev/recvmsg/sendmsg */
#define MAX_STEPS (1 << 16) /* walker steps per segment (a step = header, piece, prefix...) */
#define DETECT_TRIES 4      /* chunks tried for protocol detection before giving up */
#define PROTO_NOT_HTTP 0xff /* negative cache: never look at this socket again */
#define H2_PREFACE_LEN 24
#define H2_DEFAULT_MAX_FRAME 16384

/* HTTP/2 frame types and flags (RFC 9113 §6). */
#define F_DATA 0
#define F_HEADERS 1
#define F_PRIORITY 2
#define F_RST_STREAM 3
#define F_SETTINGS 4
#define F_PUSH_PROMISE 5
#define F_PING 6
#define F_GOAWAY 7
#define F_WINDOW_UPDATE 8
#define F_CONTINUATION 9

#define FL_END_STREAM 0x1
#define FL_ACK 0x1
#define FL_END_HEADERS 0x4
#define FL_PADDED 0x8
#define FL_PRIORITY 0x20

/* Parse status of one direction of an HTTP/2 connection. */
enum dir_status {
	DS_NONE = 0,      /* not HTTP/2 (yet) */
	DS_OK = 1,        /* aligned on frame boundaries: walking */
	DS_UNALIGNED = 2, /* midstream connection, this direction not aligned yet: ship nothing */
	DS_DEAD = 3,      /* gave up after EV_PARSE_ERR: ship nothing */
};

/* Frame walker state of one direction. Spans syscalls: Go's server reads
 * a frame header and its payload with separate read()s. */
struct dir_state {
	__u32 seq;       /* next ev_header.seq of this direction */
	__u32 skip;      /* bytes to skip before the next frame header (client preface) */
	__u32 stream;    /* current frame: stream id */
	__u32 flen;      /* current frame: payload length */
	__u32 off;       /* current frame: payload bytes already walked */
	__u32 msg_left;  /* DATA: bytes left of the current gRPC message */
	__u32 grpc_msgs; /* DATA: gRPC prefixes that began in the current frame */
	__u8 status;     /* enum dir_status */
	__u8 in_payload; /* 1: walking a payload, 0: collecting a frame header */
	__u8 type;       /* current frame: type */
	__u8 flags;      /* current frame: flags */
	__u8 hdr_have;   /* frame header bytes collected so far */
	__u8 pad_len;    /* DATA: pad length (PADDED) */
	__u8 pfx_have;   /* DATA: bytes of a gRPC prefix collected so far */
	__u8 stream_known; /* DATA: the stream had gRPC state in `streams` */
	__u8 want_preface; /* the next chunk must start with the client preface */
	__u8 streams_used; /* this direction ever stored gRPC state in `streams` */
	__u8 _pad2[6];
	__u8 hdr[16];    /* frame header (9 used; 16 so a masked index is always in bounds) */
	__u8 pfx[8];     /* gRPC prefix (5 used) */
	__u8 val[8];     /* RST_STREAM/GOAWAY: first payload bytes */
};

struct conn_key {
	__u32 tgid;
	__u32 fd;
};

struct conn_state {
	__u64 conn_id; /* 0 until EV_CONN */
	__u64 file;    /* struct file * behind the fd: tells fd reuse we did not see from a live entry */
	__u64 proc_start; /* start time of the process: an entry left by an exited process
	                     (they age out of the LRU) never passes for a new one with its pid */
	__u8 proto;    /* enum conn_proto, 0 = undecided, PROTO_NOT_HTTP */
	__u8 tries;    /* chunks that matched no protocol */
	__u8 _pad[6];
	struct dir_state d[2]; /* index = enum ev_dir */
};

struct stream_key {
	__u64 conn_id;
	__u32 stream;
	__u32 dir;
};

/* gRPC length-prefix position of one stream direction across DATA frames. */
struct grpc_state {
	__u32 msg_left;
	__u8 pfx_have;
	__u8 _pad[3];
	__u8 pfx[8];
};

/* Syscall arguments saved at sys_enter for sys_exit. */
struct io_args {
	__u64 ts;     /* sys_enter time: when a write began */
	__u64 buf;    /* buffer, or iovec array when vectored */
	__u32 fd;
	__u32 iovcnt;
	__u32 dir;    /* enum ev_dir */
	__u16 vectored;
	__u16 armed;  /* set at sys_enter, cleared at sys_exit */
};

/* Per-CPU working state of the syscall being processed. */
struct work {
	struct dir_state st; /* copy of the direction's state, written back at the end */
	__u64 conn_id;
	__u64 ts;       /* record time: egress when the write began, ingress when the read returned */
	__u64 enter_ts; /* sys_enter time of the syscall being processed */
	__u64 base; /* user address of the segment being walked */
	__u32 len;  /* its length */
	__u32 pos;  /* bytes of it consumed */
	__u32 pid;
	__u32 tid;
	__u32 dir;
	__u32 h1_got; /* HTTP/1 head bytes copied so far */
	__u8 peek[32]; /* detection / alignment scratch */
};

struct h2_rec {
	struct ev_h2 h;
	__u8 data[MAX_DATA];
};

struct h1_rec {
	struct ev_h1 h;
	__u8 data[2 * H1_HEAD]; /* 2x: a masked offset plus a bounded length always fits */
};

/* Maps. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20); /* user space sets Options.RingBufferBytes */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} excluded SEC(".maps");

/* Per-thread syscall arguments, in task-local storage: reached from the
 * task itself (no hashing, no table to fill up), freed with the thread. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct io_args);
} io_args SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, struct conn_state);
} conns SEC(".maps");

/* Processes that own (or owned) a recognised connection: only their exit
 * is worth a walk over `conns`. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} http_procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct stream_key);
	__type(value, struct grpc_state);
} streams SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct work);
} work_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct h2_rec);
} h2_buf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct h1_rec);
} h1_buf SEC(".maps");

/* Set by user space before load: wake the reader once per 2^wakeup_shift
 * bytes queued; it polls on a short timer for the rest (a wakeup per
 * record costs more than the record). */
const volatile __u32 wakeup_shift = 18; /* 256 KiB */

/* Global connection id counter. */
__u64 next_conn_id = 0;

/* Keep the ABI types in BTF so bpf2go generates their Go mirrors. */
const struct ev_header *unused_ev_header __attribute__((unused));
const struct ev_conn *unused_ev_conn __attribute__((unused));
const struct ev_h2 *unused_ev_h2 __attribute__((unused));
const struct ev_h1 *unused_ev_h1 __attribute__((unused));
const struct ev_parse_err *unused_ev_parse_err __attribute__((unused));
const enum ev_kind *unused_ev_kind __attribute__((unused));
const enum ev_dir *unused_ev_dir __attribute__((unused));
const enum conn_proto *unused_conn_proto __attribute__((unused));
const enum parse_err *unused_parse_err __attribute__((unused));
const enum drop_reason *unused_drop_reason __attribute__((unused));

static const char h2_preface[H2_PREFACE_LEN] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static __always_inline __u32 min32(__u32 a, __u32 b)
{
	return a < b ? a : b;
}

static __always_inline struct work *work_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&work_map, &zero);
}

static __always_inline void count_drop(__u32 reason)
{
	__u64 *v = bpf_map_lookup_elem(&drops, &reason);
	if (v)
		(*v)++;
}

/* Batched wakeups (see wakeup_shift): a record wakes the reader when it
 * takes the queued data across a multiple of 2^wakeup_shift bytes. Waking
 * on every record above one threshold would cost an IPI per record (an
 * MSR write, trapped by the hypervisor on a VM) exactly when the reader is
 * already behind; crossing any multiple, not just the first, means that a
 * wakeup missed by two CPUs racing past a boundary is retried at the next
 * one instead of waiting for the reader's poll timer. The kernel accounts
 * a record as its size plus an 8-byte header, rounded up to 8. */
static __always_inline __u64 rb_wake(__u64 before, __u64 after)
{
	return before >> wakeup_shift != after >> wakeup_shift ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline __u64 rb_footprint(__u32 size)
{
	return (size + 8 + 7) & ~7;
}

/* For bpf_ringbuf_output: the queue before the record goes in. */
static __always_inline __u64 rb_flags_before(__u32 size)
{
	__u64 before = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	return rb_wake(before, before + rb_footprint(size));
}

/* For bpf_ringbuf_submit: the queue already holds the reserved record. */
static __always_inline __u64 rb_flags_reserved(__u32 size)
{
	__u64 after = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 fp = rb_footprint(size);
	return rb_wake(after >= fp ? after - fp : 0, after);
}

static __always_inline __u32 be32(const __u8 *p)
{
	return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

static __always_inline void fill_hdr(struct ev_header *h, struct work *w, __u8 kind, __u16 data_len,
				     int counted)
{
	h->ts_ns = w->ts;
	h->conn_id = w->conn_id;
	h->pid = w->pid;
	h->tid = w->tid;
	/* EV_CONN/EV_CLOSE are per connection: they carry seq 0 and do not
	 * advance the direction counters, so data records of each direction
	 * are numbered 0, 1, 2, ... and a gap is always loss. */
	h->seq = counted ? w->st.seq++ : 0;
	h->data_len = data_len;
	h->kind = kind;
	h->dir = w->dir;
}

/* ---------------------------------------------------------------------
 * Socket identity
 */

/* bpf_rdonly_cast: read-only view of a kernel address as a BTF type. Loads
 * through it are plain (fault-checked) loads, not bpf_probe_read_kernel()
 * helper calls: these run on every read/write of the host. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* The struct file behind fd in the current task, 0 if none. Runs on every
 * read/write of every process: direct BTF loads, one helper call. */
static __always_inline __u64 fd_file(__u32 fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct files_struct *files = task->files;
	if (!files)
		return 0;
	struct fdtable *fdt = files->fdt;
	if (!fdt)
		return 0;
	if (fd >= fdt->max_fds)
		return 0;
	/* fdt->fd[fd] without a helper call: the verifier allows no variable
	 * offset on a BTF pointer, so view the slot as a struct whose first
	 * member is a struct file * (kiocb.ki_filp). */
	__u64 slot = (__u64)fdt->fd + (__u64)fd * sizeof(struct file *);
	struct kiocb *k = bpf_rdonly_cast((void *)slot, bpf_core_type_id_kernel(struct kiocb));
	return (__u64)k->ki_filp;
}

static __always_inline struct sock *file_sock(__u64 file)
{
	struct file *f = (void *)file;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(sock, sk);
}

/* Is the file a socket? Runs on every read/write of the host that is not
 * on a known connection (files, pipes, ttys...): two loads, no helper. */
static __always_inline int is_socket(__u64 file)
{
	struct file *f = bpf_rdonly_cast((void *)file, bpf_core_type_id_kernel(struct file));
	struct inode *inode = f->f_inode;
	return inode && (inode->i_mode & S_IFMT) == S_IFSOCK;
}

/* Only TCP over IPv4/IPv6 is traced (file is a socket). */
static __always_inline int is_tcp(__u64 file)
{
	struct file *f = bpf_rdonly_cast((void *)file, bpf_core_type_id_kernel(struct file));
	struct socket *sock = bpf_rdonly_cast(f->private_data, bpf_core_type_id_kernel(struct socket));
	if (!sock)
		return 0;
	struct sock *sk = sock->sk;
	if (!sk)
		return 0;
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	return sk->sk_protocol == IPPROTO_TCP && sk->sk_type == SOCK_STREAM;
}

/* ---------------------------------------------------------------------
 * Records
 */

/* proto_dir: enum conn_proto in the low byte, the preface direction above. */
__noinline int emit_conn(__u64 file, __u32 fd, __u32 proto_dir)
{
	struct work *w = work_get();
	if (!w)
		return 0;
	struct ev_conn *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(DROP_RINGBUF_FULL);
		return 0;
	}
	fill_hdr(&e->hdr, w, EV_CONN, 0, 0);
	struct sock *sk = file_sock(file);
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->family = family;
	e->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	__builtin_memset(e->laddr, 0, sizeof(e->laddr));
	__builtin_memset(e->raddr, 0, sizeof(e->raddr));
	if (family == AF_INET) {
		__u32 a = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__builtin_memcpy(e->laddr, &a, 4);
		a = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(e->raddr, &a, 4);
	} else {
		BPF_CORE_READ_INTO(&e->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&e->raddr, sk, __sk_common.skc_v6_daddr);
	}
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->fd = fd;
	e->proto = proto_dir & 0xff;
	e->preface_dir = (proto_dir >> 8) & 1;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, rb_flags_reserved(sizeof(*e)));
	return 0;
}

/* One EV_H2_FRAME from the current frame state; n bytes of data from the
 * user address at (HEADERS/CONTINUATION/PUSH_PROMISE piece, SETTINGS). */
__noinline int emit_h2(__u64 at, __u32 n, __u32 value, __u32 value2)
{
	__u32 zero = 0;
	struct work *w = work_get();
	struct h2_rec *r = bpf_map_lookup_elem(&h2_buf, &zero);
	if (!w || !r)
		return 0;
	barrier_var(n);
	if (n > MAX_DATA)
		n = MAX_DATA;
	if (n && bpf_probe_read_user(r->data, n, (void *)at))
		n = 0;
	fill_hdr(&r->h.hdr, w, EV_H2_FRAME, n, 1);
	r->h.stream_id = w->st.stream;
	r->h.frame_len = w->st.flen;
	r->h.offset = w->st.off;
	r->h.grpc_msgs = w->st.grpc_msgs;
	r->h.value = value;
	r->h.value2 = value2;
	r->h.type = w->st.type;
	r->h.flags = w->st.flags;
	r->h.static_idx = 0;
	r->h._pad = 0;
	if (w->st.type == F_HEADERS && w->st.off == 0) {
		/* A cheap hint for user space (e.g. :method GET = 2, :status 200 = 8)
		 * when the block starts with an indexed static-table field. */
		__u32 skip = 0;
		if (w->st.flags & FL_PADDED)
			skip += 1;
		if (w->st.flags & FL_PRIORITY)
			skip += 5;
		if (skip < n) {
			__u8 b = r->data[skip & 7];
			__u8 idx = b & 0x7f;
			if ((b & 0x80) && idx >= 2 && idx <= 61)
				r->h.static_idx = idx;
		}
	}
	if (bpf_ringbuf_output(&events, r, sizeof(struct ev_h2) + n, rb_flags_before(sizeof(struct ev_h2) + n)))
		count_drop(DROP_RINGBUF_FULL);
	return 0;
}

/* This direction stops parsing: HPACK/stream state beyond this point is
 * unknown to user space anyway. */
__noinline int stop_dir(__u32 reason)
{
	struct work *w = work_get();
	if (!w)
		return 1;
	w->st.status = DS_DEAD;
	count_drop(DROP_PARSE_STOP);
	struct ev_parse_err *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		w->st.seq++;
		count_drop(DROP_RINGBUF_FULL);
		return 1;
	}
	fill_hdr(&e->hdr, w, EV_PARSE_ERR, 0, 1);
	e->reason = reason;
	__builtin_memcpy(e->frame, w->st.hdr, 9);
	e->_pad[0] = e->_pad[1] = e->_pad[2] = 0;
	bpf_ringbuf_submit(e, rb_flags_reserved(sizeof(*e)));
	return 1;
}

__noinline int emit_close(__u64 conn_id, __u32 pid, __u32 kind)
{
	struct work *w = work_get();
	if (!w)
		return 0;
	struct ev_header *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(DROP_RINGBUF_FULL);
		return 0;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->conn_id = conn_id;
	e->pid = pid;
	e->tid = (__u32)bpf_get_current_pid_tgid();
	e->seq = 0;
	e->data_len = 0;
	e->kind = kind;
	e->dir = 0;
	bpf_ringbuf_submit(e, rb_flags_reserved(sizeof(*e)));
	return 0;
}

/* Appends up to H1_HEAD - w->h1_got bytes of one segment to the head. */
__noinline int h1_head_seg(__u64 ptr, __u32 len)
{
	__u32 zero = 0;
	struct work *w = work_get();
	struct h1_rec *r = bpf_map_lookup_elem(&h1_buf, &zero);
	if (!w || !r)
		return 0;
	__u32 got = w->h1_got;
	if (got >= H1_HEAD)
		return 0;
	__u32 n = min32(len, H1_HEAD - got);
	/* barrier_var: keep bounds checks the compiler proves redundant,
	 * the verifier needs them. */
	barrier_var(n);
	if (n > H1_HEAD)
		n = H1_HEAD;
	barrier_var(got);
	got &= H1_HEAD - 1;
	if (bpf_probe_read_user(&r->data[got], n, (void *)ptr) == 0)
		w->h1_got += n;
	return 0;
}

/* HTTP/1.x: one record per read/write, head + tail. */
__noinline int emit_h1(__u64 buf, __u32 iovcnt, __u32 vectored, __u32 total)
{
	__u32 zero = 0;
	struct work *w = work_get();
	struct h1_rec *r = bpf_map_lookup_elem(&h1_buf, &zero);
	if (!w || !r)
		return 0;
	w->h1_got = 0;
	__u64 last = buf;
	__u32 last_len = total;
	if (!vectored) {
		h1_head_seg(buf, total);
	} else {
		__u32 left = total;
		for (__u32 i = 0; i < MAX_IOV; i++) {
			if (i >= iovcnt || left == 0)
				break;
			struct iovec iov = {};
			if (bpf_probe_read_user(&iov, sizeof(iov), (struct iovec *)buf + i))
				break;
			__u32 sl = iov.iov_len < left ? (__u32)iov.iov_len : left;
			h1_head_seg((__u64)iov.iov_base, sl);
			last = (__u64)iov.iov_base;
			last_len = sl;
			left -= sl;
		}
	}
	__u32 got = w->h1_got;
	barrier_var(got);
	if (got > H1_HEAD)
		got = H1_HEAD;
	r->h.len = total;
	r->h.tail_len = 0;
	r->h._pad[0] = r->h._pad[1] = r->h._pad[2] = 0;
	__builtin_memset(r->h.tail, 0, H1_TAIL);
	if (total > H1_HEAD && last_len > 0) {
		__u32 tl = min32(last_len, H1_TAIL);
		barrier_var(tl);
		if (tl > H1_TAIL)
			tl = H1_TAIL;
		if (bpf_probe_read_user(r->h.tail, tl, (void *)(last + last_len - tl)) == 0)
			r->h.tail_len = tl;
	}
	fill_hdr(&r->h.hdr, w, EV_H1_DATA, got, 1);
	if (bpf_ringbuf_output(&events, r, sizeof(struct ev_h1) + got, rb_flags_before(sizeof(struct ev_h1) + got)))
		count_drop(DROP_RINGBUF_FULL);
	return 0;
}

/* ---------------------------------------------------------------------
 * HTTP/2 frame walker
 */

/* Is this frame header plausible? strict: used to find frame boundaries
 * on a connection we joined midstream, so also demand what well-behaved
 * peers always do (known type, reserved bit clear, known flags only,
 * length within the default SETTINGS_MAX_FRAME_SIZE unless max_len says
 * the frame fits the chunk exactly). Non-strict: established connection,
 * only what RFC 9113 makes a connection error. */
__noinline int frame_ok(__u32 len, __u32 type, __u32 flags, __u32 sid_raw, __u32 max_len)
{
	__u32 sid = sid_raw & 0x7fffffff;
	int strict = max_len != 0;

	if (type > F_CONTINUATION)
		return !strict; /* extension frames are ignored, never fatal */
	if (strict) {
		if (sid_raw & 0x80000000)
			return 0;
		if (len > max_len)
			return 0;
		__u32 allowed = 0;
		switch (type) {
		case F_DATA:
			allowed = FL_END_STREAM | FL_PADDED;
			break;
		case F_HEADERS:
			allowed = FL_END_STREAM | FL_END_HEADERS | FL_PADDED | FL_PRIORITY;
			break;
		case F_SETTINGS:
		case F_PING:
			allowed = FL_ACK;
			break;
		case F_PUSH_PROMISE:
			allowed = FL_END_HEADERS | FL_PADDED;
			break;
		case F_CONTINUATION:
			allowed = FL_END_HEADERS;
			break;
		}
		if (flags & ~allowed)
			return 0;
	}
	switch (type) {
	case F_DATA:
	case F_HEADERS:
		if (sid == 0)
			return 0;
		if ((flags & FL_PADDED) && len < 1)
			return 0;
		return 1;
	case F_PUSH_PROMISE:
	case F_CONTINUATION:
		return sid != 0;
	case F_PRIORITY:
		return sid != 0 && len == 5;
	case F_RST_STREAM:
		return sid != 0 && len == 4;
	case F_SETTINGS:
		if (sid != 0 || len % 6 != 0)
			return 0;
		return !((flags & FL_ACK) && len != 0);
	case F_PING:
		return sid == 0 && len == 8;
	case F_GOAWAY:
		return sid == 0 && len >= 8;
	case F_WINDOW_UPDATE:
		return len == 4;
	}
	return 1;
}

static __always_inline void hdr_fields(const __u8 *h, __u32 *len, __u32 *type, __u32 *flags, __u32 *sid)
{
	*len = ((__u32)h[0] << 16) | ((__u32)h[1] << 8) | h[2];
	*type = h[3];
	*flags = h[4];
	*sid = be32(h + 5);
}

/* Does a chunk start on a frame boundary? The header at byte 0 must be
 * plausible and either end the chunk exactly, or be followed by another
 * plausible header, or be the whole chunk (Go reads headers alone). */
__noinline int h2_aligned(__u64 ptr, __u32 chunk)
{
	struct work *w = work_get();
	if (!w || chunk < 9)
		return 0;
	__u32 len, type, flags, sid;
	if (bpf_probe_read_user(w->peek, 9, (void *)ptr))
		return 0;
	hdr_fields(w->peek, &len, &type, &flags, &sid);
	__u32 end = 9 + len;
	if (!frame_ok(len, type, flags, sid, end == chunk ? 0xffffff : H2_DEFAULT_MAX_FRAME))
		return 0;
	if (end == chunk || chunk == 9)
		return 1;
	if (end + 9 > chunk)
		return 0;
	if (bpf_probe_read_user(w->peek + 16, 9, (void *)(ptr + end)))
		return 0;
	hdr_fields(w->peek + 16, &len, &type, &flags, &sid);
	return frame_ok(len, type, flags, sid, H2_DEFAULT_MAX_FRAME);
}

static __always_inline void stream_key_of(struct stream_key *k, struct work *w, __u32 dir)
{
	k->conn_id = w->conn_id;
	k->stream = w->st.stream;
	k->dir = dir;
}

/* Completes the current frame: DATA, RST_STREAM and GOAWAY records go out
 * here because they need the whole payload walked first. */
__noinline int frame_end(void)
{
	struct work *w = work_get();
	if (!w)
		return 1;
	struct stream_key k = {};
	stream_key_of(&k, w, w->dir);
	switch (w->st.type) {
	case F_DATA:
		emit_h2(0, 0, w->st.pad_len, 0);
		if (w->st.flags & FL_END_STREAM) {
			if (w->st.stream_known)
				bpf_map_delete_elem(&streams, &k);
		} else if (w->st.msg_left || w->st.pfx_have) {
			struct grpc_state g = {};
			g.msg_left = w->st.msg_left;
			g.pfx_have = w->st.pfx_have;
			__builtin_memcpy(g.pfx, w->st.pfx, sizeof(g.pfx));
			if (bpf_map_update_elem(&streams, &k, &g, BPF_ANY))
				count_drop(DROP_STREAM_TABLE);
			else
				w->st.streams_used = 1;
		} else if (w->st.stream_known) {
			bpf_map_delete_elem(&streams, &k);
		}
		break;
	case F_RST_STREAM:
		emit_h2(0, 0, be32(w->st.val), 0);
		bpf_map_delete_elem(&streams, &k);
		k.dir = !w->dir;
		bpf_map_delete_elem(&streams, &k);
		break;
	case F_GOAWAY:
		emit_h2(0, 0, be32(w->st.val + 4), be32(w->st.val) & 0x7fffffff);
		break;
	}
	w->st.in_payload = 0;
	w->st.off = 0;
	return 0;
}

/* A complete frame header was collected. */
__noinline int frame_begin(void)
{
	struct work *w = work_get();
	if (!w)
		return 1;
	__u32 len, type, flags, sid;
	hdr_fields(w->st.hdr, &len, &type, &flags, &sid);
	w->st.hdr_have = 0;
	if (!frame_ok(len, type, flags, sid, 0))
		return stop_dir(PERR_BAD_FRAME);
	w->st.flen = len;
	w->st.type = type;
	w->st.flags = flags;
	w->st.stream = sid & 0x7fffffff;
	w->st.off = 0;
	w->st.in_payload = 1;
	w->st.pad_len = 0;
	w->st.grpc_msgs = 0;
	__builtin_memset(w->st.val, 0, sizeof(w->st.val));
	if (type == F_DATA) {
		struct stream_key k = {};
		stream_key_of(&k, w, w->dir);
		/* Most directions never leave a message open across frames
		 * (small messages, plain HTTP bodies ending with END_STREAM):
		 * they skip the hash lookup per DATA frame. */
		struct grpc_state *g = w->st.streams_used ? bpf_map_lookup_elem(&streams, &k) : NULL;
		if (g) {
			w->st.stream_known = 1;
			w->st.msg_left = g->msg_left;
			w->st.pfx_have = g->pfx_have;
			__builtin_memcpy(w->st.pfx, g->pfx, sizeof(w->st.pfx));
		} else {
			w->st.stream_known = 0;
			w->st.msg_left = 0;
			w->st.pfx_have = 0;
		}
	}
	if (len == 0) {
		/* Empty payloads still produce their record (e.g. END_STREAM
		 * DATA, SETTINGS ACK, an empty header block). */
		if (type == F_HEADERS || type == F_CONTINUATION || type == F_PUSH_PROMISE ||
		    type == F_SETTINGS)
			emit_h2(0, 0, 0, 0);
		return frame_end();
	}
	return 0;
}

static __always_inline void advance(struct work *w, __u32 n)
{
	w->st.off += n;
	w->pos += n;
}

/* DATA payload: pad length, then data scanned for gRPC 5-byte prefixes
 * (message bodies are skipped, never read), then padding. */
__noinline int data_step(__u64 at, __u32 n)
{
	struct work *w = work_get();
	if (!w)
		return 1;
	if ((w->st.flags & FL_PADDED) && w->st.off == 0) {
		__u8 pl = 0;
		bpf_probe_read_user(&pl, 1, (void *)at);
		w->st.pad_len = pl;
		advance(w, 1);
		if ((__u32)pl > w->st.flen - 1)
			return stop_dir(PERR_BAD_FRAME);
		return 0;
	}
	__u32 data_end = w->st.flen - w->st.pad_len;
	if (w->st.off >= data_end) {
		advance(w, n); /* padding */
		return 0;
	}
	__u32 k = min32(n, data_end - w->st.off);
	if (w->st.msg_left) {
		k = min32(k, w->st.msg_left);
		w->st.msg_left -= k;
		advance(w, k);
		return 0;
	}
	if (w->st.pfx_have == 0)
		w->st.grpc_msgs++;
	if (w->st.pfx_have == 0 && k >= 5) {
		bpf_probe_read_user(w->st.pfx, 5, (void *)at);
		w->st.pfx_have = 5;
		advance(w, 5);
	} else {
		bpf_probe_read_user(&w->st.pfx[w->st.pfx_have & 7], 1, (void *)at);
		w->st.pfx_have++;
		advance(w, 1);
	}
	if (w->st.pfx_have >= 5) {
		w->st.msg_left = be32(w->st.pfx + 1);
		w->st.pfx_have = 0;
	}
	return 0;
}

__noinline int payload_step(__u64 at, __u32 avail)
{
	struct work *w = work_get();
	if (!w)
		return 1;
	__u32 left = w->st.flen - w->st.off;
	__u32 n = min32(avail, left);
	switch (w->st.type) {
	case F_HEADERS:
	case F_CONTINUATION:
	case F_PUSH_PROMISE: /* carries a header block: HPACK needs it too */
		n = min32(n, MAX_DATA);
		emit_h2(at, n, 0, 0);
		advance(w, n);
		break;
	case F_DATA:
		if (data_step(at, n))
			return 1;
		break;
	case F_SETTINGS:
		/* One record; the payload rides along when it is all here. */
		if (w->st.off == 0)
			emit_h2(at, n == left && n <= MAX_DATA ? n : 0, 0, 0);
		advance(w, n);
		break;
	case F_RST_STREAM:
	case F_GOAWAY: {
		__u32 need = w->st.flen < 8 ? w->st.flen : 8;
		if (w->st.off >= need) {
			advance(w, n);
		} else if (w->st.off == 0 && n >= 8) {
			bpf_probe_read_user(w->st.val, 8, (void *)at);
			advance(w, 8);
		} else if (w->st.off == 0 && n >= 4 && need == 4) {
			bpf_probe_read_user(w->st.val, 4, (void *)at);
			advance(w, 4);
		} else {
			bpf_probe_read_user(&w->st.val[w->st.off & 7], 1, (void *)at);
			advance(w, 1);
		}
		break;
	}
	default: /* PING, WINDOW_UPDATE, PRIORITY, extensions: no record */
		advance(w, n);
	}
	if (w->st.off >= w->st.flen)
		return frame_end();
	return 0;
}

/* One walker step: skip preface bytes, collect a frame header, or consume
 * a piece of payload. Returns 1 to stop the loop. */
__noinline int h2_step(void)
{
	struct work *w = work_get();
	if (!w)
		return 1;
	if (w->st.status != DS_OK || w->pos >= w->len)
		return 1;
	__u32 avail = w->len - w->pos;
	__u64 at = w->base + w->pos;

	if (w->st.skip) {
		__u32 k = min32(avail, w->st.skip);
		w->st.skip -= k;
		w->pos += k;
		return 0;
	}
	if (w->st.in_payload)
		return payload_step(at, avail);
	if (w->st.hdr_have == 0 && avail >= 9) {
		if (bpf_probe_read_user(w->st.hdr, 9, (void *)at))
			return stop_dir(PERR_BAD_FRAME);
		w->st.hdr_have = 9;
		w->pos += 9;
	} else {
		/* A header split across syscalls: collect it byte by byte. */
		bpf_probe_read_user(&w->st.hdr[w->st.hdr_have & 15], 1, (void *)at);
		w->st.hdr_have++;
		w->pos++;
		if (w->st.hdr_have < 9)
			return 0;
	}
	return frame_begin();
}

static long walk_cb(__u64 index, void *ctx)
{
	int stop = h2_step();
	/* The verifier wants to see the callback return 0 or 1. */
	barrier_var(stop);
	if (stop)
		return 1;
	return 0;
}

/* Walk one contiguous segment of the stream. */
__noinline int process_seg(__u64 ptr, __u32 len)
{
	struct work *w = work_get();
	if (!w)
		return 1;
	w->base = ptr;
	w->len = len;
	w->pos = 0;
	bpf_loop(MAX_STEPS, walk_cb, NULL, 0);
	if (w->st.status == DS_OK && w->pos < w->len) {
		count_drop(DROP_FRAMES);
		return stop_dir(PERR_TOO_MANY);
	}
	return w->st.status != DS_OK;
}

/* ---------------------------------------------------------------------
 * Protocol detection
 */

static __always_inline int is_h1_start(const __u8 *b, __u32 n)
{
#define M4(a, b_, c, d) (n >= 4 && b[0] == a && b[1] == b_ && b[2] == c && b[3] == d)
	if (M4('G', 'E', 'T', ' ') || M4('P', 'U', 'T', ' '))
		return 1;
	if (n >= 5 && M4('P', 'O', 'S', 'T') && b[4] == ' ')
		return 1;
	if (n >= 5 && M4('H', 'E', 'A', 'D') && b[4] == ' ')
		return 1;
	if (n >= 6 && M4('P', 'A', 'T', 'C') && b[4] == 'H' && b[5] == ' ')
		return 1;
	if (n >= 6 && M4('T', 'R', 'A', 'C') && b[4] == 'E' && b[5] == ' ')
		return 1;
	if (n >= 7 && M4('D', 'E', 'L', 'E') && b[4] == 'T' && b[5] == 'E' && b[6] == ' ')
		return 1;
	if (n >= 8 && M4('O', 'P', 'T', 'I') && b[4] == 'O' && b[5] == 'N' && b[6] == 'S' && b[7] == ' ')
		return 1;
	if (n >= 8 && M4('C', 'O', 'N', 'N') && b[4] == 'E' && b[5] == 'C' && b[6] == 'T' && b[7] == ' ')
		return 1;
	if (n >= 7 && M4('H', 'T', 'T', 'P') && b[4] == '/' && b[5] == '1' && b[6] == '.')
		return 1;
#undef M4
	return 0;
}

/* Does the chunk start with (a prefix of, when shorter) the client preface? */
__noinline int is_preface(__u64 ptr, __u32 len)
{
	struct work *w = work_get();
	if (!w)
		return 0;
	__u32 n = min32(len, H2_PREFACE_LEN);
	barrier_var(n);
	if (n > H2_PREFACE_LEN)
		n = H2_PREFACE_LEN;
	if (n < 4 || bpf_probe_read_user(w->peek, n, (void *)ptr))
		return 0;
	for (int i = 0; i < H2_PREFACE_LEN; i++) {
		if (i >= n)
			break;
		if (w->peek[i] != (__u8)h2_preface[i])
			return 0;
	}
	return 1;
}

/* Which protocol does the first chunk of a connection speak? */
__noinline int detect(__u64 ptr, __u32 len)
{
	struct work *w = work_get();
	if (!w)
		return 0;
	if (is_preface(ptr, len))
		return PROTO_H2;
	__u32 n = min32(len, 16);
	barrier_var(n);
	if (n > 16)
		n = 16;
	__builtin_memset(w->peek, 0, sizeof(w->peek));
	if (bpf_probe_read_user(w->peek, n, (void *)ptr))
		return 0;
	if (is_h1_start(w->peek, n))
		return PROTO_H1;
	if (h2_aligned(ptr, len))
		return PROTO_H2_MIDSTREAM;
	return 0;
}

/* Bytes the process has read from the socket so far: everything received
 * minus what still waits in the receive queue. */
static __always_inline __u64 bytes_consumed(__u64 file)
{
	struct tcp_sock *tp = (void *)file_sock(file);
	__u64 received = BPF_CORE_READ(tp, bytes_received);
	__u32 queued = BPF_CORE_READ(tp, rcv_nxt) - BPF_CORE_READ(tp, copied_seq);
	return received - queued;
}

/* Nothing was ever written on the socket: no byte sent nor queued. */
static __always_inline int nothing_written(__u64 file)
{
	struct tcp_sock *tp = (void *)file_sock(file);
	return BPF_CORE_READ(tp, bytes_sent) == 0 && BPF_CORE_READ(tp, write_seq) == BPF_CORE_READ(tp, snd_nxt);
}

/* ---------------------------------------------------------------------
 * Syscall handling
 */

/* The connection is gone: tell user space if it knew it. */
static __always_inline void conn_gone(struct conn_key *k, struct conn_state *c)
{
	if (c->proto && c->proto != PROTO_NOT_HTTP)
		emit_close(c->conn_id, k->tgid, EV_CLOSE);
	bpf_map_delete_elem(&conns, k);
}

/* Should this (tgid, fd) be traced? Creates the connection entry for a
 * TCP socket seen for the first time. The order keeps the common cases
 * cheap: a non-socket costs the fd table walk and two loads, a known
 * socket one more hash lookup. */
__noinline int track_fd(__u32 tgid, __u32 fd)
{
	struct conn_key k = {.tgid = tgid, .fd = fd};
	__u64 file = fd_file(fd);
	if (!file || !is_socket(file))
		return 0;
	struct conn_state *c = bpf_map_lookup_elem(&conns, &k);
	__u64 start = bpf_get_current_task_btf()->group_leader->start_time;
	if (c) {
		if (c->file == file && c->proc_start == start)
			return c->proto != PROTO_NOT_HTTP;
		/* The fd now names another socket: it was replaced without a
		 * close() we saw (dup2, close_range, exec...), or the entry is
		 * an exited process's and the pid was reused. */
		conn_gone(&k, c);
	}
	/* Excluded processes never get an entry, so a hit above is never
	 * theirs: the exclusion lookup is paid once per socket, not per call. */
	if (!is_tcp(file) || bpf_map_lookup_elem(&excluded, &tgid))
		return 0;
	struct conn_state z = {};
	z.file = file;
	z.proc_start = start;
	if (bpf_map_update_elem(&conns, &k, &z, BPF_NOEXIST)) {
		count_drop(DROP_CONN_TABLE);
		return 0;
	}
	return 1;
}

static __always_inline void dir_reset(struct dir_state *d, __u8 status)
{
	__u32 seq = d->seq;
	__builtin_memset(d, 0, sizeof(*d));
	d->seq = seq;
	d->status = status;
}

/* sys_exit of a read/write that moved `total` bytes on a tracked fd. */
__noinline int handle_io(__u64 buf, __u32 fd, __u32 iovcnt, __u32 dir_vec, __u32 total)
{
	__u32 dir = dir_vec & 1;
	__u32 vectored = dir_vec >> 8;
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = {.tgid = id >> 32, .fd = fd};
	struct conn_state *c = bpf_map_lookup_elem(&conns, &k);
	if (!c || c->proto == PROTO_NOT_HTTP)
		return 0;
	struct work *w = work_get();
	if (!w)
		return 0;
	w->pid = id >> 32;
	w->tid = (__u32)id;
	/* Stamp writes when they began and reads when they returned: a
	 * response is then never older than the request that caused it, so
	 * user space can order the two directions by time alone. */
	w->ts = dir == DIR_EGRESS ? w->enter_ts : bpf_ktime_get_ns();
	w->dir = dir;
	w->conn_id = c->conn_id;

	/* The first segment decides detection and alignment. */
	__u64 p0 = buf;
	__u32 l0 = total;
	if (vectored) {
		struct iovec iov = {};
		if (iovcnt == 0 || bpf_probe_read_user(&iov, sizeof(iov), (void *)buf))
			return 0;
		p0 = (__u64)iov.iov_base;
		l0 = iov.iov_len < total ? (__u32)iov.iov_len : total;
	}

	if (c->proto == 0) {
		int p = detect(p0, l0);
		/* Servers may write SETTINGS before reading the preface (grpc-go
		 * does). Frames written before the process read anything are
		 * the start of a new connection, not the middle of an old one:
		 * exact, with the preface still to come in. */
		int fresh_server = p == PROTO_H2_MIDSTREAM && dir == DIR_EGRESS && bytes_consumed(c->file) == 0;
		/* Likewise a client that reads the server's SETTINGS before it
		 * writes its preface (h2load, nghttp do): an HTTP/2 client
		 * always writes first on an established connection, so frames
		 * read while nothing was ever written begin a new one. */
		int fresh_client = p == PROTO_H2_MIDSTREAM && dir == DIR_INGRESS && nothing_written(c->file);
		if (fresh_server || fresh_client)
			p = PROTO_H2;
		if (!p) {
			if (++c->tries >= DETECT_TRIES)
				c->proto = PROTO_NOT_HTTP;
			return 0;
		}
		c->conn_id = __sync_fetch_and_add(&next_conn_id, 1) + 1;
		c->proto = p;
		__u8 one = 1;
		bpf_map_update_elem(&http_procs, &k.tgid, &one, BPF_ANY);
		w->conn_id = c->conn_id;
		if (p == PROTO_H2) {
			dir_reset(&c->d[0], DS_OK);
			dir_reset(&c->d[1], DS_OK);
			if (fresh_server)
				c->d[DIR_INGRESS].want_preface = 1;
			else if (fresh_client)
				c->d[DIR_EGRESS].want_preface = 1;
			else if (dir)
				c->d[1].skip = H2_PREFACE_LEN;
			else
				c->d[0].skip = H2_PREFACE_LEN;
		} else if (p == PROTO_H2_MIDSTREAM) {
			/* Aligned on this chunk; the other direction must align itself. */
			dir_reset(&c->d[0], dir ? DS_UNALIGNED : DS_OK);
			dir_reset(&c->d[1], dir ? DS_OK : DS_UNALIGNED);
		}
		/* The client preface travels in the direction it was seen in,
		 * or for a server that wrote first, towards the server. */
		__u32 preface_dir = fresh_server ? DIR_INGRESS : fresh_client ? DIR_EGRESS : dir;
		emit_conn(c->file, fd, p | preface_dir << 8);
	}

	if (dir)
		w->st = c->d[1];
	else
		w->st = c->d[0];

	if (c->proto == PROTO_H1) {
		emit_h1(buf, iovcnt, vectored, total);
	} else {
		if (w->st.status == DS_UNALIGNED) {
			if (!h2_aligned(p0, l0))
				return 0;
			dir_reset(&w->st, DS_OK);
		}
		if (w->st.status == DS_OK && w->st.want_preface) {
			w->st.want_preface = 0;
			if (is_preface(p0, l0))
				w->st.skip = H2_PREFACE_LEN;
			else
				stop_dir(PERR_BAD_FRAME);
		}
		if (w->st.status != DS_OK)
			goto out;
		if (!vectored) {
			process_seg(buf, total);
		} else {
			__u32 left = total;
			for (__u32 i = 0; i < MAX_IOV; i++) {
				if (i >= iovcnt || left == 0)
					break;
				struct iovec iov = {};
				if (bpf_probe_read_user(&iov, sizeof(iov), (struct iovec *)buf + i))
					break;
				__u32 sl = iov.iov_len < left ? (__u32)iov.iov_len : left;
				left -= sl;
				if (sl && process_seg((__u64)iov.iov_base, sl))
					break;
			}
			if (left && w->st.status == DS_OK) {
				/* Bytes we did not walk: frame boundaries are lost. */
				count_drop(DROP_IOV);
				stop_dir(PERR_TOO_MANY);
			}
		}
	}

out:
	if (dir)
		c->d[1] = w->st;
	else
		c->d[0] = w->st;
	return 0;
}

static __always_inline int on_enter(__u64 fd, __u64 buf, __u64 iovcnt, __u32 dir, __u32 vectored)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!track_fd(id >> 32, (__u32)fd))
		return 0;
	/* A thread's slot is created at its first traced call, written in
	 * place after that and disarmed (not deleted) at exit; it goes away
	 * with the thread. */
	struct io_args *a = bpf_task_storage_get(&io_args, bpf_get_current_task_btf(), 0,
						 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!a)
		return 0;
	a->ts = bpf_ktime_get_ns();
	a->buf = buf;
	a->fd = (__u32)fd;
	a->iovcnt = (__u32)iovcnt;
	a->dir = dir;
	a->vectored = vectored;
	a->armed = 1;
	return 0;
}

static __always_inline int on_enter_msg(__u64 fd, __u64 msg, __u32 dir)
{
	struct user_msghdr m = {};
	if (bpf_probe_read_user(&m, sizeof(m), (void *)msg))
		return 0;
	return on_enter(fd, (__u64)m.msg_iov, m.msg_iovlen, dir, 1);
}

static __always_inline int on_exit(long ret)
{
	struct io_args *ap = bpf_task_storage_get(&io_args, bpf_get_current_task_btf(), 0, 0);
	if (!ap || !ap->armed)
		return 0;
	struct io_args a = *ap;
	ap->armed = 0;
	if (ret <= 0)
		return 0;
	struct work *w = work_get();
	if (!w)
		return 0;
	w->enter_ts = a.ts;
	return handle_io(a.buf, a.fd, a.iovcnt, a.dir | (a.vectored << 8), (__u32)ret);
}

static __always_inline int on_close(__u64 fd)
{
	struct conn_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = (__u32)fd};
	struct conn_state *c = bpf_map_lookup_elem(&conns, &k);
	if (c)
		conn_gone(&k, c);
	return 0;
}

/* x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
enum {
	NR_read = 0,
	NR_write = 1,
	NR_close = 3,
	NR_readv = 19,
	NR_writev = 20,
	NR_sendto = 44,
	NR_recvfrom = 45,
	NR_sendmsg = 46,
	NR_recvmsg = 47,
};

#define TS_COMPAT 0x0002 /* thread_info.status: inside a 32-bit syscall */

/* A 32-bit process numbers its syscalls differently (3 is its read). */
static __always_inline int compat_syscall(void)
{
	struct task_struct *t = bpf_get_current_task_btf();
	return t->thread_info.status & TS_COMPAT;
}

/* The raw sys_enter/sys_exit tracepoints (BTF-typed) rather than the
 * per-syscall syscalls/sys_{enter,exit}_* ones: those go through perf's
 * syscall tracing, which builds a record of the arguments before the
 * program runs, ~0.16 µs more per traced syscall than this dispatch on
 * the syscall number (measured on 6.18, no-op programs, read(2) of
 * /dev/zero). The arguments come straight from the trusted pt_regs. */
SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long id)
{
	__u32 dir, vectored = 0;
	switch (id) {
	case NR_read:
		dir = DIR_INGRESS;
		break;
	case NR_write:
		dir = DIR_EGRESS;
		break;
	case NR_readv:
		dir = DIR_INGRESS;
		vectored = 1;
		break;
	case NR_writev:
		dir = DIR_EGRESS;
		vectored = 1;
		break;
	case NR_recvfrom:
		/* MSG_PEEK leaves the bytes in the socket: they will be read again. */
		if (regs->r10 & MSG_PEEK)
			return 0;
		dir = DIR_INGRESS;
		break;
	case NR_sendto:
		dir = DIR_EGRESS;
		break;
	case NR_recvmsg:
		if ((regs->dx & MSG_PEEK) || compat_syscall())
			return 0;
		return on_enter_msg(regs->di, regs->si, DIR_INGRESS);
	case NR_sendmsg:
		if (compat_syscall())
			return 0;
		return on_enter_msg(regs->di, regs->si, DIR_EGRESS);
	case NR_close:
		if (compat_syscall())
			return 0;
		return on_close(regs->di);
	default:
		return 0;
	}
	if (compat_syscall())
		return 0;
	return on_enter(regs->di, regs->si, vectored ? regs->dx : 0, dir, vectored);
}

/* Every syscall exit runs this; only a thread armed by sys_enter goes
 * further than one task-storage lookup. */
SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit, struct pt_regs *regs, long ret)
{
	return on_exit(ret);
}

/* A process that exits closes its fds without close(): once its last
 * thread is gone, one EV_PROC_EXIT tells user space to end every
 * connection of it. Walking `conns` here to close them one by one cost
 * ~0.4 ms per exit (every bucket of the table), paid by the exiting
 * process; its entries instead age out of the LRU table, and a reused
 * (tgid, fd) is told apart by its struct file (track_fd). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(process_exit, struct task_struct *p)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (!bpf_map_lookup_elem(&http_procs, &tgid))
		return 0;
	struct task_struct *task = (void *)bpf_get_current_task();
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0; /* other threads still run */
	bpf_map_delete_elem(&http_procs, &tgid);
	emit_close(0, tgid, EV_PROC_EXIT);
	return 0;
}
