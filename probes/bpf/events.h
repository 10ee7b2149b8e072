// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// The wire format between the kernel programs and user space (probes/Go).
// Every record in the ring buffer starts with struct ev_header; `kind`
// says which struct follows. Keep this file the single source of truth:
// bpf2go generates the Go mirror from it (-type flags in gen.go). Other
// kernel programs (policy) include it with emit.h, not the capture code.
#pragma once

enum ev_kind {
	EV_CONN = 1,      /* first HTTP bytes on a connection: tuple + process;
	                     hdr.dir is the direction of the chunk that was recognised */
	EV_CLOSE = 2,     /* a connection that had EV_CONN was closed (socket capture:
	                     destroyed, after its last read or write) */
	EV_H2_FRAME = 3,  /* entry: one HTTP/2 frame that matters (HEADERS/CONTINUATION/
	                     PUSH_PROMISE piece, RST_STREAM, GOAWAY, SETTINGS) or a
	                     summary of DATA frames of one stream */
	EV_H1_DATA = 4,   /* entry: part of one read/write of HTTP/1.x bytes */
	EV_PARSE_ERR = 5, /* entry: the frame parser gave up on one direction */
	EV_PROC_EXIT = 6, /* syscall capture: the last thread of hdr.pid, a process
	                     that had HTTP connections, exited: every connection of it
	                     is closed (no per-connection EV_CLOSE follows) */
	EV_CHUNK = 7,     /* what one read/write (chunk) of a connection direction
	                     carries that user space needs: struct ev_chunk, then
	                     `entries` entries (struct ev_entry + its bytes) */
};

enum ev_dir {
	DIR_EGRESS = 0,  /* bytes the process wrote */
	DIR_INGRESS = 1, /* bytes the process read */
};

enum conn_proto {
	PROTO_H2 = 1,           /* saw the client preface: parse state exact from byte 0 */
	PROTO_H2_MIDSTREAM = 2, /* joined an open connection by frame-shape validation */
	PROTO_H1 = 3,           /* HTTP/1.x request or status line */
};

enum parse_err {
	PERR_BAD_FRAME = 1,   /* frame header failed validation (length/type/stream id) */
	PERR_TOO_MANY = 2,    /* more frames in one chunk than one pass may walk */
	PERR_LOST = 3,        /* a record of this direction could not be reserved */
};

/* Per-CPU drop counters (array map `drops`, index = reason). */
enum drop_reason {
	DROP_RINGBUF_FULL = 0, /* entries lost because the ring buffer was full */
	DROP_CONN_TABLE = 1,   /* connection state could not be stored */
	DROP_IOV = 2,          /* vectored I/O with more segments than walked */
	DROP_FRAMES = 3,       /* chunk held more frames than one pass walks */
	DROP_STREAM_TABLE = 4, /* per-stream gRPC state could not be stored */
	DROP_PARSE_STOP = 5,   /* a direction stopped parsing (EV_PARSE_ERR); its later bytes are not shipped */
	DROP_UNSEEN = 6,       /* bytes that held frame or message boundaries moved by a path
	                          the probes cannot read (io_uring, sendmmsg, splice,
	                          sendfile, zero-copy receive, a concurrent writer): the
	                          direction lost its place and says so by a sequence gap */
	DROP_MAX = 7,
};

/* Counters of work done, after the drops in the same per-CPU array. */
enum stat_counter {
	STAT_USER_READS = DROP_MAX, /* bpf_probe_read_user calls for chunk bytes */
	STAT_CHUNKS = DROP_MAX + 1, /* chunks of HTTP connections walked */
	STAT_MAX = DROP_MAX + 2,
};

struct ev_header {
	__u64 ts_ns;   /* bpf_ktime_get_ns(): egress when the bytes left, ingress when the read returned */
	__u64 conn_id; /* unique per connection for the life of the loaded programs */
	__u32 pid;     /* tgid */
	__u32 tid;
	__u32 seq;     /* EV_CHUNK: seq of its first entry; entries of one connection
	                  direction are numbered 0, 1, 2, ...: a gap means entries were
	                  lost (a failed ring write still consumes its numbers) */
	__u16 data_len; /* bytes following the fixed struct */
	__u8 kind;     /* enum ev_kind */
	__u8 dir;      /* enum ev_dir */
};

struct ev_conn {
	struct ev_header hdr;
	__u64 cgroup_id; /* cgroup v2 id of the task (inode of its cgroup dir) */
	__u32 uid;
	__u32 fd;        /* the fd the chunk moved through, when known (0 otherwise) */
	__u16 family;    /* AF_INET / AF_INET6 */
	__u16 lport;     /* host byte order */
	__u16 rport;     /* host byte order */
	__u8 proto;      /* enum conn_proto */
	__u8 preface_dir; /* PROTO_H2: enum ev_dir the client preface travels in
	                     (seen, or still expected by a server that wrote
	                     first); DIR_EGRESS: this process is the client */
	__u8 laddr[16];  /* IPv4 in the first 4 bytes */
	__u8 raddr[16];
	char comm[16];
};

struct ev_chunk {
	struct ev_header hdr; /* data_len: bytes of entries that follow */
	__u32 entries;
	__u32 _pad;
};

/* One entry of an EV_CHUNK: user space turns each into one event. */
struct ev_entry {
	__u8 kind;       /* EV_H2_FRAME, EV_H1_DATA or EV_PARSE_ERR */
	__u8 type;       /* H2: frame type */
	__u8 flags;      /* H2: frame flags (DATA summary: END_STREAM only) */
	__u8 static_idx; /* HEADERS, offset 0: first field when it is static-table indexed (2..61), else 0 */
	__u16 data_len;  /* bytes following this entry */
	__u16 _pad;
	__u32 stream_id; /* H2 */
	__u32 len;       /* H2: frame payload length; DATA summary: data bytes of the
	                    summed frames, padding excluded. H1: bytes of the read/write
	                    this entry stands for, shipped or not */
	__u32 offset;    /* H2 HEADERS/CONTINUATION/PUSH_PROMISE: offset of the bytes
	                    within the frame payload */
	__u32 grpc_msgs; /* DATA summary: gRPC length-prefixed messages that began in it */
	__u32 value;     /* RST_STREAM/GOAWAY: error code; PARSE_ERR: enum parse_err */
	__u32 value2;    /* GOAWAY: last stream id */
	/* bytes[data_len]: H2 header block piece (raw: pad length, priority and
	   padding included); SETTINGS payload; H1: the first bytes of the part
	   (a start line and header block, chunk-size lines, trailers; never
	   body bytes); PARSE_ERR: the offending 9-byte frame header */
};
