// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// HTTP/1.x framing. The kernel follows where messages begin and end
// (Content-Length, chunked, no-body responses, HEAD, 1xx, upgrades) so it
// can ship exactly the bytes user space parses (start lines and header
// blocks, chunk-size lines, trailers) and only count body bytes. One read
// may hold several pipelined messages: each gets its own entry. A chunk
// inside a body costs no read and, unless the body ends in it, no record.
// User space parses the shipped bytes itself (net/http); the kernel's
// framing only decides what is shipped.
#pragma once

#include "chunk.h"

enum h1_mode {
	H1_SYNC = 0,       /* lost its place: a read that begins with a start line resyncs */
	H1_START = 1,      /* at a message boundary */
	H1_HEAD = 2,       /* in a start line and header block */
	H1_BODY = 3,       /* Content-Length body: h1_left bytes to come */
	H1_CHUNK_SIZE = 4, /* chunked: in a chunk-size line */
	H1_CHUNK_DATA = 5, /* chunked: h1_left bytes of chunk data to come */
	H1_CHUNK_END = 6,  /* chunked: the CRLF after chunk data */
	H1_TRAILER = 7,    /* chunked: trailer lines after the last chunk */
	H1_CLOSE = 8,      /* body delimited by the connection's end */
	H1_DONE = 9,       /* protocol switched: nothing more to follow */
};

enum h1_line {
	L_START = 0, /* the start line */
	L_NAME = 1,  /* a header line, its name not decided yet */
	L_CL = 2,    /* Content-Length value */
	L_TE = 3,    /* Transfer-Encoding value */
	L_SKIP = 4,  /* any other header line */
};

#define H1B_RESPONSE 0x01 /* the message is a response */
#define H1B_CL 0x02       /* it has a Content-Length */
#define H1B_CHUNKED 0x04  /* its last transfer coding is chunked */
#define H1B_HEAD 0x08     /* request: HEAD (its response has no body) */
#define H1B_CONNECT 0x10  /* request: CONNECT (what follows is a tunnel) */
#define H1B_EXT 0x20      /* chunk-size line: in an extension */

#define H1_RUN 64 /* bytes one walker step looks at */
/* A header block longer than user space gathers (http1.Config's default
 * MaxHeaderBytes) is reported truncated there; the kernel stops shipping
 * it and waits for a read that begins with a start line. */
#define H1_MAX_HEAD (16 << 10)

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

static const char h1_cl_name[16] = "content-length:";
static const char h1_te_name[24] = "transfer-encoding:";
static const char h1_chunked[8] = "chunked";

/* Opens an entry for the bytes at w->pos, after an entry for the bytes
 * no entry stood for yet. Leaves room for H1_RUN bytes. */
__noinline int h1_open(__u32 slot)
{
	struct work *w = work_get(slot);
	struct rec_buf *r = rec_get(slot);
	if (!w || !r)
		return 0;
	if (w->st.h1.hidden) {
		struct ev_entry *e = rec_entry(w, r, slot, EV_H1_DATA);
		e->len = w->st.h1.hidden > 0xffffffff ? 0xffffffff : w->st.h1.hidden;
		w->st.h1.hidden = 0;
	}
	w->ent_off = w->rec_len;
	rec_entry(w, r, slot, EV_H1_DATA);
	w->ent_open = 1;
	w->ent_data = 1;
	return 0;
}

/* n bytes of the chunk that no entry ships: they extend the open entry
 * (a body after its head in the same read), or wait in h1_hidden. */
static __always_inline void h1_count(struct work *w, struct rec_buf *r, __u64 n)
{
	if (w->ent_open) {
		struct ev_entry *e = (void *)&r->data[w->ent_off & (RMAX - 1)];
		e->len += n;
		w->ent_data = 0;
	} else {
		w->st.h1.hidden += n;
	}
	w->pos += n;
}

/* A message ended in this chunk: the record must go out, with its time. */
__noinline int h1_end(__u32 slot)
{
	struct work *w = work_get(slot);
	struct rec_buf *r = rec_get(slot);
	if (!w || !r)
		return 0;
	if (!w->ent_open && w->st.h1.hidden) {
		struct ev_entry *e = rec_entry(w, r, slot, EV_H1_DATA);
		e->len = w->st.h1.hidden > 0xffffffff ? 0xffffffff : w->st.h1.hidden;
		w->st.h1.hidden = 0;
	}
	w->st.h1.mode = (w->st.h1.bits & H1B_RESPONSE) && w->h1_upgraded ? H1_DONE : H1_START;
	return 0;
}

/* Bytes a direction needed could not be read: it waits for a read that
 * begins with a start line, and user space learns of the loss by a gap. */
__noinline int h1_lose(__u32 slot)
{
	struct work *w = work_get(slot);
	if (!w)
		return 1;
	lose(slot);
	w->st.h1.mode = H1_SYNC;
	w->st.h1.hidden = 0;
	return 1;
}

/* The start line is complete: what kind of message it begins. */
static __always_inline void h1_start_line(struct work *w)
{
	const __u8 *s = w->st.h1.sl;
	if (s[0] == 'H' && s[1] == 'T' && s[2] == 'T' && s[3] == 'P' && s[4] == '/') {
		w->st.h1.bits |= H1B_RESPONSE;
		/* "HTTP/1.1 200": the status in bytes 9..11, kept in h1_cl
		 * until the header block ends */
		__u32 st = 0;
		for (int i = 9; i < 12; i++) {
			__u8 c = s[i];
			if (c < '0' || c > '9')
				return;
			st = st * 10 + (c - '0');
		}
		w->st.h1.sl[15] = 1; /* status known */
		w->st.h1.line_len = 0;
		w->st.h1.left = st;
		return;
	}
	if (s[0] == 'H' && s[1] == 'E' && s[2] == 'A' && s[3] == 'D' && s[4] == ' ')
		w->st.h1.bits |= H1B_HEAD;
	if (s[0] == 'C' && s[1] == 'O' && s[2] == 'N' && s[3] == 'N' && s[4] == 'E' && s[5] == 'C' &&
	    s[6] == 'T' && s[7] == ' ')
		w->st.h1.bits |= H1B_CONNECT;
}

/* The header block ended: where the body is and how it ends. */
__noinline int h1_head_end(__u32 slot)
{
	struct work *w = work_get(slot);
	if (!w)
		return 0;
	__u8 bits = w->st.h1.bits;
	__u64 cl = w->st.h1.cl;
	if (!(bits & H1B_RESPONSE)) {
		__u64 bit = 1ULL << (w->h1_reqs & 63);
		if (bits & H1B_HEAD)
			w->h1_head_bits |= bit;
		else
			w->h1_head_bits &= ~bit;
		w->h1_reqs++;
		if (bits & H1B_CONNECT) {
			w->h1_upgraded = 1;
			h1_end(slot);
			w->st.h1.mode = H1_DONE;
			return 0;
		}
		goto body;
	}
	__u32 status = w->st.h1.sl[15] ? (__u32)w->st.h1.left : 0;
	if (status >= 100 && status < 200 && status != 101)
		return h1_end(slot); /* informational: the final response follows */
	__u32 i = w->h1_resps++;
	int head = i < w->h1_reqs && ((w->h1_head_bits >> (i & 63)) & 1);
	if (status == 101) {
		w->h1_upgraded = 1;
		h1_end(slot);
		w->st.h1.mode = H1_DONE;
		return 0;
	}
	if (head || status == 204 || status == 304 || (w->h1_upgraded && status / 100 == 2)) {
		/* CONNECT 2xx: h1_end switches to DONE */
		return h1_end(slot);
	}
	if (!(bits & (H1B_CHUNKED | H1B_CL))) {
		w->st.h1.mode = H1_CLOSE; /* until the connection ends */
		return 0;
	}
body:
	if (bits & H1B_CHUNKED) {
		w->st.h1.mode = H1_CHUNK_SIZE;
		w->st.h1.left = 0;
		w->st.h1.bits &= H1B_RESPONSE;
		return 0;
	}
	if ((bits & H1B_CL) && cl) {
		w->st.h1.mode = H1_BODY;
		w->st.h1.left = cl;
		return 0;
	}
	return h1_end(slot);
}

static __always_inline __u8 lower(__u8 c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* One byte of a start line or header block. Returns 1 at its end. */
static __always_inline int h1_head_byte(struct work *w, __u8 c)
{
	struct dir_state *d = &w->st;
	if (c == '\n') {
		__u32 n = d->h1.line_len;
		__u8 line = d->h1.line;
		d->h1.line_len = 0;
		if (line == L_START) {
			if (d->h1.sl_have == 0)
				return 0; /* empty lines before a start line */
			h1_start_line(w);
			d->h1.line = L_NAME;
			d->h1.cl_i = d->h1.te_i = 0;
			return 0;
		}
		d->h1.line = L_NAME;
		d->h1.cl_i = d->h1.te_i = 0;
		return n <= 1; /* "\r\n" or "\n": the block ends */
	}
	d->h1.line_len++;
	switch (d->h1.line) {
	case L_START:
		if (d->h1.sl_have == 0 && c == '\r')
			d->h1.line_len = 0;
		else if (d->h1.sl_have < 15)
			d->h1.sl[d->h1.sl_have++ & 15] = c;
		break;
	case L_NAME: {
		__u8 l = lower(c);
		__u8 i = d->h1.cl_i;
		if (i < 15 && l == (__u8)h1_cl_name[i & 15]) {
			d->h1.cl_i = ++i;
			if (i == 15) {
				d->h1.line = L_CL;
				d->h1.cl = 0;
				d->h1.bits |= H1B_CL;
				break;
			}
		} else {
			d->h1.cl_i = 0xff;
		}
		i = d->h1.te_i;
		if (i < 18 && l == (__u8)h1_te_name[i & 31]) {
			d->h1.te_i = ++i;
			if (i == 18) {
				d->h1.line = L_TE;
				d->h1.ch_i = 0;
				d->h1.bits &= ~H1B_CHUNKED;
				break;
			}
		} else {
			d->h1.te_i = 0xff;
		}
		if (d->h1.cl_i == 0xff && d->h1.te_i == 0xff)
			d->h1.line = L_SKIP;
		break;
	}
	case L_CL:
		if (c >= '0' && c <= '9' && d->h1.cl < (1ULL << 56))
			d->h1.cl = d->h1.cl * 10 + (c - '0');
		break;
	case L_TE: {
		/* chunked must be the last coding: any other token after it
		 * clears the flag again */
		__u8 l = lower(c);
		__u8 i = d->h1.ch_i;
		if (l == ' ' || l == '\t' || l == '\r' || l == ',') {
			if (i != 7)
				d->h1.ch_i = 0;
			if (l == ',')
				d->h1.ch_i = 0;
		} else if (i < 7 && l == (__u8)h1_chunked[i & 7]) {
			d->h1.ch_i = ++i;
			if (i == 7)
				d->h1.bits |= H1B_CHUNKED;
		} else {
			d->h1.bits &= ~H1B_CHUNKED;
			d->h1.ch_i = l == 'c' ? 1 : 8;
		}
		break;
	}
	}
	return 0;
}

static __always_inline int hexval(__u8 c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = lower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* One byte of a chunk-size line, the CRLF after chunk data or a trailer
 * line. Returns 1 when the mode changed. */
static __always_inline int h1_chunk_byte(struct work *w, __u8 c)
{
	struct dir_state *d = &w->st;
	switch (d->h1.mode) {
	case H1_CHUNK_SIZE:
		if (c == '\n') {
			d->h1.bits &= ~H1B_EXT;
			d->h1.line_len = 0;
			d->h1.mode = d->h1.left ? H1_CHUNK_DATA : H1_TRAILER;
			return 1;
		}
		if (c == ';')
			d->h1.bits |= H1B_EXT;
		if (!(d->h1.bits & H1B_EXT)) {
			int v = hexval(c);
			if (v >= 0 && d->h1.left < (1ULL << 56))
				d->h1.left = d->h1.left * 16 + v;
		}
		return 0;
	case H1_CHUNK_END:
		if (c == '\n') {
			d->h1.mode = H1_CHUNK_SIZE;
			d->h1.left = 0;
			return 1;
		}
		return 0;
	case H1_TRAILER:
		if (c == '\n') {
			__u32 n = d->h1.line_len;
			d->h1.line_len = 0;
			if (n <= 1) {
				d->h1.mode = H1_START; /* h1_end follows */
				return 1;
			}
			return 0;
		}
		d->h1.line_len++;
		return 0;
	}
	return 1;
}

/* Needed bytes (head, chunk framing): up to H1_RUN of them from the
 * window, shipped in the open entry. */
__noinline int h1_needed(__u32 slot)
{
	struct work *w = work_get(slot);
	struct rec_buf *r = rec_get(slot);
	if (!w || !r)
		return 1;
	__u32 a = fetch(w, slot);
	if (a == 0)
		return h1_lose(slot);
	if (!w->ent_open || !w->ent_data) {
		h1_open(slot);
		if (!w->ent_open)
			return 1;
	}
	__u32 k = min32(a, H1_RUN);
	__u32 o = w->pos - w->win_start;
	__u8 mode = w->st.h1.mode;
	__u32 used = 0;
	int ended = 0;
	for (int i = 0; i < H1_RUN; i++) {
		if (i >= k)
			break;
		__u8 c = win_at(w, o + i);
		used++;
		if (mode == H1_HEAD) {
			if (h1_head_byte(w, c)) {
				ended = 1;
				break;
			}
		} else if (h1_chunk_byte(w, c)) {
			ended = 1;
			break;
		}
	}
	struct ev_entry *e = (void *)&r->data[w->ent_off & (RMAX - 1)];
	e->len += used;
	rec_bytes(w, r, w->ent_off, o, used);
	w->pos += used;
	if (mode == H1_HEAD && !ended) {
		w->st.h1.head_len += used;
		if (w->st.h1.head_len > H1_MAX_HEAD)
			w->st.h1.mode = H1_SYNC;
	}
	if (!ended)
		return 0;
	if (mode == H1_HEAD)
		return h1_head_end(slot);
	if (mode == H1_TRAILER)
		return h1_end(slot);
	return 0;
}

/* One walker step. Returns 1 to stop. */
__noinline int h1_step(__u32 slot)
{
	struct work *w = work_get(slot);
	struct rec_buf *r = rec_get(slot);
	if (!w || !r)
		return 1;
	if (w->pos >= w->len)
		return 1;
	rec_reserve(w, slot);
	__u32 rest = w->len - w->pos;
	switch (w->st.h1.mode) {
	case H1_DONE:
		w->pos = w->len;
		return 1;
	case H1_SYNC: {
		/* a message can only be found again at the start of a read */
		__u32 a = w->pos == 0 && w->src != SRC_NONE ? gather(slot, 0, 8) : 0;
		if (a == 0 || !is_h1_start(w->peek, a)) {
			w->pos = w->len;
			return 1;
		}
		w->st.h1.mode = H1_START;
		return 0;
	}
	case H1_START:
		if (w->h1_upgraded && w->h1_req_dir == 1 + w->dir) {
			/* the response switched protocols: these are not requests */
			w->st.h1.mode = H1_DONE;
			return 0;
		}
		w->st.h1.mode = H1_HEAD;
		w->st.h1.line = L_START;
		w->st.h1.line_len = 0;
		w->st.h1.sl_have = 0;
		w->st.h1.head_len = 0;
		w->st.h1.bits = 0;
		w->st.h1.cl = 0;
		w->st.h1.left = 0;
		__builtin_memset(w->st.h1.sl, 0, sizeof(w->st.h1.sl));
		if (w->ent_open && w->ent_data) {
			/* pipelined: a message per entry */
			w->ent_data = 0;
		}
		return 0;
	case H1_BODY:
	case H1_CHUNK_DATA: {
		__u64 k = w->st.h1.left < rest ? w->st.h1.left : rest;
		h1_count(w, r, k);
		w->st.h1.left -= k;
		if (w->st.h1.left)
			return 1;
		if (w->st.h1.mode == H1_BODY)
			return h1_end(slot);
		w->st.h1.mode = H1_CHUNK_END;
		return 0;
	}
	case H1_CLOSE:
		h1_count(w, r, rest);
		return 1;
	default:
		return h1_needed(slot);
	}
}
