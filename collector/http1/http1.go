// Package http1 decodes HTTP/1.x exchanges from what the kernel ships of a
// connection's reads and writes: for every read or write, its first bytes
// (up to 1 KiB), its length, and its last 8 bytes when it was longer.
//
// Header blocks are parsed by net/http; the package only finds where
// messages begin and end. Body sizes are counted from chunk lengths, so
// Content-Length bodies are exact without seeing them; chunked bodies are
// exact while their size lines are visible. Whatever could not be seen is
// reported in Exchange.Unknown, never guessed.
package http1

import (
	"net/http"
	"time"

	"github.com/sextant/sextant/flow"
)

// Names used in Exchange.Unknown (the flow.Flow fields they concern).
const (
	UnknownAuthority       = "authority"
	UnknownStatus          = "status"
	UnknownRequestHeaders  = "request_headers"
	UnknownResponseHeaders = "response_headers"
	UnknownRequestBytes    = "request_bytes"
	UnknownResponseBytes   = "response_bytes"
	UnknownTraceParent     = "traceparent"
	UnknownTTFB            = "ttfb"    // when the response headers came
	UnknownLatency         = "latency" // when the response ended
	UnknownOutcome         = "outcome" // whether the exchange completed
)

// Exchange is one HTTP/1.x request with its response.
type Exchange struct {
	// RequestDir is the direction that carried the request: flow.Egress means
	// the observed process sent it (it is the client), flow.Ingress that it
	// received it (it is the server).
	RequestDir flow.Direction
	Protocol   string // "HTTP/1.1" or "HTTP/1.0", from the request line (status line when no request was seen)

	Method string
	Target string // request-target as sent
	Scheme string // only for absolute-form targets
	Path   string // path and query ("" for CONNECT)
	Host   string // Host header, or the authority of an absolute-form target
	Status uint32 // 0 when no response was seen (or it was lost: see Unknown)

	RequestBytes  uint64 // body bytes, without chunked framing
	ResponseBytes uint64

	RequestHeaders  []flow.Header // secrets removed; lower-case names, sorted
	ResponseHeaders []flow.Header
	TraceParent     string

	RequestStart  time.Time // the read/write carrying the request line
	ResponseStart time.Time // the read/write carrying the final status line; zero when none
	// ResponseEnd is the read/write that completed the response; with
	// OutcomeClosed the close; zero when unknown (UnknownLatency).
	ResponseEnd time.Time

	Outcome flow.Outcome // complete, closed (connection closed first) or evicted (MaxPending)
	Unknown []string     // fields present but not decoded exactly (Unknown* names)
}

func (e *Exchange) unknown(names ...string) {
	for _, n := range names {
		if !contains(e.Unknown, n) {
			e.Unknown = append(e.Unknown, n)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Config bounds the decoder. Zero values take the defaults.
type Config struct {
	// MaxPending is how many requests of one connection may await their
	// response (pipelining); beyond it the oldest is reported evicted.
	// Default 64.
	MaxPending int
	// MaxHeaderBytes is how many header bytes are gathered across reads
	// before the block is reported truncated. Default 16 KiB.
	MaxHeaderBytes int
	// SecretHeaders are dropped on top of flow.IsSecret's (case-insensitive).
	SecretHeaders []string
}

// Stats counts what the decoder met. Errors never stop a connection: the
// direction concerned waits for the next read that starts with a start line.
type Stats struct {
	Exchanges        uint64 // exchanges emitted
	Malformed        uint64 // start lines or header blocks net/http rejected, broken chunked framing, requests on the response side
	TruncatedHeaders uint64 // header blocks cut by a partly shipped read or MaxHeaderBytes, reported with their exact part
	Lost             uint64 // Lost calls (records the kernel could not ship)
	Resyncs          uint64 // times a direction found a start line again after losing its place
	Hidden           uint64 // messages that began in bytes the kernel did not ship
	OrphanResponses  uint64 // responses without a pending request (request lost, or before the agent started)
	Evicted          uint64 // requests dropped because MaxPending requests awaited responses
	Upgrades         uint64 // connections that switched protocols (101, CONNECT): decoding stopped
}

// Decoder holds what all connections share: configuration, the parser and
// the counters. Like the collector it is not safe for concurrent use.
type Decoder struct {
	cfg    Config
	parser *parser
	stats  Stats
}

func NewDecoder(cfg Config) *Decoder {
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 64
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 16 << 10
	}
	return &Decoder{cfg: cfg, parser: newParser(cfg.SecretHeaders)}
}

func (d *Decoder) Stats() Stats { return d.stats }

// NewConn starts decoding one connection. emit receives each exchange once
// it is complete (or can no longer complete), in request order, and owns it.
func (d *Decoder) NewConn(emit func(*Exchange)) *Conn {
	c := &Conn{d: d, emit: emit}
	// A connection may be joined mid-message: wait for a start line.
	c.dirs[flow.Egress].mode = modeSync
	c.dirs[flow.Ingress].mode = modeSync
	return c
}

// mode is where a direction stands in its byte stream.
type mode uint8

const (
	modeSync    mode = iota // lost its place: only a read that begins with a start line resyncs
	modeStart               // at a message boundary
	modeHeaders             // gathering a header block
	modeLength              // Content-Length body
	modeChunked             // chunked body
	modeClose               // body delimited by the connection closing
	modeDone                // protocol switched: nothing more to decode
)

// dirState is one direction's parse state.
type dirState struct {
	mode    mode
	synced  bool // has been at a message boundary before
	hdr     []byte
	scanned int       // bytes of hdr already searched for the block end
	start   time.Time // read/write that began the message
	last    time.Time // latest read/write of the message

	request   bool     // message in progress is a request
	p         *pending // its exchange; nil for responses nobody asked for
	remaining int64
	body      uint64 // body bytes so far (Content-Length, until close)
	chunked   bool   // body bytes are counted by chunks instead
	chunks    chunkWalker
}

// pending is an exchange between its request and its emission.
type pending struct {
	ex       Exchange
	reqDone  bool
	respSeen bool // final status line seen (or known lost)
	respDone bool
}

// Conn decodes one connection.
type Conn struct {
	d    *Decoder
	emit func(*Exchange)
	dirs [2]dirState

	rolesKnown bool
	reqDir     flow.Direction

	queue []*pending // FIFO: responses pair with requests in order
	// evicted holds the methods of requests evicted before their response
	// began: FIFO says their responses are the next ones, and the method
	// says how those are framed (HEAD), so they are followed unreported.
	evicted []string
	closed  bool
}

// Pending is the number of exchanges whose response has not ended yet.
func (c *Conn) Pending() int { return len(c.queue) }

// Feed decodes one read or write: head is its first min(total, 1024)
// bytes, tail its last bytes when total > len(head). Inputs are not kept.
func (c *Conn) Feed(dir flow.Direction, t time.Time, head []byte, total uint32, tail []byte) {
	if c.closed || dir > flow.Ingress || total == 0 {
		return
	}
	if uint64(len(head)) > uint64(total) {
		head = head[:total]
	}
	if uint64(len(tail)) > uint64(total) {
		tail = tail[uint64(len(tail))-uint64(total):]
	}
	v := view{head: head, tail: tail, total: int64(total)}
	if v.full() {
		v.tail = nil
	}
	c.feed(dir, t, &v)
	c.flush()
}

// Lost tells that records of dir were lost. The message in progress there
// is cut, and the direction waits for a start line. A loss on the response
// side also ends every request still waiting for its response: the lost
// records may have held responses, so pairing the next ones by order
// could match them with the wrong request.
func (c *Conn) Lost(dir flow.Direction) {
	if c.closed || dir > flow.Ingress {
		return
	}
	c.d.stats.Lost++
	ds := &c.dirs[dir]
	switch ds.mode {
	case modeHeaders:
		c.truncated(dir)
	case modeLength, modeChunked, modeClose:
		c.cut(dir)
	}
	if ds.mode != modeDone {
		ds.mode = modeSync
	}
	ds.hdr = ds.hdr[:0] // what follows is not contiguous with it
	c.unfollowed(dir)
	c.flush()
}

// unfollowed tells that bytes of dir went by that the decoder could not
// follow: lost, begun beyond what the kernel shipped of a read, or not
// parseable. On the response side they may have held the responses of
// every request still waiting for one (pipelining puts several in one
// read), so those end with their response unknown: pairing the responses
// that come next by order could match them with the wrong request.
// Requests sent after these bytes were read are queued later and pair as
// usual once the direction finds a status line again.
func (c *Conn) unfollowed(dir flow.Direction) {
	if !c.rolesKnown || dir == c.reqDir {
		return
	}
	for _, p := range c.queue {
		if !p.respSeen {
			p.respSeen, p.respDone = true, true
			p.ex.unknown(UnknownStatus, UnknownResponseHeaders, UnknownResponseBytes,
				UnknownTTFB, UnknownLatency, UnknownOutcome)
		}
	}
	c.evicted = c.evicted[:0]
}

// Close ends the connection at t: a response delimited by the close is
// complete (ResponseEnd is its last read/write), everything else still open
// is emitted with OutcomeClosed and ResponseEnd t.
func (c *Conn) Close(t time.Time) {
	if c.closed {
		return
	}
	for dir := flow.Egress; dir <= flow.Ingress; dir++ {
		ds := &c.dirs[dir]
		switch ds.mode {
		case modeHeaders:
			c.truncated(dir)
		case modeClose:
			c.end(dir, ds.last)
		case modeLength, modeChunked:
			// cut short: the bytes counted are what was sent
			if ds.p != nil {
				ds.p.ex.Outcome = flow.OutcomeClosed
			}
			c.end(dir, t)
		}
		ds.mode = modeDone
	}
	for _, p := range c.queue {
		p.reqDone = true
		if !p.respDone {
			p.respSeen, p.respDone = true, true
			p.ex.Outcome = flow.OutcomeClosed
			p.ex.ResponseEnd = t
		}
	}
	c.flush()
	c.closed = true
}

func (c *Conn) feed(dir flow.Direction, t time.Time, v *view) {
	ds := &c.dirs[dir]
	var off int64
	for off < v.total {
		switch ds.mode {
		case modeDone:
			return

		case modeSync:
			if off > 0 {
				// a message can only be found again at the start of a read
				c.unfollowed(dir)
				return
			}
			if !c.resync(dir, t, v) {
				if len(ds.hdr) == 0 { // not kept as the start of a start line
					c.unfollowed(dir)
				}
				return
			}
			if ds.synced {
				c.d.stats.Resyncs++
			}
			if len(ds.hdr) > 0 {
				ds.mode = modeHeaders // the start line began in earlier reads
			} else {
				ds.mode = modeStart
			}

		case modeStart:
			ds.synced = true
			// RFC 9112 §2.2: ignore empty lines before a request line
			for skipped := 0; off < int64(len(v.head)) && skipped < 4 &&
				(v.head[off] == '\r' || v.head[off] == '\n'); skipped++ {
				off++
			}
			if off == v.total {
				return
			}
			if off >= int64(len(v.head)) {
				c.d.stats.Hidden++
				ds.mode = modeSync
				c.unfollowed(dir)
				return
			}
			ds.hdr, ds.scanned = ds.hdr[:0], 0
			ds.start, ds.last = t, t
			ds.mode = modeHeaders

		case modeHeaders:
			off = c.headers(dir, t, v, off)

		case modeLength:
			n := min(ds.remaining, v.total-off)
			off += n
			ds.remaining -= n
			ds.body += uint64(n)
			ds.last = t
			if ds.remaining == 0 {
				c.end(dir, t)
			}

		case modeChunked:
			if off == 0 && !ds.chunks.exact() {
				// blind walk: a new message proves the old one ended, when
				// is unknown
				if k := classifyResync(v.head); k == lineRequest || k == lineResponse {
					c.cut(dir)
					ds.mode = modeStart
					continue
				}
			}
			next, done, err := ds.chunks.walk(v, off)
			off = next
			ds.last = t
			if err != nil {
				c.d.stats.Malformed++
				c.cut(dir)
				c.unfollowed(dir)
				return
			}
			if done {
				c.end(dir, t)
			}

		case modeClose:
			ds.body += uint64(v.total - off)
			off = v.total
			ds.last = t
		}
	}
}

// resync reports whether v, the next read or write of dir, begins a message
// (a whole start line with a known method). Short reads that could begin
// one are kept in ds.hdr until the line is whole or proves to be none; v
// then goes on from there.
func (c *Conn) resync(dir flow.Direction, t time.Time, v *view) bool {
	ds := &c.dirs[dir]
	if len(ds.hdr) > 0 {
		joined := append(ds.hdr, v.head...)
		switch classifyResync(joined) {
		case lineRequest, lineResponse:
			return true // headers() appends v to ds.hdr again
		case linePartial:
			if v.full() && len(joined) <= maxStartLine {
				ds.hdr = joined
				return false
			}
		}
		ds.hdr = ds.hdr[:0]
	}
	switch classifyResync(v.head) {
	case lineRequest, lineResponse:
		return true
	case linePartial:
		if v.full() {
			ds.hdr = append(ds.hdr[:0], v.head...)
			ds.scanned, ds.start, ds.last = 0, t, t
		}
	}
	return false
}

// headers gathers a header block from v at off (a visible position) and
// returns where this chunk's share of it ends.
func (c *Conn) headers(dir flow.Direction, t time.Time, v *view, off int64) int64 {
	ds := &c.dirs[dir]
	if off >= int64(len(v.head)) {
		// cannot happen: blocks only start at visible bytes, later chunks
		// are read from 0
		c.truncated(dir)
		return v.total
	}
	prev := len(ds.hdr)
	ds.hdr = append(ds.hdr, v.head[off:]...)
	ds.last = t
	end := headerEnd(ds.hdr, ds.scanned)
	if end < 0 {
		ds.scanned = max(0, len(ds.hdr)-2)
		switch {
		case classifyStartLine(ds.hdr) == lineInvalid:
			c.malformed(dir)
		case !v.full() || len(ds.hdr) > c.d.cfg.MaxHeaderBytes:
			// the rest of the block is in bytes nobody will see
			c.truncated(dir)
		}
		return v.total
	}
	ds.hdr = ds.hdr[:end]
	c.parsed(dir, t)
	return off + int64(end-prev)
}

// parsed handles a complete header block of dir.
func (c *Conn) parsed(dir flow.Direction, t time.Time) {
	ds := &c.dirs[dir]
	defer func() { ds.hdr = ds.hdr[:0] }()
	switch classifyStartLine(ds.hdr) {
	case lineRequest:
		if c.rolesKnown && dir != c.reqDir {
			c.malformed(dir)
			return
		}
		h, err := c.d.parser.parseRequest(ds.hdr)
		if err != nil {
			c.malformed(dir)
			return
		}
		p := c.request(dir, h)
		ds.request, ds.p, ds.body = true, p, 0
		c.body(dir, h.framing, t)

	case lineResponse:
		if c.rolesKnown && dir == c.reqDir {
			c.malformed(dir)
			return
		}
		p := c.nextResponse()
		method := ""
		switch {
		case len(c.evicted) > 0:
			method = c.evicted[0]
		case p != nil:
			method = p.ex.Method
		}
		h, err := c.d.parser.parseResponse(ds.hdr, method)
		if err != nil {
			c.malformed(dir)
			return
		}
		c.setRoles(dir.Other())
		if h.status/100 == 1 && h.status != http.StatusSwitchingProtocols {
			ds.mode = modeStart // informational: the final response follows
			return
		}
		evicted := len(c.evicted) > 0
		p = c.response(h, ds.start)
		ds.request, ds.p, ds.body = false, p, 0
		if p == nil && !evicted {
			// Framing a response without its request can go wrong (HEAD):
			// skip it and look for the next status line.
			ds.mode = modeSync
			return
		}
		if h.status == http.StatusSwitchingProtocols ||
			method == http.MethodConnect && h.status/100 == 2 {
			c.end(dir, t)
			c.upgrade(t)
			return
		}
		c.body(dir, h.framing, t)

	default:
		c.malformed(dir)
	}
}

// body sets dir up for the body that follows a header block.
func (c *Conn) body(dir flow.Direction, f framing, t time.Time) {
	ds := &c.dirs[dir]
	switch {
	case f.chunked:
		ds.chunks.reset()
		ds.chunked = true
		ds.mode = modeChunked
	case f.length > 0:
		ds.remaining = f.length
		ds.mode = modeLength
	case f.length < 0:
		ds.mode = modeClose
	default:
		c.end(dir, t)
	}
}

func (c *Conn) setRoles(reqDir flow.Direction) {
	if !c.rolesKnown {
		c.rolesKnown, c.reqDir = true, reqDir
	}
}

// request queues the exchange a request begins.
func (c *Conn) request(dir flow.Direction, h *head) *pending {
	c.setRoles(dir)
	if len(c.queue) >= c.d.cfg.MaxPending {
		old := c.queue[0]
		c.queue = c.queue[1:]
		c.d.stats.Evicted++
		if !old.respSeen {
			c.evicted = append(c.evicted, old.ex.Method)
		}
		old.ex.Outcome = flow.OutcomeEvicted
		if old.respSeen && !old.respDone {
			old.ex.unknown(UnknownResponseBytes, UnknownLatency)
		}
		c.send(old)
	}
	p := &pending{ex: Exchange{
		RequestDir:     dir,
		Protocol:       h.proto,
		Method:         h.method,
		Target:         h.target,
		Scheme:         h.scheme,
		Path:           h.path,
		Host:           h.host,
		RequestHeaders: h.headers,
		TraceParent:    h.trace,
		RequestStart:   c.dirs[dir].start,
	}}
	c.queue = append(c.queue, p)
	return p
}

// nextResponse is the exchange the next final response belongs to.
func (c *Conn) nextResponse() *pending {
	if len(c.evicted) > 0 {
		return nil
	}
	for _, p := range c.queue {
		if !p.respSeen {
			return p
		}
	}
	return nil
}

// response attaches a final response head, begun at start, to its exchange.
func (c *Conn) response(h *head, start time.Time) *pending {
	if len(c.evicted) > 0 {
		c.evicted = c.evicted[1:]
		return nil
	}
	p := c.nextResponse()
	if p == nil {
		c.d.stats.OrphanResponses++
		return nil
	}
	p.respSeen = true
	p.ex.Status = uint32(h.status)
	p.ex.ResponseHeaders = h.headers
	p.ex.ResponseStart = start
	return p
}

// end completes the message in progress on dir at t.
func (c *Conn) end(dir flow.Direction, t time.Time) {
	c.finish(dir, t, true)
	c.dirs[dir].mode = modeStart
}

// cut ends the message in progress on dir where it cannot be followed any
// further: its size and end are unknown. dir waits for a start line.
func (c *Conn) cut(dir flow.Direction) {
	c.finish(dir, time.Time{}, false)
	c.dirs[dir].mode = modeSync
}

func (c *Conn) finish(dir flow.Direction, t time.Time, complete bool) {
	ds := &c.dirs[dir]
	p := ds.p
	size, exact := ds.body, true
	if ds.chunked {
		size, exact = ds.chunks.body, ds.chunks.exact()
	}
	ds.p, ds.chunked = nil, false
	if p == nil {
		return
	}
	if exact = exact && complete; !exact {
		size = 0
	}
	if ds.request {
		p.ex.RequestBytes = size
		if !exact {
			p.ex.unknown(UnknownRequestBytes)
		}
		p.reqDone = true
		return
	}
	p.ex.ResponseBytes = size
	if !exact {
		p.ex.unknown(UnknownResponseBytes)
	}
	if complete {
		p.ex.ResponseEnd = t
	} else {
		p.ex.unknown(UnknownLatency)
	}
	p.respDone = true
}

// truncated reports the message whose header block on dir was cut short
// with the part of it that is exact, and makes dir wait for a start line.
func (c *Conn) truncated(dir flow.Direction) {
	ds := &c.dirs[dir]
	ds.mode = modeSync
	defer func() { ds.hdr = ds.hdr[:0] }()
	defer c.unfollowed(dir) // after the cut response took its request
	c.d.stats.TruncatedHeaders++
	kind := classifyStartLine(ds.hdr)
	if kind != lineRequest && kind != lineResponse ||
		c.rolesKnown && (kind == lineRequest) != (dir == c.reqDir) {
		return // not even the start line is exact
	}
	method := ""
	if p := c.nextResponse(); kind == lineResponse && p != nil {
		method = p.ex.Method
	}
	h, err := c.d.parser.parseTruncated(ds.hdr, method)
	if err != nil {
		c.d.stats.Malformed++
		return
	}
	if h.request {
		p := c.request(dir, h)
		p.ex.unknown(UnknownRequestHeaders, UnknownRequestBytes)
		if h.host == "" {
			p.ex.unknown(UnknownAuthority)
		}
		if h.trace == "" {
			p.ex.unknown(UnknownTraceParent)
		}
		p.reqDone = true
		return
	}
	c.setRoles(dir.Other())
	if h.status/100 == 1 && h.status != http.StatusSwitchingProtocols {
		return
	}
	p := c.response(h, ds.start)
	if p == nil {
		return
	}
	p.ex.unknown(UnknownResponseHeaders, UnknownResponseBytes, UnknownLatency)
	p.respDone = true
	if h.status == http.StatusSwitchingProtocols {
		c.upgrade(ds.last)
	}
}

// malformed drops the message on dir that net/http (or the framing) rejects.
func (c *Conn) malformed(dir flow.Direction) {
	c.d.stats.Malformed++
	ds := &c.dirs[dir]
	ds.hdr = ds.hdr[:0]
	ds.mode = modeSync
	c.unfollowed(dir)
}

// upgrade stops decoding: the connection speaks another protocol now.
func (c *Conn) upgrade(t time.Time) {
	c.d.stats.Upgrades++
	for dir := flow.Egress; dir <= flow.Ingress; dir++ {
		switch c.dirs[dir].mode {
		case modeLength, modeChunked, modeClose:
			c.end(dir, t)
		}
		c.dirs[dir].mode = modeDone
	}
}

// flush emits the exchanges at the head of the queue that are done.
func (c *Conn) flush() {
	for len(c.queue) > 0 && c.queue[0].reqDone && c.queue[0].respDone {
		p := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		c.send(p)
	}
}

func (c *Conn) send(p *pending) {
	for dir := range c.dirs {
		if c.dirs[dir].p == p {
			c.dirs[dir].p = nil // its message goes on, unreported
		}
	}
	c.d.stats.Exchanges++
	c.emit(&p.ex)
}
