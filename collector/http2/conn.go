// Package http2 turns the kernel's HTTP/2 frame records of one connection
// into exact request/response flows: header blocks are reassembled in order
// and decoded with golang.org/x/net/http2/hpack, streams are paired and
// timed, and gRPC status and message counts are read off the wire.
package http2

import (
	"time"

	"golang.org/x/net/http2"

	"github.com/sextant/sextant/flow"
)

// Record is one kernel record of an HTTP/2 connection: a whole frame, or a
// piece of a HEADERS/CONTINUATION/PUSH_PROMISE payload.
type Record struct {
	Dir          flow.Direction
	Time         time.Time
	Type         http2.FrameType
	Flags        http2.Flags
	StreamID     uint32
	Len          uint32 // frame payload length
	Offset       uint32 // header payload pieces: offset of Data in the payload
	GRPCMessages uint32 // DATA: gRPC messages that begin in this frame
	Value        uint32 // RST_STREAM/GOAWAY: error code; DATA: pad length
	Value2       uint32 // GOAWAY: last stream id
	Data         []byte
}

// Config bounds the memory of one connection.
type Config struct {
	MaxStreams     int // open streams tracked per connection (default 1024)
	MaxHeaderBlock int // bytes of one header block (default 256 KiB)
	// NoHeaderLists leaves Flow.RequestHeaders and ResponseHeaders empty,
	// for consumers that only aggregate (the metrics-only agent): the
	// fields flows are built from (pseudo-headers, content-type, gRPC
	// status and message, grpc-timeout, traceparent) are decoded all the
	// same. Every block is still HPACK-decoded: the table must follow.
	NoHeaderLists bool
}

func (c Config) withDefaults() Config {
	if c.MaxStreams <= 0 {
		c.MaxStreams = 1024
	}
	if c.MaxHeaderBlock <= 0 {
		c.MaxHeaderBlock = 256 << 10
	}
	return c
}

// Conn decodes one HTTP/2 connection. Records must arrive in order per
// direction. Not safe for concurrent use.
type Conn struct {
	cfg       Config
	stats     *Stats
	emit      func(*flow.Flow)
	dirs      [2]dirState
	clientDir flow.Direction
	clientSet bool
	streams   map[uint32]*stream
}

// dirState is what one direction of the connection has in flight.
type dirState struct {
	hpack *blockDecoder

	frame      []byte // current HEADERS/CONTINUATION/PUSH_PROMISE payload
	frameType  http2.FrameType
	frameFlags http2.Flags
	frameLen   uint32
	inFrame    bool

	block       []byte // header block fragments so far
	blockStream uint32
	blockFlags  http2.Flags // of the HEADERS/PUSH_PROMISE frame that began it
	blockType   http2.FrameType
	blockTime   time.Time
	inBlock     bool
	overflow    bool // block exceeded MaxHeaderBlock: discarded
}

// NewConn starts decoding a connection. clientDir is the side that wrote
// the connection preface, when it was seen (joinedMidway false); a
// connection joined mid-way learns it from the first request or response.
func NewConn(cfg Config, stats *Stats, joinedMidway bool, clientDir flow.Direction, emit func(*flow.Flow)) *Conn {
	c := &Conn{
		cfg:       cfg.withDefaults(),
		stats:     stats,
		emit:      emit,
		clientDir: clientDir,
		clientSet: !joinedMidway,
		streams:   make(map[uint32]*stream),
	}
	for i := range c.dirs {
		c.dirs[i].hpack = newBlockDecoder(joinedMidway)
	}
	return c
}

// Handle consumes one record.
func (c *Conn) Handle(r *Record) {
	switch r.Type {
	case http2.FrameHeaders, http2.FrameContinuation, http2.FramePushPromise:
		c.headerPiece(r)
	case http2.FrameData:
		c.data(r)
	case http2.FrameRSTStream:
		c.reset(r)
	case http2.FrameGoAway:
		c.goAway(r)
	}
}

// Lost tells the decoder that records of one direction were lost: its HPACK
// state is unknown from here, and any open exchange may have lost frames,
// so those are dropped rather than reported with wrong fields.
func (c *Conn) Lost(d flow.Direction) {
	ds := &c.dirs[d]
	ds.hpack.resetUnknown()
	ds.inFrame, ds.inBlock, ds.overflow = false, false, false
	ds.frame, ds.block = ds.frame[:0], ds.block[:0]
	c.stats.StreamsLost += uint64(len(c.streams))
	clear(c.streams)
}

// Close ends the connection: exchanges still open are reported as closed.
func (c *Conn) Close(t time.Time) {
	for id, s := range c.streams {
		delete(c.streams, id)
		if s.req == nil {
			c.stats.StreamsJoinedMidway++
			continue
		}
		c.finish(s, t, flow.OutcomeClosed)
	}
}

// OpenStreams is the number of exchanges in flight.
func (c *Conn) OpenStreams() int { return len(c.streams) }

func (c *Conn) headerPiece(r *Record) {
	ds := &c.dirs[r.Dir]
	if r.Offset == 0 {
		if ds.inFrame {
			c.desync(r.Dir, ErrNonContiguous)
		}
		ds.frame = ds.frame[:0]
		ds.frameType, ds.frameFlags, ds.frameLen, ds.inFrame = r.Type, r.Flags, r.Len, true
		if !c.beginFragment(r) {
			return
		}
	} else if !ds.inFrame || r.Offset != uint32(len(ds.frame)) || r.Type != ds.frameType {
		c.desync(r.Dir, ErrNonContiguous)
		return
	}
	if uint32(len(ds.frame))+uint32(len(r.Data)) > ds.frameLen {
		c.desync(r.Dir, ErrNonContiguous)
		return
	}
	ds.frame = append(ds.frame, r.Data...)
	if uint32(len(ds.frame)) < ds.frameLen {
		return
	}
	ds.inFrame = false
	frag, ok := fragment(ds.frameType, ds.frameFlags, ds.frame)
	if !ok {
		c.desync(r.Dir, ErrBadPadding)
		return
	}
	if !ds.overflow {
		if len(ds.block)+len(frag) > c.cfg.MaxHeaderBlock {
			// The block cannot be decoded, and skipping it loses its table
			// inserts: the rest of this direction's HPACK state is unknown.
			c.stats.Errors[ErrBlockTooLarge]++
			ds.overflow = true
			ds.block = ds.block[:0]
		} else {
			ds.block = append(ds.block, frag...)
		}
	}
	if ds.frameFlags&http2.FlagHeadersEndHeaders != 0 { // same bit for all three types
		c.endBlock(r.Dir)
	}
}

// beginFragment checks that a frame may begin here: HEADERS and
// PUSH_PROMISE start a block, CONTINUATION extends the open one.
func (c *Conn) beginFragment(r *Record) bool {
	ds := &c.dirs[r.Dir]
	if r.Type == http2.FrameContinuation {
		if !ds.inBlock || r.StreamID != ds.blockStream {
			c.desync(r.Dir, ErrOrphanContinuation)
			return false
		}
		return true
	}
	if ds.inBlock {
		c.desync(r.Dir, ErrUnterminatedBlock)
	}
	ds.block = ds.block[:0]
	ds.blockStream, ds.blockFlags, ds.blockType, ds.blockTime = r.StreamID, r.Flags, r.Type, r.Time
	ds.inBlock, ds.overflow = true, false
	return true
}

// fragment strips padding, priority and promised stream id from a header
// frame payload (RFC 9113 §6.2, §6.6).
func fragment(t http2.FrameType, f http2.Flags, p []byte) ([]byte, bool) {
	pad := 0
	if f&http2.FlagHeadersPadded != 0 { // same bit for PUSH_PROMISE
		if len(p) < 1 {
			return nil, false
		}
		pad, p = int(p[0]), p[1:]
	}
	switch {
	case t == http2.FrameHeaders && f&http2.FlagHeadersPriority != 0:
		if len(p) < 5 {
			return nil, false
		}
		p = p[5:]
	case t == http2.FramePushPromise:
		if len(p) < 4 {
			return nil, false
		}
		p = p[4:]
	}
	if pad > len(p) {
		return nil, false
	}
	return p[:len(p)-pad], true
}

// desync drops what a direction had in flight after a framing violation or
// loss, and forgets its HPACK state.
func (c *Conn) desync(d flow.Direction, kind ErrorKind) {
	c.stats.Errors[kind]++
	ds := &c.dirs[d]
	if ds.inBlock || ds.inFrame {
		ds.hpack.resetUnknown()
	}
	ds.inFrame, ds.inBlock, ds.overflow = false, false, false
	ds.frame, ds.block = ds.frame[:0], ds.block[:0]
}

func (c *Conn) endBlock(d flow.Direction) {
	ds := &c.dirs[d]
	ds.inBlock = false
	if ds.overflow {
		ds.hpack.resetUnknown()
		c.dropStream(ds.blockStream)
		return
	}
	db := ds.hpack.decode(ds.block)
	if db.truncated {
		c.stats.Errors[ErrHPACK]++
	}
	if ds.blockType == http2.FramePushPromise {
		return // decoded for its table updates; pushed streams are not tracked
	}
	h := parseFields(db, !c.cfg.NoHeaderLists)
	c.stats.UnknownFields += uint64(h.unknown)
	c.headers(d, ds.blockStream, ds.blockTime, h, ds.blockFlags&http2.FlagHeadersEndStream != 0)
}

func (c *Conn) dropStream(id uint32) {
	if _, ok := c.streams[id]; ok {
		delete(c.streams, id)
		c.stats.StreamsLost++
	}
}

// headers routes one decoded block to its stream: request, response
// (possibly informational), or trailers.
//
// The two directions reach us through one ring buffer from different CPUs,
// so a response may arrive before the request that caused it: a response
// half for an unknown stream is kept (bounded) until its request shows up.
func (c *Conn) headers(d flow.Direction, id uint32, t time.Time, h *headerSet, endStream bool) {
	if !c.clientSet {
		switch {
		case h.isRequest():
			c.clientDir, c.clientSet = d, true
		case h.isResponse():
			c.clientDir, c.clientSet = d.Other(), true
		default:
			c.stats.StreamsJoinedMidway++
			return
		}
	}
	s := c.streams[id]
	if d == c.clientDir {
		switch {
		case s == nil:
			s = c.open(id, t)
			s.req, s.start = h, t
		case s.req == nil:
			s.req, s.start = h, t
		} // else: request trailers, nothing we report
		c.dropOrphansBelow(id)
		if endStream {
			s.reqEnded = true
		}
	} else {
		if s == nil {
			s = c.open(id, t)
		}
		switch {
		case s.resp == nil && h.informational():
			// 1xx: the final response is still to come.
		case s.resp == nil:
			s.resp, s.respTime = h, t
		default:
			s.trailers = h
		}
		if endStream {
			s.respEnded, s.end = true, t
		}
	}
	c.maybeFinish(s)
}

// open tracks a new stream, evicting the oldest at the limit.
func (c *Conn) open(id uint32, t time.Time) *stream {
	if len(c.streams) >= c.cfg.MaxStreams {
		c.evictOldest(t)
	}
	s := &stream{id: id}
	c.streams[id] = s
	return s
}

// dropOrphansBelow: a client opens streams in increasing id order (RFC 9113
// §5.1.1) and its direction arrives in order, so a response half below the
// newest request id will never see its request: it began before we joined.
func (c *Conn) dropOrphansBelow(id uint32) {
	for sid, s := range c.streams {
		if s.req == nil && sid < id {
			delete(c.streams, sid)
			c.stats.StreamsJoinedMidway++
		}
	}
}

func (c *Conn) data(r *Record) {
	s := c.streams[r.StreamID]
	if s == nil {
		return // its headers preceded our view
	}
	n := uint64(r.Len)
	if r.Flags&http2.FlagDataPadded != 0 {
		n -= min(n, 1+uint64(r.Value))
	}
	end := r.Flags&http2.FlagDataEndStream != 0
	if r.Dir == c.clientDir {
		s.reqBytes += n
		s.reqMsgs += r.GRPCMessages
		s.reqEnded = s.reqEnded || end
	} else {
		s.respBytes += n
		s.respMsgs += r.GRPCMessages
		if end {
			s.respEnded, s.end = true, r.Time
		}
	}
	c.maybeFinish(s)
}

func (c *Conn) reset(r *Record) {
	s := c.streams[r.StreamID]
	if s == nil {
		if r.Dir == c.clientDir || !c.clientSet {
			return
		}
		s = c.open(r.StreamID, r.Time) // the server reset before we saw the request
	}
	s.resetCode, s.resetBy, s.reset = r.Value, c.side(r.Dir), true
	if !(s.respEnded && r.Value == uint32(http2.ErrCodeNo)) {
		s.outcome, s.end = flow.OutcomeReset, r.Time
	}
	c.maybeFinish(s)
}

// goAway: streams above the last stream id were never processed by the peer.
func (c *Conn) goAway(r *Record) {
	if !c.clientSet || r.Dir == c.clientDir {
		return
	}
	last := r.Value2 & 0x7fffffff
	for id, s := range c.streams {
		if id > last {
			s.resetCode, s.resetBy, s.reset, s.end = r.Value, c.side(r.Dir), true, r.Time
			s.outcome = flow.OutcomeRefused
			c.maybeFinish(s)
		}
	}
}

// maybeFinish reports an exchange once its request is known and both halves
// ended, or the stream was reset. A server may reset a stream whose
// response it completed (RFC 9113 §8.1): that exchange still completed.
func (c *Conn) maybeFinish(s *stream) {
	if s.req == nil || !(s.reqEnded && s.respEnded || s.reset) {
		return
	}
	delete(c.streams, s.id)
	c.finish(s, s.end, s.outcome)
}

func (c *Conn) evictOldest(t time.Time) {
	var oldest *stream
	for _, s := range c.streams {
		if oldest == nil || s.id < oldest.id {
			oldest = s
		}
	}
	if oldest != nil {
		delete(c.streams, oldest.id)
		c.stats.StreamsEvicted++
		if oldest.req != nil {
			c.finish(oldest, t, flow.OutcomeEvicted)
		}
	}
}

// side names who sent a record in flow terms.
func (c *Conn) side(d flow.Direction) flow.Side {
	if d == c.clientDir {
		return flow.SideClient
	}
	return flow.SideServer
}

// ObserverSide is the observed process's side, once known.
func (c *Conn) ObserverSide() flow.Side {
	if !c.clientSet {
		return flow.SideUnknown
	}
	if c.clientDir == flow.Egress {
		return flow.SideClient
	}
	return flow.SideServer
}

func (c *Conn) finish(s *stream, end time.Time, o flow.Outcome) {
	f := s.flow(end, o)
	f.Observer = c.ObserverSide()
	c.emit(f)
}
