// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// The ring buffer every sextant program ships records through, its batched
// wakeups and the per-CPU drop counters. Programs that only emit records
// (policy verdicts next) include events.h and this file, not the capture
// code.
#pragma once

#include "events.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20); /* user space sets Options.RingBufferBytes */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* Set by user space before load: wake the reader once per 2^wakeup_shift
 * bytes queued; it polls on a short timer for the rest (a wakeup per
 * record costs more than the record). */
const volatile __u32 wakeup_shift = 18; /* 256 KiB */

static __always_inline void count_drops(__u32 reason, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&drops, &reason);
	if (v)
		*v += n;
}

static __always_inline void count_drop(__u32 reason)
{
	count_drops(reason, 1);
}

/* Batched wakeups (see wakeup_shift): a record wakes the reader when it
 * takes the queued data (or, for chunk records, what its CPU shipped)
 * across a multiple of 2^wakeup_shift bytes. Waking
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

/* A per-connection record (EV_CLOSE, EV_PROC_EXIT): seq 0, not counted. */
static __always_inline int emit_conn_event(__u64 conn_id, __u32 pid, __u32 kind)
{
	struct ev_header *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(DROP_RINGBUF_FULL);
		return -1;
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
