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
	// so are its connections (no KindClose follows for them).
	KindProcExit = Kind(sextantEvKindEV_PROC_EXIT)
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

	// KindH1Data
	Len  uint32
	Tail []byte

	// KindParseError
	Reason      uint32
	FrameHeader []byte

	// Variable part: HEADERS/CONTINUATION/PUSH_PROMISE payload piece,
	// SETTINGS payload, HTTP/1 head.
	Data []byte
}

// Fixed sizes of the records; the variable bytes follow these.
const (
	sizeHeader   = int(unsafe.Sizeof(sextantEvHeader{}))
	sizeConn     = int(unsafe.Sizeof(sextantEvConn{}))
	sizeH2       = int(unsafe.Sizeof(sextantEvH2{}))
	sizeH1       = int(unsafe.Sizeof(sextantEvH1{}))
	sizeParseErr = int(unsafe.Sizeof(sextantEvParseErr{}))
)

var errShort = errors.New("short record")

var le = binary.LittleEndian

// decode turns one ring buffer sample into an Event. Offsets follow the
// C structs in events.h (bpf2go's mirrors give the sizes).
func decode(b []byte, monoToRT int64) (*Event, error) {
	if len(b) < sizeHeader {
		return nil, errShort
	}
	ev := eventPool.Get().(*Event)
	*ev = Event{
		Mono:   le.Uint64(b[0:]),
		ConnID: le.Uint64(b[8:]),
		PID:    le.Uint32(b[16:]),
		TID:    le.Uint32(b[20:]),
		Seq:    le.Uint32(b[24:]),
		Kind:   Kind(b[30]),
		Dir:    Direction(b[31]),
	}
	ev.Time = time.Unix(0, int64(ev.Mono)+monoToRT)
	dataLen := int(le.Uint16(b[28:]))

	data := func(fixed int) ([]byte, error) {
		if len(b) < fixed+dataLen {
			return nil, errShort
		}
		if dataLen == 0 {
			return nil, nil
		}
		return bytes.Clone(b[fixed : fixed+dataLen]), nil
	}

	var err error
	switch ev.Kind {
	case KindConn:
		if len(b) < sizeConn {
			return nil, errShort
		}
		ev.Conn = decodeConn(b)
	case KindClose, KindProcExit:
	case KindH2Frame:
		if len(b) < sizeH2 {
			return nil, errShort
		}
		ev.StreamID = le.Uint32(b[32:])
		ev.FrameLen = le.Uint32(b[36:])
		ev.Offset = le.Uint32(b[40:])
		ev.GRPCMessages = le.Uint32(b[44:])
		ev.Value = le.Uint32(b[48:])
		ev.Value2 = le.Uint32(b[52:])
		ev.FrameType = http2.FrameType(b[56])
		ev.Flags = http2.Flags(b[57])
		ev.StaticIndex = b[58]
		ev.Data, err = data(sizeH2)
	case KindH1Data:
		if len(b) < sizeH1 {
			return nil, errShort
		}
		ev.Len = le.Uint32(b[32:])
		if tl := int(b[36]); tl > 0 && tl <= 8 {
			ev.Tail = bytes.Clone(b[40 : 40+tl])
		}
		ev.Data, err = data(sizeH1)
	case KindParseError:
		if len(b) < sizeParseErr {
			return nil, errShort
		}
		ev.Reason = le.Uint32(b[32:])
		ev.FrameHeader = bytes.Clone(b[36:45])
	default:
		return nil, fmt.Errorf("unknown record kind %d", b[30])
	}
	if err != nil {
		return nil, err
	}
	return ev, nil
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

// H1HeadBytes is how many bytes of an HTTP/1.x read/write a record
// carries from its start (H1_HEAD in events.h).
const H1HeadBytes = 1024
