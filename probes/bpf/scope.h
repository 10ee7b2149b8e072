// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// Capture scope: when user space sets one (Options.Cgroup), the capture
// programs return at once for tasks outside that cgroup v2 subtree,
// before any state or counter is touched, so that a scoped instance
// neither tracks nor counts other processes' traffic.
#pragma once

/* Set by user space before load: 1 when the scope below is in force. Read
 * only: the verifier drops the check from an unscoped instance. */
const volatile __u32 scope_on = 0;

/* Slot 0: the scope's cgroup (user space puts its directory's fd). */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} scope SEC(".maps");

/* Is the current task outside the scope? bpf_current_task_under_cgroup
 * compares one ancestor of the task's cgroup with the scope's (no walk). */
static __always_inline int out_of_scope(void)
{
	return scope_on && bpf_current_task_under_cgroup(&scope, 0) != 1;
}
