package probes

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/net/http2"
)

// Kind is the record kind (enum ev_kind).
type Kind uint8

const (
	KindConn       = Kind(sextantEvKindEV_CONN)
	KindClose      = Kind(sextantEvKindEV_CLOSE)
	KindH2Frame    = Kind(sextantEvKindEV_H2FRAME)
	KindH1Data     = Kind(sextantEvKindEV_H1DATA)
	KindParseError = Kind(sextantEvKindEV_PARSE_ERR)
	// KindProcExit: process PID, which had HTTP connections, is gone;
	// so are its connections (no KindClose follows for them). Syscall
	// capture only: socket capture ends each connection with KindClose.
	KindProcExit = Kind(sextantEvKindEV_PROC_EXIT)
	// kindChunk is the ring record of one read/write; Run hands out the
	// events it carries, never the record itself.
	kindChunk = Kind(sextantEvKindEV_CHUNK)
)

func (k Kind) String() string {
	switch k {
	case KindConn:
		return "conn"
	case KindClose:
		return "close"
	case KindH2Frame:
		return "h2_frame"
	case KindH1Data:
		return "h1_data"
	case KindParseError:
		return "parse_error"
	case KindProcExit:
		return "proc_exit"
	}
	return fmt.Sprintf("kind_%d", uint8(k))
}

// Direction says who moved the bytes (enum ev_dir).
type Direction uint8

const (
	Egress  = Direction(sextantEvDirDIR_EGRESS)  // the process wrote
	Ingress = Direction(sextantEvDirDIR_INGRESS) // the process read
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Proto is how a connection was recognised (enum conn_proto).
type Proto uint8

const (
	ProtoH2          = Proto(sextantConnProtoPROTO_H2)          // client preface seen: exact from byte 0
	ProtoH2Midstream = Proto(sextantConnProtoPROTO_H2MIDSTREAM) // joined an open connection
	ProtoH1          = Proto(sextantConnProtoPROTO_H1)
)

func (p Proto) String() string {
	switch p {
	case ProtoH2:
		return "h2"
	case ProtoH2Midstream:
		return "h2-midstream"
	case ProtoH1:
		return "http/1"
	}
	return fmt.Sprintf("proto_%d", uint8(p))
}

// Parse error reasons (enum parse_err), in Event.Reason.
const (
	ParseErrBadFrame = uint32(sextantParseErrPERR_BAD_FRAME)
	ParseErrTooMany  = uint32(sextantParseErrPERR_TOO_MANY)
	ParseErrLost     = uint32(sextantParseErrPERR_LOST)
)

// ConnInfo describes a connection (KindConn).
type ConnInfo struct {
	Family   uint16 // AF_INET or AF_INET6 (IPv4-mapped IPv6 addresses are unmapped in Local/Remote)
	Local    netip.AddrPort
	Remote   netip.AddrPort
	CgroupID uint64
	UID, FD  uint32
	Comm     string
	Proto    Proto
	// PrefaceDir (ProtoH2) is the direction the client preface travels in:
	// Egress means the observed process is the client.
	PrefaceDir Direction
	// EndReported: the kernel reports the connection's end (KindClose when
	// its socket is destroyed), whichever process holds the socket by then
	// (socket capture). Otherwise (syscall capture) a connection also ends
	// unannounced with the process that holds it.
	EndReported bool
}

// eventPool recycles Events: the agent decodes about a million records a
// second at saturation, and one allocation each was a quarter of its
// allocated bytes (and so of its GC work).
var eventPool = sync.Pool{New: func() any { return new(Event) }}

// Release hands ev back for reuse by a later record. A sink that is done
// with an Event may call it; nothing may use ev afterwards. The byte
// slices ev points to are not reused: a sink may keep those.
func (ev *Event) Release() {
	*ev = Event{}
	eventPool.Put(ev)
}

// Event is one kernel record. See bpf/events.h for what each field means.
type Event struct {
	Kind   Kind
	Time   time.Time // wall clock
	Mono   uint64    // raw bpf_ktime_get_ns
	ConnID uint64
	PID    uint32
	TID    uint32
	Seq    uint32
	Dir    Direction

	// KindConn
	Conn *ConnInfo

	// KindH2Frame
	FrameType    http2.FrameType
	Flags        http2.Flags
	StreamID     uint32
	FrameLen     uint32
	Offset       uint32
	GRPCMessages uint32
	Value        uint32
	Value2       uint32
	StaticIndex  uint8

	// KindH1Data: Len bytes of one read/write (a read holding several
	// pipelined messages is one event per message), of which Data are
	// the first: a start line and header block, chunk-size lines,
	// trailers, never body bytes.
	Len  uint32
	Tail []byte // unused: kept for the HTTP/1 decoder's signature

	// KindParseError
	Reason      uint32
	FrameHeader []byte

	// Variable part: HEADERS/CONTINUATION/PUSH_PROMISE payload piece,
	// SETTINGS payload, HTTP/1 bytes.
	//
	// A DATA event is a summary of consecutive DATA frames of StreamID:
	// FrameLen data bytes (padding excluded), GRPCMessages messages that
	// began in them, Flags END_STREAM when the last one ended the stream.
	Data []byte
}

// Fixed sizes of the records; the variable bytes follow these.
const (
	sizeHeader = int(unsafe.Sizeof(sextantEvHeader{}))
	sizeConn   = int(unsafe.Sizeof(sextantEvConn{}))
	sizeChunk  = int(unsafe.Sizeof(sextantEvChunk{}))
	sizeEntry  = int(unsafe.Sizeof(sextantEvEntry{}))
)

var (
	errShort     = errors.New("short record")
	errBadRecord = errors.New("malformed record")
)

var le = binary.LittleEndian

// decode turns one ring buffer sample into Events, handed to sink in
// order: one for a connection record, one per entry for a chunk record
// (entries of one record share its time; entry i has sequence number
// hdr.seq + i, so the numbering is the kernel's per direction). It
// returns how many it handed over. Offsets follow the C structs in
// events.h (bpf2go's mirrors give the sizes).
func decode(b []byte, monoToRT int64, endReported bool, sink func(*Event)) (int, error) {
	if len(b) < sizeHeader {
		return 0, errShort
	}
	hdr := Event{
		Mono:   le.Uint64(b[0:]),
		ConnID: le.Uint64(b[8:]),
		PID:    le.Uint32(b[16:]),
		TID:    le.Uint32(b[20:]),
		Seq:    le.Uint32(b[24:]),
		Kind:   Kind(b[30]),
		Dir:    Direction(b[31]),
	}
	hdr.Time = time.Unix(0, int64(hdr.Mono)+monoToRT)
	dataLen := int(le.Uint16(b[28:]))

	switch hdr.Kind {
	case KindConn:
		if len(b) < sizeConn {
			return 0, errShort
		}
		ev := newEvent(&hdr)
		ev.Conn = decodeConn(b)
		ev.Conn.EndReported = endReported
		sink(ev)
		return 1, nil
	case KindClose, KindProcExit:
		sink(newEvent(&hdr))
		return 1, nil
	case kindChunk:
	default:
		return 0, fmt.Errorf("unknown record kind %d", b[30])
	}
	if len(b) < sizeChunk || len(b) < sizeChunk+dataLen {
		return 0, errShort
	}
	entries := int(le.Uint32(b[32:]))
	p := b[sizeChunk : sizeChunk+dataLen]
	n := 0
	for i := 0; i < entries; i++ {
		if len(p) < sizeEntry {
			return n, errShort
		}
		dl := int(le.Uint16(p[4:]))
		if len(p) < sizeEntry+dl {
			return n, errShort
		}
		ev := newEvent(&hdr)
		ev.Seq = hdr.Seq + uint32(i)
		if err := decodeEntry(ev, p[:sizeEntry], p[sizeEntry:sizeEntry+dl]); err != nil {
			ev.Release()
			return n, err
		}
		sink(ev)
		n++
		p = p[sizeEntry+dl:]
	}
	if len(p) != 0 {
		return n, errBadRecord
	}
	return n, nil
}

func newEvent(hdr *Event) *Event {
	ev := eventPool.Get().(*Event)
	*ev = *hdr
	return ev
}

// decodeEntry fills ev from one struct ev_entry and its bytes.
func decodeEntry(ev *Event, e, data []byte) error {
	ev.Kind = Kind(e[0])
	var payload []byte
	if len(data) > 0 {
		payload = bytes.Clone(data)
	}
	switch ev.Kind {
	case KindH2Frame:
		ev.FrameType = http2.FrameType(e[1])
		ev.Flags = http2.Flags(e[2])
		ev.StaticIndex = e[3]
		ev.StreamID = le.Uint32(e[8:])
		ev.FrameLen = le.Uint32(e[12:])
		ev.Offset = le.Uint32(e[16:])
		ev.GRPCMessages = le.Uint32(e[20:])
		ev.Value = le.Uint32(e[24:])
		ev.Value2 = le.Uint32(e[28:])
		ev.Data = payload
	case KindH1Data:
		ev.Len = le.Uint32(e[12:])
		if uint32(len(data)) > ev.Len {
			return errBadRecord
		}
		ev.Data = payload
	case KindParseError:
		ev.Reason = le.Uint32(e[24:])
		ev.FrameHeader = payload
	default:
		return fmt.Errorf("unknown entry kind %d", e[0])
	}
	return nil
}

func decodeConn(b []byte) *ConnInfo {
	c := &ConnInfo{
		CgroupID:   le.Uint64(b[32:]),
		UID:        le.Uint32(b[40:]),
		FD:         le.Uint32(b[44:]),
		Family:     le.Uint16(b[48:]),
		Proto:      Proto(b[54]),
		PrefaceDir: Direction(b[55] & 1),
	}
	lport, rport := le.Uint16(b[50:]), le.Uint16(b[52:])
	var laddr, raddr netip.Addr
	if c.Family == 2 { // AF_INET
		laddr = netip.AddrFrom4([4]byte(b[56:60]))
		raddr = netip.AddrFrom4([4]byte(b[72:76]))
	} else {
		laddr = netip.AddrFrom16([16]byte(b[56:72])).Unmap()
		raddr = netip.AddrFrom16([16]byte(b[72:88])).Unmap()
	}
	c.Local = netip.AddrPortFrom(laddr, lport)
	c.Remote = netip.AddrPortFrom(raddr, rport)
	comm := b[88:104]
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	c.Comm = string(comm)
	return c
}
