// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// One chunk of a connection, whichever path saw it: its place in the TCP
// stream (a gap is bytes moved where the probes could not see them),
// protocol detection on a connection's first chunks, then the HTTP/2 or
// HTTP/1 walker, then the chunk's record. Both capture paths call
// capture_chunk with struct work filled in.
#pragma once

#include "h2.h"
#include "h1.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} excluded SEC(".maps");

/* Which protocol does the first chunk of a connection speak? */
__noinline int detect(__u32 slot)
{
	struct work *w = work_get(slot);
	if (!w)
		return 0;
	if (h2_is_preface(slot))
		return PROTO_H2;
	__u32 a = gather(slot, 0, 8);
	if (a == 0)
		return 0;
	if (is_h1_start(w->peek, a))
		return PROTO_H1;
	if (h2_aligned(slot))
		return PROTO_H2_MIDSTREAM;
	return 0;
}

/* proto_dir: enum conn_proto in the low byte, the preface direction above. */
__noinline int emit_conn(__u32 slot, __u32 proto_dir)
{
	struct work *w = work_get(slot);
	if (!w)
		return 0;
	struct ev_conn *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(DROP_RINGBUF_FULL);
		return 0;
	}
	e->hdr.ts_ns = chunk_time(w);
	e->hdr.conn_id = w->conn_id;
	e->hdr.pid = w->pid;
	e->hdr.tid = w->tid;
	e->hdr.seq = 0;
	e->hdr.data_len = 0;
	e->hdr.kind = EV_CONN;
	e->hdr.dir = w->dir;
	struct sock *sk = (void *)w->sk;
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
	e->fd = w->fd;
	e->proto = proto_dir & 0xff;
	e->preface_dir = (proto_dir >> 8) & 1;
	/* The process's name, not the thread's (C-core's I/O threads are
	 * "default-executo", "grpc_global_tim"): what /proc/<pid>/comm says. */
	struct task_struct *leader = bpf_get_current_task_btf()->group_leader;
	bpf_probe_read_kernel(e->comm, sizeof(e->comm), leader->comm);
	bpf_ringbuf_submit(e, rb_flags_reserved(sizeof(*e)));
	return 0;
}

static long h2_cb(__u64 index, void *ctx)
{
	int stop = h2_step(*(__u32 *)ctx);
	barrier_var(stop);
	return stop ? 1 : 0;
}

static long h1_cb(__u64 index, void *ctx)
{
	int stop = h1_step(*(__u32 *)ctx);
	barrier_var(stop);
	return stop ? 1 : 0;
}

static __always_inline void dir_reset(struct dir_state *d, __u8 status)
{
	__u32 seq = d->seq;
	__u32 next_tcp = d->next_tcp;
	__u8 known = d->tcp_known;
	__u8 used = d->h2.streams_used;
	__builtin_memset(d, 0, sizeof(*d));
	d->seq = seq;
	d->next_tcp = next_tcp;
	d->tcp_known = known;
	d->h2.streams_used = used;
	d->status = status;
}

/* Walks the span w->len bytes long of an HTTP/2 direction. */
static __always_inline int h2_span(struct work *w, __u32 slot)
{
	if (w->st.status == DS_UNALIGNED) {
		if (!h2_aligned(slot))
			return 0;
		dir_reset(&w->st, DS_OK);
	}
	if (w->st.status == DS_OK && w->st.h2.want_preface) {
		w->st.h2.want_preface = 0;
		if (h2_is_preface(slot))
			w->st.h2.skip = H2_PREFACE_LEN;
		else
			h2_stop(slot, PERR_BAD_FRAME);
		w->pos = 0;
	}
	if (w->st.status != DS_OK)
		return 0;
	__u32 s = slot;
	bpf_loop(MAX_STEPS, h2_cb, &s, 0);
	if (w->st.status == DS_OK && w->pos < w->len) {
		count_drop(DROP_FRAMES);
		h2_stop(slot, PERR_TOO_MANY);
	}
	return 0;
}

/* Starts walking a span from its first byte: no window, no segment. */
static __always_inline void span_reset(struct work *w, __u32 len)
{
	w->len = len;
	w->pos = 0;
	w->win_start = w->win_end = 0;
	w->seg_valid = 0;
	w->seg_idx = w->seg_start = w->seg_len = 0;
	w->iov_first = w->iov_have = 0;
	w->ent_open = w->ent_data = 0;
}

/* Walks a span: the chunk, or the bytes before it that moved unseen. */
static __always_inline void walk_span(struct work *w, __u32 slot, __u8 proto, __u32 len)
{
	span_reset(w, len);
	if (proto == PROTO_H1) {
		__u32 s = slot;
		bpf_loop(MAX_STEPS, h1_cb, &s, 0);
	} else {
		h2_span(w, slot);
	}
}

/* Decides the protocol of a connection's first chunk: 0 when it is not
 * HTTP (yet), else the protocol in the low byte and the direction the
 * client preface travels in above. */
__noinline int decide(__u32 slot)
{
	struct work *w = work_get(slot);
	if (!w)
		return 0;
	int p = detect(slot);
	/* Servers may write SETTINGS before reading the preface (grpc-go
	 * does). Frames written before the process read anything are the
	 * start of a new connection, not the middle of an old one: exact,
	 * with the preface still to come in. */
	int fresh_server = p == PROTO_H2_MIDSTREAM && w->dir == DIR_EGRESS && bytes_consumed(w->sk) == 0;
	/* Likewise a client that reads the server's SETTINGS before it
	 * writes its preface (h2load, nghttp do): an HTTP/2 client's first
	 * bytes are its preface, so frames read while no more than the
	 * preface was written begin a new connection. Not "nothing
	 * written": grpc-go reads the server's SETTINGS on one thread while
	 * another writes the preface, and this read's program may run after
	 * that write and before the write's own program has decided (about
	 * 2 % of such connections were h2-midstream). The preface, if it was
	 * written, is then still to be walked: want_preface checks it. */
	int fresh_client = p == PROTO_H2_MIDSTREAM && w->dir == DIR_INGRESS &&
			   written_at_most(w->sk, H2_PREFACE_LEN);
	if (fresh_server || fresh_client)
		p = PROTO_H2;
	if (!p)
		return 0;
	/* The client preface travels in the direction it was seen in, or
	 * for a server that wrote first, towards the server. */
	__u32 preface_dir = fresh_server ? DIR_INGRESS : fresh_client ? DIR_EGRESS : w->dir;
	return p | preface_dir << 8 | (fresh_server | fresh_client) << 9;
}

/* Sets up a connection recognised on this chunk. */
static __always_inline void conn_begin(struct conn_state *c, struct work *w, __u32 slot, int pd)
{
	__u8 p = pd & 0xff;
	__u32 preface_dir = (pd >> 8) & 1;
	int fresh = (pd >> 9) & 1;
	c->proto = p;
	c->pid = w->pid;
	if (p == PROTO_H2) {
		dir_reset(&c->d[0], DS_OK);
		dir_reset(&c->d[1], DS_OK);
		if (fresh)
			c->d[preface_dir & 1].h2.want_preface = 1;
		else
			c->d[preface_dir & 1].h2.skip = H2_PREFACE_LEN;
	} else if (p == PROTO_H2_MIDSTREAM) {
		/* Aligned on this chunk; the other direction must align itself. */
		dir_reset(&c->d[0], w->dir ? DS_UNALIGNED : DS_OK);
		dir_reset(&c->d[1], w->dir ? DS_OK : DS_UNALIGNED);
	} else {
		/* This direction is at a message start; the other one syncs at
		 * its first read that begins with a start line (at once on a new
		 * connection, and never inside a body on an old one). */
		dir_reset(&c->d[0], DS_OK);
		dir_reset(&c->d[1], DS_OK);
		c->d[w->dir & 1].h1.mode = H1_START;
	}
	if (conn_name(c)) {
		w->conn_id = c->conn_id;
		emit_conn(slot, pd & 0x1ff);
	}
}

/* One chunk of w->len bytes of connection c: w holds its socket,
 * direction, time, process and where its bytes are. */
static __always_inline int capture_chunk(struct conn_state *c, struct work *w, __u32 slot)
{
	__u32 dir = w->dir & 1;
	__u32 len = w->len;
	struct dir_state *d = &c->d[dir];
	__u32 start = chunk_tcp_start(w->sk, dir, len);
	__u32 gap = d->tcp_known ? start - d->next_tcp : 0;
	d->next_tcp = start + len;
	d->tcp_known = 1;

	span_reset(w, len);
	w->rec_len = w->rec_entries = 0;
	w->known_fd = c->fd;
	w->win_max = WIN;
	if (c->proto == 0) {
		/* Detection looks at a few bytes at the start of a frame or
		 * two: it reads DETECT_WIN, not the chunk (most chunks seen
		 * here are other protocols' first ones, up to 16 KiB of TLS). */
		w->win_max = DETECT_WIN;
		int pd = decide(slot);
		w->win_max = WIN;
		if (!pd) {
			c->fd = w->known_fd;
			if (++c->tries >= DETECT_TRIES)
				c->proto = PROTO_NOT_HTTP;
			return 0;
		}
		conn_begin(c, w, slot, pd);
		gap = 0;
	}
	if (c->proto == PROTO_NOT_HTTP)
		return 0;
	count_drop(STAT_CHUNKS);
	w->conn_id = c->conn_id;
	if (dir)
		w->st = c->d[1];
	else
		w->st = c->d[0];
	w->h1_upgraded = c->h1_upgraded;
	w->h1_req_dir = c->h1_req_dir;
	w->h1_reqs = c->h1_reqs;
	w->h1_resps = c->h1_resps;
	w->h1_head_bits = c->h1_head_bits;

	__u8 proto = c->proto;
	if (gap) {
		/* Bytes moved where the hooks did not see them (splice,
		 * io_uring, a read before attach that returned later...). Inside
		 * a DATA payload or a body they are only counted. */
		__u8 src = w->src;
		w->src = SRC_NONE;
		if (gap < (1u << 30))
			walk_span(w, slot, proto, gap);
		else if (proto == PROTO_H1)
			h1_lose(slot);
		else
			h2_lose(slot);
		w->src = src;
	}
	walk_span(w, slot, proto, len);
	if (w->rec_entries)
		rec_flush(slot);
	if (proto == PROTO_H1 ? w->st.h1.hidden != 0 : w->st.h2.acc_on)
		w->st.last_ts = chunk_time(w);

	if (dir)
		c->d[1] = w->st;
	else
		c->d[0] = w->st;
	if (c->fd != w->known_fd)
		c->fd = w->known_fd;
	/* Each side writes only what it owns: requests and responses are
	 * counted by the directions that carry them. */
	if (w->h1_upgraded)
		c->h1_upgraded = 1;
	if (w->h1_reqs != c->h1_reqs) {
		c->h1_reqs = w->h1_reqs;
		c->h1_head_bits = w->h1_head_bits;
		if (!c->h1_req_dir)
			c->h1_req_dir = 1 + dir;
	}
	if (w->h1_resps != c->h1_resps)
		c->h1_resps = w->h1_resps;
	return 0;
}

/* What a direction holds back when its connection ends: DATA summed and
 * body bytes no entry stood for yet go out, with the time they moved. */
__noinline int flush_pending(__u32 slot, __u32 proto)
{
	struct work *w = work_get(slot);
	struct rec_buf *r = rec_get(slot);
	if (!w || !r)
		return 0;
	w->rec_len = w->rec_entries = 0;
	w->ent_open = w->ent_data = 0;
	w->ts = w->st.last_ts;
	if (proto == PROTO_H1) {
		h1_end(slot);
	} else if (w->st.h2.acc_on) {
		acc_flush(slot);
	}
	rec_flush(slot);
	return 0;
}

/* The connection ends: what it holds back goes out, then EV_CLOSE. */
static __always_inline void conn_end(struct conn_state *c, struct work *w, __u32 slot)
{
	if (!c->conn_id || c->proto == PROTO_NOT_HTTP)
		return;
	w->conn_id = c->conn_id;
	w->pid = c->pid;
	w->tid = 0;
	for (__u32 dir = 0; dir < 2; dir++) {
		if (c->proto == PROTO_H1 ? !c->d[dir].h1.hidden : !c->d[dir].h2.acc_on)
			continue;
		w->dir = dir;
		w->st = c->d[dir];
		flush_pending(slot, c->proto);
		c->d[dir] = w->st;
	}
	emit_conn_event(c->conn_id, c->pid, EV_CLOSE);
}
