// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// One chunk (the bytes one read or write moved on a connection direction):
// where its bytes are, the window of them brought in by one user read, and
// the one record (EV_CHUNK) that carries what user space needs of it.
//
// Costs measured on the target VM drove the shape: a bpf_probe_read_user
// costs ~200 ns whatever its size up to a page or so, a ring record ~200
// ns, a plain load almost nothing. So the walkers never read user memory
// themselves: they ask for the window at their position (fetch), which
// costs one read for a chunk whose interesting bytes lie within WIN of
// each other and none for a chunk that only holds payload, and they
// append entries to one record per chunk that is shipped only when it
// holds one.
#pragma once

#include "conn.h"

#define WIN 4096          /* bytes one user read brings at most (power of two) */
#define DETECT_WIN 64     /* ... while the protocol is being detected (see refill) */
#define RMAX 8192         /* entry bytes one record carries at most (power of two) */
#define IOV_BATCH 32      /* iovecs brought in by one read */
#define MAX_IOV 1024      /* UIO_MAXIOV: segments a vectored call may have */
#define MAX_STEPS (1 << 16) /* walker steps per span */

/* Per-CPU working state, one slot per program that may run nested on a
 * CPU (a softirq destroying a socket may interrupt a send). */
enum work_slot {
	SLOT_SEND = 0,  /* sock_send_length, sys_exit */
	SLOT_RECV = 1,  /* sock_recv_length */
	SLOT_CLOSE = 2, /* tcp_destroy_sock, close() */
	SLOTS = 3,
};

/* Where the bytes of the chunk are. */
enum src_state {
	SRC_UNKNOWN = 0, /* not looked up yet (socket capture resolves it lazily) */
	SRC_READABLE = 1,
	SRC_NONE = 2,    /* moved by a path whose buffer the probes cannot read */
};

/* struct iovec as plain numbers (bpf2go mirrors map values in Go). */
struct user_iov {
	__u64 base;
	__u64 len;
};

struct work {
	struct dir_state st; /* copy of the direction's state, written back at the end */
	__u64 ts;       /* record time */
	__u64 conn_id;
	__u64 sk;       /* struct sock * */
	__u64 buf;      /* user buffer, or iovec array when vectored */
	__u64 seg_base; /* vectored: user address of the current segment */
	__u64 shipped;  /* record bytes this CPU slot shipped: batched wakeups */
	__u32 pid;
	__u32 tid;
	__u32 dir;
	__u32 len;       /* bytes of the span being walked */
	__u32 pos;       /* bytes of it consumed */
	__u32 win_start; /* window: span offsets [win_start, win_end) are in win[] */
	__u32 win_end;
	__u32 iovcnt;
	__u32 seg_idx;   /* vectored: current segment, its span offset and length */
	__u32 seg_start;
	__u32 seg_len;
	__u32 iov_first; /* vectored: index of iov[0] */
	__u32 iov_have;  /* vectored: valid entries in iov[] */
	__u32 fd;
	__u32 win_max;     /* bytes one refill reads at most: WIN, DETECT_WIN */
	__u32 known_fd;    /* conn_state.fd: 1 + the last fd proven to be this socket */
	__u32 rec_len;     /* entry bytes in the record */
	__u32 rec_entries;
	__u32 rec_seq0;    /* seq of the record's first entry */
	__u32 ent_off;     /* HTTP/1: the open entry's offset in the record */
	__u8 src;          /* enum src_state */
	__u8 vectored;
	__u8 seg_valid;
	__u8 ent_open;     /* HTTP/1: an entry is open (len still growing) */
	__u8 ent_data;     /* HTTP/1: the open entry still takes bytes */
	__u8 socket_path;  /* 1: socket capture, the buffer comes from the task's registers */
	__u8 h1_upgraded;  /* HTTP/1 connection fields (struct conn_state), see capture.h */
	__u8 h1_req_dir;
	__u8 peek[32];     /* gather() */
	__u32 h1_reqs;
	__u32 h1_resps;
	__u64 h1_head_bits;
	struct user_iov iov[IOV_BATCH];
	__u8 win[2 * WIN]; /* 2x: a masked offset plus a bounded length always fits */
};

struct rec_buf {
	struct ev_chunk h;
	__u8 data[2 * RMAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, struct work);
} work_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, struct rec_buf);
} rec_map SEC(".maps");

static __always_inline struct work *work_get(__u32 slot)
{
	return bpf_map_lookup_elem(&work_map, &slot);
}

static __always_inline struct rec_buf *rec_get(__u32 slot)
{
	return bpf_map_lookup_elem(&rec_map, &slot);
}

static __always_inline __u32 min32(__u32 a, __u32 b)
{
	return a < b ? a : b;
}

static __always_inline __u32 be32(const __u8 *p)
{
	return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

/* Byte i of the window (span offset w->win_start + i). */
static __always_inline __u8 win_at(struct work *w, __u32 i)
{
	return w->win[i & (2 * WIN - 1)];
}

/* ---------------------------------------------------------------------
 * Where the bytes are
 */

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
	NR_sendfile = 40,
	NR_splice = 275,
};

#define TS_COMPAT 0x0002 /* thread_info.status: inside a 32-bit syscall */

/* A 32-bit process numbers its syscalls differently (3 is its read). */
static __always_inline int compat_syscall(void)
{
	struct task_struct *t = bpf_get_current_task_btf();
	return t->thread_info.status & TS_COMPAT;
}

/* The struct file behind fd in the current task, 0 if none: direct BTF
 * loads, no helper call. */
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

/* The socket behind a file that is a socket, 0 otherwise. */
static __always_inline __u64 file_sk(__u64 file)
{
	if (!file)
		return 0;
	struct file *f = bpf_rdonly_cast((void *)file, bpf_core_type_id_kernel(struct file));
	struct inode *inode = f->f_inode;
	if (!inode || (inode->i_mode & 00170000) != 0140000) /* S_IFSOCK */
		return 0;
	struct socket *sock = bpf_rdonly_cast(f->private_data, bpf_core_type_id_kernel(struct socket));
	if (!sock)
		return 0;
	return (__u64)sock->sk;
}

/* The struct file of a socket, 0 when it has none (a kernel socket). */
static __always_inline __u64 sk_file(__u64 sk)
{
	struct sock *s = bpf_rdonly_cast((void *)sk, bpf_core_type_id_kernel(struct sock));
	struct socket *sock = bpf_rdonly_cast(s->sk_socket, bpf_core_type_id_kernel(struct socket));
	if (!sock)
		return 0;
	return (__u64)sock->file;
}

/* Socket capture: the hooks see the socket and the byte count; the buffer
 * is in the syscall's arguments, in the task's saved user registers. Only
 * the syscalls whose buffer is known are readable, and only when their fd
 * is this socket (a kernel socket used inside another syscall is not). */
__noinline int src_from_regs(__u32 slot)
{
	struct work *w = work_get(slot);
	if (!w)
		return 0;
	w->src = SRC_NONE;
	if (compat_syscall())
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (!regs)
		return 0;
	__u64 nr = regs->orig_ax;
	__u64 arg = regs->si;
	__u32 fd = regs->di;
	int msg = 0;
	switch (nr) {
	case NR_write:
	case NR_sendto:
		if (w->dir != DIR_EGRESS)
			return 0;
		break;
	case NR_read:
	case NR_recvfrom:
		if (w->dir != DIR_INGRESS)
			return 0;
		break;
	case NR_writev:
	case NR_readv:
		if ((nr == NR_writev) != (w->dir == DIR_EGRESS))
			return 0;
		w->vectored = 1;
		w->iovcnt = regs->dx;
		break;
	case NR_sendmsg:
	case NR_recvmsg:
		if ((nr == NR_sendmsg) != (w->dir == DIR_EGRESS))
			return 0;
		msg = 1;
		break;
	default: /* io_uring, sendmmsg/recvmmsg, sendfile, splice... */
		return 0;
	}
	/* Proven once per fd, by the fd's file being the socket's own: the
	 * syscall has just walked the same fd table, socket and file, so
	 * these loads hit the cache. file_sk()'s inode and private_data did
	 * not: src_from_regs was 23 % of the BPF time spent on a neighbour's
	 * new connections (perf, 2026-12-03), most of it those two loads. */
	if (fd + 1 != w->known_fd) {
		__u64 f = sk_file(w->sk);
		if (!f || fd_file(fd) != f)
			return 0;
	}
	w->known_fd = fd + 1;
	if (msg) {
		struct user_msghdr m = {};
		count_drop(STAT_USER_READS);
		if (bpf_probe_read_user(&m, sizeof(m), (void *)arg))
			return 0;
		arg = (__u64)m.msg_iov;
		w->vectored = 1;
		w->iovcnt = m.msg_iovlen;
	}
	w->buf = arg;
	w->fd = fd;
	w->src = SRC_READABLE;
	return 0;
}

/* Vectored: one step of moving the segment cursor to the segment that
 * holds w->pos. Returns 1 when done (found, or no such segment). */
__noinline int seek_step(__u32 slot)
{
	struct work *w = work_get(slot);
	if (!w)
		return 1;
	if (w->seg_valid && w->pos < w->seg_start + w->seg_len)
		return 1;
	__u32 next = w->seg_idx;
	__u32 start = w->seg_start;
	if (w->seg_valid) {
		next++;
		start += w->seg_len;
	}
	if (next >= w->iovcnt || next >= MAX_IOV) {
		w->src = SRC_NONE;
		return 1;
	}
	if (next < w->iov_first || next >= w->iov_first + w->iov_have) {
		__u32 n = min32(w->iovcnt - next, IOV_BATCH);
		barrier_var(n);
		if (n > IOV_BATCH)
			n = IOV_BATCH;
		count_drop(STAT_USER_READS);
		if (n == 0 || bpf_probe_read_user(w->iov, n * sizeof(struct user_iov),
						  (struct user_iov *)w->buf + next)) {
			w->src = SRC_NONE;
			return 1;
		}
		w->iov_first = next;
		w->iov_have = n;
	}
	struct user_iov *v = &w->iov[(next - w->iov_first) & (IOV_BATCH - 1)];
	w->seg_idx = next;
	w->seg_start = start;
	w->seg_len = v->len > 0xffffffff ? 0xffffffff : (__u32)v->len;
	w->seg_base = v->base;
	w->seg_valid = 1;
	return 0;
}

static long seek_cb(__u64 index, void *ctx)
{
	int done = seek_step(*(__u32 *)ctx);
	barrier_var(done);
	return done ? 1 : 0;
}

/* Brings the bytes at w->pos into the window: from there to the end of
 * the span, of its segment or WIN bytes, whichever comes first. Returns
 * how many are there, 0 when they cannot be read. */
__noinline int refill(__u32 slot)
{
	struct work *w = work_get(slot);
	if (!w || w->pos >= w->len)
		return 0;
	if (w->src == SRC_UNKNOWN)
		src_from_regs(slot);
	if (w->src != SRC_READABLE)
		return 0;
	__u64 at;
	__u32 end = w->len;
	if (w->vectored) {
		__u32 s = slot;
		bpf_loop(MAX_IOV, seek_cb, &s, 0);
		if (w->src != SRC_READABLE)
			return 0;
		at = w->seg_base + (w->pos - w->seg_start);
		/* Writers that slice one buffer into many segments (gRPC
		 * C-core: 26 iovecs for its first 341 bytes) hand over
		 * contiguous memory: one read takes the segments that follow
		 * on in the iovecs already here. */
		__u64 seg_end = w->seg_base + w->seg_len;
		__u32 span_end = w->seg_start + w->seg_len;
		for (__u32 i = 1; i < IOV_BATCH; i++) {
			__u32 j = w->seg_idx - w->iov_first + i;
			if (j >= w->iov_have || span_end - w->pos >= WIN)
				break;
			struct user_iov *v = &w->iov[j & (IOV_BATCH - 1)];
			if (v->base != seg_end || v->len > WIN)
				break;
			seg_end += v->len;
			span_end += v->len;
		}
		end = min32(end, span_end);
	} else {
		at = w->buf + w->pos;
	}
	__u32 n = min32(min32(end - w->pos, WIN), w->win_max);
	barrier_var(n);
	if (n > WIN)
		n = WIN;
	if (n == 0)
		return 0;
	count_drop(STAT_USER_READS);
	if (bpf_probe_read_user(w->win, n, (void *)at)) {
		w->src = SRC_NONE;
		return 0;
	}
	w->win_start = w->pos;
	w->win_end = w->pos + n;
	return n;
}

/* Bytes available in the window at w->pos, reading them in if needed;
 * 0 when the bytes cannot be read. */
static __always_inline __u32 fetch(struct work *w, __u32 slot)
{
	if (w->pos >= w->win_start && w->pos < w->win_end)
		return w->win_end - w->pos;
	return refill(slot);
}

/* Copies up to n (<= 32) bytes at span offset `at` into w->peek, across
 * segments when vectored; returns how many could be read. For detection
 * and alignment checks, which look at a few bytes that a writer may have
 * cut into several segments. Leaves w->pos at `at`. */
__noinline int gather(__u32 slot, __u32 at, __u32 n)
{
	struct work *w = work_get(slot);
	if (!w)
		return 0;
	if (n > 32)
		n = 32;
	/* All n bytes in the window (the common case, one read): a plain
	 * copy of 32 bytes; bytes past n are never looked at. */
	w->pos = at;
	if (fetch(w, slot) >= n) {
		__u32 o = at - w->win_start;
		for (__u32 i = 0; i < 32; i++)
			w->peek[i] = win_at(w, o + i);
		return n;
	}
	__u32 got = 0;
	for (__u32 i = 0; i < 32; i++) {
		if (i >= n)
			break;
		w->pos = at + i;
		if (fetch(w, slot) == 0)
			break;
		w->peek[i] = win_at(w, w->pos - w->win_start);
		got++;
	}
	w->pos = at;
	return got;
}

/* The chunk's time, taken when first needed (a record, a direction that
 * holds bytes back): bpf_ktime_get_ns costs ~50 ns on the target VM, and
 * most chunks need none. Egress: when the bytes left; ingress: when the
 * read returned (the program runs right after it). */
static __always_inline __u64 chunk_time(struct work *w)
{
	if (!w->ts) {
		__u64 now = bpf_ktime_get_ns();
		w->ts = w->dir == DIR_EGRESS ? egress_time(w->sk, now) : now;
	}
	return w->ts;
}

/* ---------------------------------------------------------------------
 * The record of a chunk
 */

/* Ships the record when it holds entries. A failed write still consumed
 * the entries' sequence numbers: user space sees the gap. */
__noinline int rec_flush(__u32 slot)
{
	struct work *w = work_get(slot);
	struct rec_buf *r = rec_get(slot);
	if (!w || !r)
		return 0;
	if (w->rec_entries == 0)
		return 0;
	__u32 n = w->rec_len;
	barrier_var(n);
	if (n > RMAX)
		n = RMAX;
	r->h.hdr.ts_ns = chunk_time(w);
	r->h.hdr.conn_id = w->conn_id;
	r->h.hdr.pid = w->pid;
	r->h.hdr.tid = w->tid;
	r->h.hdr.seq = w->rec_seq0;
	r->h.hdr.data_len = n;
	r->h.hdr.kind = EV_CHUNK;
	r->h.hdr.dir = w->dir;
	r->h.entries = w->rec_entries;
	r->h._pad = 0;
	__u32 size = sizeof(struct ev_chunk) + n;
	/* Wakeups by what this CPU (slot) shipped, not by querying the ring:
	 * its positions are cache lines the reader and every CPU write, and
	 * reading them before the reserve was a second transfer per record. */
	__u64 before = w->shipped;
	w->shipped += rb_footprint(size);
	if (bpf_ringbuf_output(&events, r, size, rb_wake(before, w->shipped)))
		count_drops(DROP_RINGBUF_FULL, w->rec_entries);
	w->rec_len = 0;
	w->rec_entries = 0;
	w->ent_open = 0;
	w->ent_data = 0;
	return 0;
}

/* What one walker step may append at most: a few entries and a window's
 * bytes. Steps ship the record first when less room is left (rec_reserve),
 * so that appending never has to (the verifier's call depth). */
#define STEP_ROOM (WIN + 4 * sizeof(struct ev_entry) + 64)

static __always_inline void rec_reserve(struct work *w, __u32 slot)
{
	if (w->rec_len > RMAX - STEP_ROOM)
		rec_flush(slot);
}

/* Appends an entry with no bytes; it takes the next sequence number. */
static __always_inline struct ev_entry *rec_entry(struct work *w, struct rec_buf *r, __u32 slot, __u8 kind)
{
	__u32 off = w->rec_len & (RMAX - 1);
	struct ev_entry *e = (void *)&r->data[off];
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = kind;
	if (w->rec_entries == 0)
		w->rec_seq0 = w->st.seq;
	w->st.seq++;
	w->rec_entries++;
	w->rec_len = off + sizeof(struct ev_entry);
	return e;
}

/* Copies n window bytes at window offset woff after the entry at eoff
 * (the last one in the record). */
static __always_inline void rec_bytes(struct work *w, struct rec_buf *r, __u32 eoff, __u32 woff, __u32 n)
{
	barrier_var(n);
	if (n > WIN)
		n = WIN;
	__u32 at = w->rec_len;
	barrier_var(at);
	at &= RMAX - 1;
	if (n && bpf_probe_read_kernel(&r->data[at], n, &w->win[woff & (WIN - 1)]) == 0) {
		struct ev_entry *e = (void *)&r->data[eoff & (RMAX - 1)];
		e->data_len += n;
		w->rec_len += n;
	}
}

/* The direction lost its place: bytes it needed were moved where the
 * probes cannot read them. What the record holds goes out, one sequence
 * number is skipped, so that user space drops what was in flight there,
 * and the walker must find its place again. */
__noinline int lose(__u32 slot)
{
	struct work *w = work_get(slot);
	if (!w)
		return 1;
	rec_flush(slot);
	w->st.seq++;
	count_drop(DROP_UNSEEN);
	return 1;
}
