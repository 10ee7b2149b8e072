// Package datapath loads sextant's policy programs (policy/bpf), attaches
// them to endpoints (cgroup hooks on a cgroup endpoint, TCX on the
// interfaces of a network-namespace endpoint), pins programs' links and
// maps under bpffs so that enforcement survives an agent restart, switches
// policy revisions atomically and reads the verdict records.
package datapath

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target amd64 -type policy_config -type ep_info -type pol_key -type pol_val -type ipc_key -type listen_key -type listen_val -type flow_key -type flow_val -type verdict_rec -type direction -type ep_flags -type verdict -type reason -type hook -type counter policy ../bpf/policy.c -- -I../bpf -I/usr/include/x86_64-linux-gnu -O2 -g -Wall
