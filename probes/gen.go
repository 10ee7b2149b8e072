// Package probes checks the kernel, loads sextant's eBPF programs, attaches
// them (socket capture: the sock_send_length/sock_recv_length/
// tcp_destroy_sock tracepoints; syscall capture, the fallback: raw
// sys_enter/sys_exit and process exit) and decodes the records they ship
// (see bpf/events.h).
package probes

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target amd64 -type ev_header -type ev_conn -type ev_chunk -type ev_entry -type ev_kind -type ev_dir -type conn_proto -type parse_err -type drop_reason -type stat_counter sextant bpf/sextant.c -- -I./bpf -O2 -g -Wall
