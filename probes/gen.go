// Package probes loads sextant's eBPF programs, attaches them to the raw
// syscall entry/exit and process-exit tracepoints and decodes the records
// they ship (see bpf/events.h).
package probes

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target amd64 -type ev_header -type ev_conn -type ev_chunk -type ev_entry -type ev_kind -type ev_dir -type conn_proto -type parse_err -type drop_reason -type stat_counter sextant bpf/sextant.c -- -I./bpf -O2 -g -Wall
