// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// HTTP/2 frame walker. Frame headers, header block pieces, SETTINGS,
// RST_STREAM and GOAWAY are read with plain loads from the chunk's window;
// DATA payloads are skipped by count (gRPC 5-byte prefixes are looked at
// where a message begins) and reported as per-stream summaries: bytes,
// gRPC messages, END_STREAM. A chunk that lies inside a DATA payload
// costs no read and no record. HPACK is never decoded here: header block
// bytes are shipped raw and in order.
//
// Verifier budget: the walker is a bpf_loop callback calling global
// (separately verified) functions; all working state lives in struct work.
#pragma once

#include "chunk.h"

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

#define MAX_SETTINGS 256 /* SETTINGS payload bytes shipped at most */

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

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct stream_key);
	__type(value, struct grpc_state);
} streams SEC(".maps");

static const char h2_preface[H2_PREFACE_LEN] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* Is this frame header plausible? strict: used to find frame boundaries
 * on a connection we joined midstream, so also demand what well-behaved
 * peers always do (known type, reserved bit clear, known flags only,
 * length within the default SETTINGS_MAX_FRAME_SIZE unless max_len says
 * the frame fits the chunk exactly). Non-strict: established connection,
 * only what RFC 9113 makes a connection error. */
static __always_inline int frame_ok(__u32 len, __u32 type, __u32 flags, __u32 sid_raw, __u32 max_len)
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

/* Does the span start on a frame boundary? The header at byte 0 must be
 * plausible and either end the span exactly, or be followed by another
 * plausible header, or be the whole span (Go reads headers alone). Leaves
 * w->pos at 0. */
__noinline int h2_aligned(__u32 slot)
{
	struct work *w = work_get(slot);
	if (!w)
		return 0;
	__u32 chunk = w->len;
	__u32 len, type, flags, sid;
	if (chunk < 9 || gather(slot, 0, 9) < 9)
		return 0;
	hdr_fields(w->peek, &len, &type, &flags, &sid);
	__u32 end = 9 + len;
	if (!frame_ok(len, type, flags, sid, end == chunk ? 0xffffff : H2_DEFAULT_MAX_FRAME))
		return 0;
	if (end == chunk || chunk == 9)
		return 1;
	if (end + 9 > chunk || gather(slot, end, 9) < 9) {
		w->pos = 0;
		return 0;
	}
	w->pos = 0;
	hdr_fields(w->peek, &len, &type, &flags, &sid);
	return frame_ok(len, type, flags, sid, H2_DEFAULT_MAX_FRAME);
}

/* Does the span start with (a prefix of, when shorter) the client preface? */
__noinline int h2_is_preface(__u32 slot)
{
	struct work *w = work_get(slot);
	if (!w)
		return 0;
	__u32 n = gather(slot, 0, H2_PREFACE_LEN);
	if (n < 4 || (n < H2_PREFACE_LEN && n < w->len))
		return 0;
	for (int i = 0; i < H2_PREFACE_LEN; i++) {
		if (i >= n)
			break;
		if (w->peek[i] != (__u8)h2_preface[i])
			return 0;
	}
	return 1;
}

static __always_inline void stream_key_of(struct stream_key *k, struct work *w, __u32 dir)
{
	k->conn_id = w->conn_id;
	k->stream = w->st.h2.stream;
	k->dir = dir;
}

/* Reports the DATA summed so far: one entry for its stream. */
__noinline int acc_flush(__u32 slot)
{
	struct work *w = work_get(slot);
	struct rec_buf *r = rec_get(slot);
	if (!w || !r || !w->st.h2.acc_on)
		return 0;
	struct ev_entry *e = rec_entry(w, r, slot, EV_H2_FRAME);
	e->type = F_DATA;
	e->flags = w->st.h2.acc_flags;
	e->stream_id = w->st.h2.acc_stream;
	e->len = w->st.h2.acc_bytes;
	e->grpc_msgs = w->st.h2.acc_msgs;
	w->st.h2.acc_on = 0;
	w->st.h2.acc_flags = 0;
	w->st.h2.acc_bytes = 0;
	w->st.h2.acc_msgs = 0;
	return 0;
}

/* An entry for the current frame, after any DATA summed before it (user
 * space sees every stream's frames in order). */
static __always_inline struct ev_entry *h2_entry(struct work *w, struct rec_buf *r, __u32 slot)
{
	if (w->st.h2.acc_on)
		acc_flush(slot);
	struct ev_entry *e = rec_entry(w, r, slot, EV_H2_FRAME);
	e->type = w->st.h2.type;
	e->flags = w->st.h2.flags;
	e->stream_id = w->st.h2.stream;
	e->len = w->st.h2.flen;
	e->offset = w->st.h2.off;
	return e;
}

/* One entry for the current frame without bytes (value: RST_STREAM,
 * GOAWAY error code; value2: GOAWAY last stream). */
__noinline int h2_emit(__u32 slot, __u32 value, __u32 value2)
{
	struct work *w = work_get(slot);
	struct rec_buf *r = rec_get(slot);
	if (!w || !r)
		return 0;
	struct ev_entry *e = h2_entry(w, r, slot);
	e->value = value;
	e->value2 = value2;
	return 0;
}

/* One entry for the current frame with the n window bytes at w->pos:
 * a header block piece (first field's static index as a hint at offset
 * 0) or a SETTINGS payload. */
static __always_inline int h2_emit_bytes(struct work *w, __u32 slot, __u32 n)
{
	struct rec_buf *r = rec_get(slot);
	if (!r)
		return 0;
	n = min32(n, WIN);
	struct ev_entry *e = h2_entry(w, r, slot);
	__u32 eoff = w->rec_len - sizeof(struct ev_entry);
	__u32 woff = w->pos - w->win_start;
	if (w->st.h2.type == F_HEADERS && w->st.h2.off == 0) {
		/* A cheap hint for user space (e.g. :method GET = 2, :status 200 = 8)
		 * when the block starts with an indexed static-table field. */
		__u32 skip = 0;
		if (w->st.h2.flags & FL_PADDED)
			skip += 1;
		if (w->st.h2.flags & FL_PRIORITY)
			skip += 5;
		if (skip < n) {
			__u8 b = win_at(w, woff + skip);
			__u8 idx = b & 0x7f;
			if ((b & 0x80) && idx >= 2 && idx <= 61)
				e->static_idx = idx;
		}
	}
	rec_bytes(w, r, eoff, woff, n);
	return 0;
}

/* This direction stops parsing: HPACK/stream state beyond this point is
 * unknown to user space anyway. */
__noinline int h2_stop(__u32 slot, __u32 reason)
{
	struct work *w = work_get(slot);
	struct rec_buf *r = rec_get(slot);
	if (!w || !r)
		return 1;
	if (w->st.h2.acc_on)
		acc_flush(slot);
	w->st.status = DS_DEAD;
	count_drop(DROP_PARSE_STOP);
	__u32 eoff = w->rec_len & (RMAX - 1);
	struct ev_entry *e = rec_entry(w, r, slot, EV_PARSE_ERR);
	e->value = reason;
	e->data_len = 9;
	__builtin_memcpy(&r->data[(eoff + sizeof(struct ev_entry)) & (RMAX - 1)], w->st.h2.hdr, 9);
	w->rec_len += 9;
	return 1;
}

/* Bytes that held frame boundaries could not be read: report the DATA
 * summed so far, skip a sequence number and look for a frame boundary
 * again (like a connection joined midstream). */
__noinline int h2_lose(__u32 slot)
{
	struct work *w = work_get(slot);
	if (!w)
		return 1;
	if (w->st.h2.acc_on)
		acc_flush(slot);
	lose(slot);
	__u32 seq = w->st.seq;
	__u32 used = w->st.h2.streams_used;
	__u32 next_tcp = w->st.next_tcp;
	__u8 known = w->st.tcp_known;
	__u64 last = w->st.last_ts;
	__builtin_memset(&w->st, 0, sizeof(w->st));
	w->st.seq = seq;
	w->st.h2.streams_used = used;
	w->st.next_tcp = next_tcp;
	w->st.tcp_known = known;
	w->st.last_ts = last;
	w->st.status = DS_UNALIGNED;
	return 1;
}

/* Completes the current frame. */
__noinline int frame_end(__u32 slot)
{
	struct work *w = work_get(slot);
	if (!w)
		return 1;
	struct stream_key k = {};
	stream_key_of(&k, w, w->dir);
	switch (w->st.h2.type) {
	case F_DATA: {
		if (w->st.h2.acc_on && w->st.h2.acc_stream != w->st.h2.stream)
			acc_flush(slot);
		__u32 pad = (w->st.h2.flags & FL_PADDED) ? 1 + w->st.h2.pad_len : 0;
		w->st.h2.acc_on = 1;
		w->st.h2.acc_stream = w->st.h2.stream;
		w->st.h2.acc_bytes += w->st.h2.flen - pad;
		w->st.h2.acc_msgs += w->st.h2.grpc_msgs;
		if (w->st.h2.flags & FL_END_STREAM) {
			w->st.h2.acc_flags = FL_END_STREAM;
			acc_flush(slot);
			if (w->st.h2.stream_known)
				bpf_map_delete_elem(&streams, &k);
		} else if (w->st.h2.msg_left || w->st.h2.pfx_have) {
			struct grpc_state g = {};
			g.msg_left = w->st.h2.msg_left;
			g.pfx_have = w->st.h2.pfx_have;
			__builtin_memcpy(g.pfx, w->st.h2.pfx, sizeof(g.pfx));
			if (bpf_map_update_elem(&streams, &k, &g, BPF_ANY))
				count_drop(DROP_STREAM_TABLE);
			else
				w->st.h2.streams_used = 1;
		} else if (w->st.h2.stream_known) {
			bpf_map_delete_elem(&streams, &k);
		}
		break;
	}
	case F_RST_STREAM:
		h2_emit(slot, be32(w->st.h2.val), 0);
		if (w->st.h2.streams_used) {
			bpf_map_delete_elem(&streams, &k);
			k.dir = !w->dir;
			bpf_map_delete_elem(&streams, &k);
		}
		break;
	case F_GOAWAY:
		h2_emit(slot, be32(w->st.h2.val + 4), be32(w->st.h2.val) & 0x7fffffff);
		break;
	}
	w->st.h2.in_payload = 0;
	w->st.h2.off = 0;
	return 0;
}

/* A complete frame header was collected. */
static __always_inline int frame_begin(struct work *w, __u32 slot)
{
	__u32 len, type, flags, sid;
	hdr_fields(w->st.h2.hdr, &len, &type, &flags, &sid);
	w->st.h2.hdr_have = 0;
	if (!frame_ok(len, type, flags, sid, 0))
		return h2_stop(slot, PERR_BAD_FRAME);
	w->st.h2.flen = len;
	w->st.h2.type = type;
	w->st.h2.flags = flags;
	w->st.h2.stream = sid & 0x7fffffff;
	w->st.h2.off = 0;
	w->st.h2.in_payload = 1;
	w->st.h2.pad_len = 0;
	w->st.h2.grpc_msgs = 0;
	__builtin_memset(w->st.h2.val, 0, sizeof(w->st.h2.val));
	if (type == F_DATA) {
		struct stream_key k = {};
		stream_key_of(&k, w, w->dir);
		/* Most directions never leave a message open across frames
		 * (small messages, plain HTTP bodies ending with END_STREAM):
		 * they skip the hash lookup per DATA frame. */
		struct grpc_state *g = w->st.h2.streams_used ? bpf_map_lookup_elem(&streams, &k) : NULL;
		if (g) {
			w->st.h2.stream_known = 1;
			w->st.h2.msg_left = g->msg_left;
			w->st.h2.pfx_have = g->pfx_have;
			__builtin_memcpy(w->st.h2.pfx, g->pfx, sizeof(w->st.h2.pfx));
		} else {
			w->st.h2.stream_known = 0;
			w->st.h2.msg_left = 0;
			w->st.h2.pfx_have = 0;
		}
	}
	if (len == 0) {
		/* Empty payloads still produce their entry (e.g. SETTINGS ACK,
		 * an empty header block); END_STREAM DATA its summary. */
		if (type == F_HEADERS || type == F_CONTINUATION || type == F_PUSH_PROMISE ||
		    type == F_SETTINGS)
			h2_emit(slot, 0, 0);
		return frame_end(slot);
	}
	return 0;
}

/* DATA payload: pad length, then data scanned for gRPC 5-byte prefixes
 * where a message begins (message bodies are skipped, never read), then
 * padding. Bytes are counted at the frame's end. */
static __always_inline int data_step(struct work *w, __u32 slot, __u32 n)
{
	if ((w->st.h2.flags & FL_PADDED) && w->st.h2.off == 0) {
		if (fetch(w, slot) == 0)
			return h2_lose(slot);
		__u8 pl = win_at(w, w->pos - w->win_start);
		w->st.h2.pad_len = pl;
		w->st.h2.off++;
		w->pos++;
		if ((__u32)pl > w->st.h2.flen - 1)
			return h2_stop(slot, PERR_BAD_FRAME);
		return 0;
	}
	__u32 data_end = w->st.h2.flen - w->st.h2.pad_len;
	if (w->st.h2.off >= data_end) {
		w->st.h2.off += n; /* padding */
		w->pos += n;
		return 0;
	}
	__u32 k = min32(n, data_end - w->st.h2.off);
	if (w->st.h2.msg_left) {
		k = min32(k, w->st.h2.msg_left);
		w->st.h2.msg_left -= k;
		w->st.h2.off += k;
		w->pos += k;
		return 0;
	}
	/* A gRPC message begins here (or its prefix continues). */
	__u32 a = fetch(w, slot);
	if (a == 0) {
		/* Unreadable, but frame boundaries are known: only the
		 * stream's message count is lost; skip its messages. */
		w->st.h2.msg_left = 0xffffffff;
		return 0;
	}
	if (w->st.h2.pfx_have == 0)
		w->st.h2.grpc_msgs++;
	k = min32(min32(k, a), 5 - w->st.h2.pfx_have);
	__u32 o = w->pos - w->win_start;
	for (int i = 0; i < 5; i++) {
		if (i >= k)
			break;
		w->st.h2.pfx[(w->st.h2.pfx_have + i) & 7] = win_at(w, o + i);
	}
	w->st.h2.pfx_have += k;
	w->st.h2.off += k;
	w->pos += k;
	if (w->st.h2.pfx_have >= 5) {
		w->st.h2.msg_left = be32(w->st.h2.pfx + 1);
		w->st.h2.pfx_have = 0;
		/* The message's bytes in the same step, skipped by count: a
		 * DATA frame that holds one message (or a body that is no gRPC
		 * at all) is one walker step, not two. */
		__u32 rest = min32(min32(n - k, data_end - w->st.h2.off), w->st.h2.msg_left);
		w->st.h2.msg_left -= rest;
		w->st.h2.off += rest;
		w->pos += rest;
	}
	return 0;
}

static __always_inline int payload_step(struct work *w, __u32 slot)
{
	__u32 left = w->st.h2.flen - w->st.h2.off;
	__u32 n = min32(w->len - w->pos, left);
	switch (w->st.h2.type) {
	case F_HEADERS:
	case F_CONTINUATION:
	case F_PUSH_PROMISE: { /* carries a header block: HPACK needs it too */
		__u32 a = fetch(w, slot);
		if (a == 0)
			return h2_lose(slot);
		n = min32(n, a);
		h2_emit_bytes(w, slot, n);
		break;
	}
	case F_DATA:
		if (data_step(w, slot, n))
			return 1;
		goto check_end; /* data_step moved pos and off */
	case F_SETTINGS:
		/* One entry; the payload rides along when it is all in the window. */
		if (w->st.h2.off == 0) {
			__u32 a = n == left && left <= MAX_SETTINGS ? fetch(w, slot) : 0;
			if (a >= n)
				h2_emit_bytes(w, slot, n);
			else
				h2_emit(slot, 0, 0);
		}
		break;
	case F_RST_STREAM:
	case F_GOAWAY: {
		__u32 need = w->st.h2.flen < 8 ? w->st.h2.flen : 8;
		if (w->st.h2.off < need) {
			__u32 a = fetch(w, slot);
			if (a == 0)
				return h2_lose(slot);
			n = min32(min32(n, a), need - w->st.h2.off);
			__u32 o = w->pos - w->win_start;
			for (int i = 0; i < 8; i++) {
				if (i >= n)
					break;
				w->st.h2.val[(w->st.h2.off + i) & 7] = win_at(w, o + i);
			}
		}
		break;
	}
	default: /* PING, WINDOW_UPDATE, PRIORITY, extensions: no entry */
		break;
	}
	w->st.h2.off += n;
	w->pos += n;
check_end:
	if (w->st.h2.off >= w->st.h2.flen)
		return frame_end(slot);
	return 0;
}

/* One walker step: skip preface bytes, collect a frame header, or consume
 * a piece of payload. Returns 1 to stop the loop. */
__noinline int h2_step(__u32 slot)
{
	struct work *w = work_get(slot);
	if (!w)
		return 1;
	if (w->st.status != DS_OK || w->pos >= w->len)
		return 1;
	rec_reserve(w, slot);
	__u32 avail = w->len - w->pos;
	if (w->st.h2.skip) {
		__u32 k = min32(avail, w->st.h2.skip);
		w->st.h2.skip -= k;
		w->pos += k;
		return 0;
	}
	if (w->st.h2.in_payload)
		return payload_step(w, slot);
	__u32 a = fetch(w, slot);
	if (a == 0)
		return h2_lose(slot);
	__u32 o = w->pos - w->win_start;
	if (w->st.h2.hdr_have == 0 && a >= 9) {
		for (int i = 0; i < 9; i++)
			w->st.h2.hdr[i] = win_at(w, o + i);
		w->st.h2.hdr_have = 9;
		w->pos += 9;
	} else {
		/* A header split across chunks or segments: byte by byte. */
		w->st.h2.hdr[w->st.h2.hdr_have & 15] = win_at(w, o);
		w->st.h2.hdr_have++;
		w->pos++;
		if (w->st.h2.hdr_have < 9)
			return 0;
	}
	if (frame_begin(w, slot))
		return 1;
	/* The payload in the same step: one loop iteration per frame. */
	if (w->st.h2.in_payload && w->pos < w->len)
		return payload_step(w, slot);
	return 0;
}
