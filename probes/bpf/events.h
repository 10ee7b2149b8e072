// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// The wire format between the kernel programs and user space (probes/Go).
// Every record in the ring buffer starts with struct ev_header; `kind`
// says which struct follows. Variable-length bytes (data_len of them)
// follow the fixed part. Keep this file the single source of truth:
// bpf2go generates the Go mirror from it (-type flags in gen.go).
#pragma once

#define MAX_DATA 4096 /* bytes of payload one record carries at most */
#define H1_HEAD 1024  /* HTTP/1.x: bytes shipped from the start of a chunk */
#define H1_TAIL 8     /* HTTP/1.x: bytes shipped from the end of a chunk */

enum ev_kind {
	EV_CONN = 1,      /* first HTTP bytes on a connection: tuple + process;
	                     hdr.dir is the direction of the chunk that was recognised */
	EV_CLOSE = 2,     /* a connection that had EV_CONN was closed or evicted */
	EV_H2_FRAME = 3,  /* one HTTP/2 frame, or one piece of a HEADERS/CONTINUATION/
	                     PUSH_PROMISE payload (all three carry HPACK state) */
	EV_H1_DATA = 4,   /* one read/write of HTTP/1.x bytes: head + tail */
	EV_PARSE_ERR = 5, /* the frame parser gave up on one direction of a connection */
	EV_PROC_EXIT = 6, /* the last thread of hdr.pid, a process that had HTTP connections,
	                     exited: every connection of it is closed (no per-connection
	                     EV_CLOSE follows; user space knows them by pid) */
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
	DROP_RINGBUF_FULL = 0, /* bpf_ringbuf_reserve/output failed */
	DROP_CONN_TABLE = 1,   /* connection state could not be stored */
	DROP_IOV = 2,          /* vectored I/O with more segments than walked */
	DROP_FRAMES = 3,       /* chunk held more frames than one pass walks */
	DROP_STREAM_TABLE = 4, /* per-stream gRPC state could not be stored */
	DROP_PARSE_STOP = 5,   /* a direction stopped parsing (EV_PARSE_ERR); its later bytes are not shipped */
	DROP_MAX = 8,
};

struct ev_header {
	__u64 ts_ns;   /* bpf_ktime_get_ns() at syscall exit */
	__u64 conn_id; /* unique per connection for the life of the loaded programs */
	__u32 pid;     /* tgid */
	__u32 tid;
	__u32 seq;     /* per connection+direction; a gap means records were lost */
	__u16 data_len; /* bytes following the fixed struct */
	__u8 kind;     /* enum ev_kind */
	__u8 dir;      /* enum ev_dir */
};

struct ev_conn {
	struct ev_header hdr;
	__u64 cgroup_id; /* cgroup v2 id of the task (inode of its cgroup dir) */
	__u32 uid;
	__u32 fd;
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

struct ev_h2 {
	struct ev_header hdr;
	__u32 stream_id;
	__u32 frame_len; /* payload length from the frame header */
	__u32 offset;    /* HEADERS/CONTINUATION: offset of data[] within the payload */
	__u32 grpc_msgs; /* DATA: gRPC length-prefixed messages that start in this frame */
	__u32 value;     /* RST_STREAM/GOAWAY: error code; DATA: pad length */
	__u32 value2;    /* GOAWAY: last stream id */
	__u8 type;       /* frame type */
	__u8 flags;      /* frame flags */
	__u8 static_idx; /* HEADERS, offset 0: first field when it is static-table indexed (2..61), else 0 */
	__u8 _pad;
	/* data[data_len]: HEADERS/CONTINUATION payload bytes (raw: pad length,
	   priority and padding included, user space strips them); SETTINGS:
	   the whole payload when it fits in one record. */
};

struct ev_h1 {
	struct ev_header hdr;
	__u32 len;          /* bytes in the whole read/write */
	__u8 tail_len;      /* valid bytes in tail (0 when the head covers the chunk) */
	__u8 _pad[3];
	__u8 tail[H1_TAIL]; /* last bytes of the chunk when len > H1_HEAD */
	/* data[data_len]: the first min(len, H1_HEAD) bytes */
};

struct ev_parse_err {
	struct ev_header hdr;
	__u32 reason;    /* enum parse_err */
	__u8 frame[9];   /* the offending frame header, when there is one */
	__u8 _pad[3];
};
