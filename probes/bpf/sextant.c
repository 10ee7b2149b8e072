// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// sextant kernel side: see the bytes every process reads from and writes
// to its TCP sockets, recognise HTTP/2 and HTTP/1.x, follow their framing
// and ship compact records (events.h) through one ring buffer. HPACK is
// never decoded here: header block bytes are shipped raw and in order,
// user space owns the decoding.
//
// Two capture paths share everything after "here is a chunk of a
// connection" (capture.h); user space loads one of them:
//
// - socket capture (Linux >= 6.3): tp_btf/sock_send_length and
//   sock_recv_length run only on socket I/O, after the copy, with the exact
//   byte count; the buffer comes from the syscall's arguments in the task's
//   registers; per-connection state lives in the socket's own storage and
//   tp_btf/tcp_destroy_sock ends it. Nothing runs for a process that does
//   no socket I/O.
// - syscall capture (the fallback): raw sys_enter/sys_exit on every
//   syscall of the host, state in an LRU keyed by (tgid, fd), close() and
//   process exit end connections.
//
// Files: events.h (the wire format), emit.h (ring buffer, drops), conn.h
// (connection state, TCP socket facts), chunk.h (a chunk's bytes, its
// window and record), h2.h (HTTP/2 walker), h1.h (HTTP/1 framing),
// capture.h (detection and the walk of one chunk).

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "capture.h"
#include "scope.h"

char LICENSE[] SEC("license") = "GPL";

#define MSG_PEEK 2

/* Keep the ABI types in BTF so bpf2go generates their Go mirrors. */
const struct ev_header *unused_ev_header __attribute__((unused));
const struct ev_conn *unused_ev_conn __attribute__((unused));
const struct ev_chunk *unused_ev_chunk __attribute__((unused));
const struct ev_entry *unused_ev_entry __attribute__((unused));
const enum ev_kind *unused_ev_kind __attribute__((unused));
const enum ev_dir *unused_ev_dir __attribute__((unused));
const enum conn_proto *unused_conn_proto __attribute__((unused));
const enum parse_err *unused_parse_err __attribute__((unused));
const enum drop_reason *unused_drop_reason __attribute__((unused));
const enum stat_counter *unused_stat_counter __attribute__((unused));

/* =====================================================================
 * Socket capture
 */

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct conn_state);
} sk_conns SEC(".maps");

static __always_inline int on_sock_chunk(struct sock *sk, int ret, __u32 dir, __u32 slot)
{
	if (ret <= 0 || out_of_scope() || !sk_is_tcp((__u64)sk))
		return 0;
	struct conn_state *c = bpf_sk_storage_get(&sk_conns, sk, 0, 0);
	__u64 id = bpf_get_current_pid_tgid();
	if (!c) {
		/* First I/O on this socket since the probes were loaded: its
		 * state is created once; an excluded process's socket is never
		 * looked at again. */
		c = bpf_sk_storage_get(&sk_conns, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!c) /* another thread created it a moment ago (-EEXIST): use that */
			c = bpf_sk_storage_get(&sk_conns, sk, 0, 0);
		if (!c) {
			count_drop(DROP_CONN_TABLE);
			return 0;
		}
		__u32 tgid = id >> 32;
		if (bpf_map_lookup_elem(&excluded, &tgid))
			c->proto = PROTO_NOT_HTTP;
	}
	if (c->proto == PROTO_NOT_HTTP)
		return 0;
	struct work *w = work_get(slot);
	if (!w)
		return 0;
	w->sk = (__u64)sk;
	w->dir = dir;
	w->len = ret;
	w->pid = id >> 32;
	w->tid = (__u32)id;
	w->ts = 0; /* chunk_time() */
	w->src = SRC_UNKNOWN; /* read from the registers when first needed */
	w->vectored = 0;
	w->iovcnt = 0;
	w->fd = 0;
	w->socket_path = 1;
	return capture_chunk(c, w, slot);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(sock_send, struct sock *sk, int ret, int flags)
{
	return on_sock_chunk(sk, ret, DIR_EGRESS, SLOT_SEND);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sock_recv, struct sock *sk, int ret, int flags)
{
	/* MSG_PEEK leaves the bytes in the socket: they will be read again. */
	if (flags & MSG_PEEK)
		return 0;
	return on_sock_chunk(sk, ret, DIR_INGRESS, SLOT_RECV);
}

/* The socket is gone: the process closed it and TCP is done with it, so
 * no read or write of it can follow. Its storage is freed right after.
 * No scope check: this may run in softirq context, on behalf of no task;
 * sockets of tasks outside the scope have no state to end. */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(sock_destroy, struct sock *sk)
{
	struct conn_state *c = bpf_sk_storage_get(&sk_conns, sk, 0, 0);
	struct work *w = work_get(SLOT_CLOSE);
	if (!c || !w)
		return 0;
	w->sk = (__u64)sk;
	conn_end(c, w, SLOT_CLOSE);
	return 0;
}

/* =====================================================================
 * Syscall capture (fallback for kernels without the socket tracepoints)
 */

struct conn_key {
	__u32 tgid;
	__u32 fd;
};

/* io_args.vectored of a sendfile/splice to a socket: bytes moved from
 * kernel pages, counted (inside a body or DATA payload) but never read. */
#define NO_BUFFER 2

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

/* One zeroed conn_state, never written: the initial value of an entry. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct conn_state);
} conn_zero SEC(".maps");

/* Processes that own (or owned) a recognised connection: only their exit
 * is worth a record. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} http_procs SEC(".maps");

/* The connection is gone: tell user space if it knew it. */
static __always_inline void conn_gone(struct conn_key *k, struct conn_state *c)
{
	struct work *w = work_get(SLOT_CLOSE);
	if (w) {
		w->sk = file_sk(c->file);
		conn_end(c, w, SLOT_CLOSE);
	}
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
	__u64 sk = file_sk(file);
	if (!sk)
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
	if (!sk_is_tcp(sk) || bpf_map_lookup_elem(&excluded, &tgid))
		return 0;
	/* conn_state is too large for the stack: start from a zeroed one. */
	__u32 zero = 0;
	struct conn_state *init = bpf_map_lookup_elem(&conn_zero, &zero);
	struct conn_state *z = NULL;
	/* A failed insert is most often another thread of the process that
	 * created the entry a moment ago (a reader and a writer racing on a
	 * connection's first I/O): the lookup finds that one. */
	if (init)
		bpf_map_update_elem(&conns, &k, init, BPF_NOEXIST);
	z = bpf_map_lookup_elem(&conns, &k);
	if (!z) {
		count_drop(DROP_CONN_TABLE);
		return 0;
	}
	z->file = file;
	z->proc_start = start;
	return 1;
}

static __always_inline int syscall_chunk(__u32 fd, __u32 len)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = {.tgid = id >> 32, .fd = fd};
	struct conn_state *c = bpf_map_lookup_elem(&conns, &k);
	struct work *w = work_get(SLOT_SEND);
	if (!c || !w || c->proto == PROTO_NOT_HTTP)
		return 0;
	w->sk = file_sk(c->file);
	if (!w->sk)
		return 0;
	w->len = len;
	w->pid = id >> 32;
	w->tid = (__u32)id;
	w->fd = fd;
	w->socket_path = 0;
	__u64 had = c->conn_id;
	capture_chunk(c, w, SLOT_SEND);
	if (!had && c->conn_id) {
		__u8 one = 1;
		bpf_map_update_elem(&http_procs, &k.tgid, &one, BPF_ANY);
	}
	return 0;
}

/* sys_enter of a syscall that moves socket bytes, by a task in scope. */
static __always_inline int on_enter_scoped(__u64 fd, __u64 buf, __u64 iovcnt, __u32 dir, __u32 vectored)
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

static __always_inline int on_enter(__u64 fd, __u64 buf, __u64 iovcnt, __u32 dir, __u32 vectored)
{
	if (out_of_scope())
		return 0;
	return on_enter_scoped(fd, buf, iovcnt, dir, vectored);
}

static __always_inline int on_enter_msg(__u64 fd, __u64 msg, __u32 dir)
{
	struct user_msghdr m = {};
	if (out_of_scope() || bpf_probe_read_user(&m, sizeof(m), (void *)msg))
		return 0;
	return on_enter_scoped(fd, (__u64)m.msg_iov, m.msg_iovlen, dir, 1);
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
	struct work *w = work_get(SLOT_SEND);
	if (!w)
		return 0;
	/* Stamp writes when they began and reads when they returned: a
	 * response is then never older than the request that caused it. */
	w->ts = a.dir == DIR_EGRESS ? a.ts : bpf_ktime_get_ns();
	w->dir = a.dir;
	w->buf = a.buf;
	w->iovcnt = a.iovcnt;
	w->vectored = a.vectored == 1;
	w->src = a.vectored == NO_BUFFER ? SRC_NONE : SRC_READABLE;
	return syscall_chunk(a.fd, (__u32)ret);
}

static __always_inline int on_close(__u64 fd)
{
	if (out_of_scope())
		return 0;
	struct conn_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = (__u32)fd};
	struct conn_state *c = bpf_map_lookup_elem(&conns, &k);
	if (c)
		conn_gone(&k, c);
	return 0;
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
	case NR_sendfile:
		if (compat_syscall())
			return 0;
		return on_enter(regs->di, 0, 0, DIR_EGRESS, NO_BUFFER);
	case NR_splice:
		if (compat_syscall())
			return 0;
		return on_enter(regs->dx, 0, 0, DIR_EGRESS, NO_BUFFER);
	default:
		return 0;
	}
	if (compat_syscall())
		return 0;
	return on_enter(regs->di, regs->si, vectored ? regs->dx : 0, dir, vectored);
}

/* Every syscall exit runs this; only a thread armed by sys_enter goes
 * further than one task-storage lookup. No scope check: sys_enter arms
 * only threads in scope, and a helper call on every syscall exit of the
 * host would cost more than the lookup. */
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
	emit_conn_event(0, tgid, EV_PROC_EXIT);
	return 0;
}
