// Package collector is the agent's decode stage: it turns the probes'
// records into flows. Records are grouped by connection, re-ordered across
// the two directions (they reach user space from different CPUs), checked
// for loss, and handed to the HTTP/2 or HTTP/1 decoder; the flows that come
// out get the connection's addresses, the process identity and the node.
package collector

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/sextant/sextant/collector/http1"
	"github.com/sextant/sextant/collector/http2"
	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/identity"
	"github.com/sextant/sextant/probes"
)

// Config tunes the collector. Zero values take the defaults.
type Config struct {
	Node string
	// MaxConns bounds tracked connections (default 16384); the least
	// recently active one is closed to make room.
	MaxConns int
	// ReorderWindow is how long a record waits for an earlier record of the
	// other direction (default 10ms). Egress records carry the time their
	// write began and ingress records the time their read returned, so a
	// response is never older than its request; the window only has to
	// cover how late a record can reach the ring.
	ReorderWindow time.Duration
	// ProcRoot is where /proc is (default "/proc"): process identity.
	ProcRoot string
	// CgroupScope, when set, keeps only connections of processes in this
	// cgroup v2 subtree (a path such as "/sextant/node1"): an agent then
	// observes one "node" of several sharing a host, as in tests.
	CgroupScope string
	HTTP2       http2.Config
	HTTP1       http1.Config
}

func (c Config) withDefaults() Config {
	if c.MaxConns <= 0 {
		c.MaxConns = 16384
	}
	if c.ReorderWindow <= 0 {
		c.ReorderWindow = 10 * time.Millisecond
	}
	if c.ProcRoot == "" {
		c.ProcRoot = "/proc"
	}
	return c
}

// Stats counts what the collector saw and what it could not use.
type Stats struct {
	Events        uint64 // records handled
	Flows         uint64 // flows emitted
	Conns         int    // connections tracked now
	Streams       int    // exchanges in flight now (open HTTP/2 streams, HTTP/1 requests awaiting a response)
	ConnsEvicted  uint64 // closed to stay under MaxConns, or whose process is gone
	OrphanRecords uint64 // records of a connection we have no state for (its first record was lost, or it is out of scope)
	SeqGaps       uint64 // losses detected from sequence gaps
	ParseErrors   uint64 // directions the kernel stopped parsing (malformed frames)
	HTTP2         http2.Stats
	HTTP1         http1.Stats
}

// Collector decodes records into flows. Run drives it from a Source; Handle,
// Tick and Flush drive it by hand (tests). Every method is safe for
// concurrent use: one mutex, held per record, rather than a hand-off to a
// goroutine, keeps the hot path (one call per kernel record) short. The
// output function runs with that mutex held, so it must only queue.
type Collector struct {
	mu        sync.Mutex
	cfg       Config
	out       func(*flow.Flow)
	conns     map[uint64]*conn
	waiting   map[*conn]struct{} // conns with queued records
	ids       *identity.Resolver
	h1        *http1.Decoder
	stats     Stats
	lastSeen  time.Time // newest record time: the reorder watermark
	lastSweep time.Time
}

// New returns a collector that passes every flow to out.
func New(cfg Config, out func(*flow.Flow)) *Collector {
	cfg = cfg.withDefaults()
	return &Collector{
		cfg:     cfg,
		out:     out,
		conns:   make(map[uint64]*conn),
		waiting: make(map[*conn]struct{}),
		ids:     identity.NewResolver(cfg.ProcRoot),
		h1:      http1.NewDecoder(cfg.HTTP1),
	}
}

// Stats returns the counters.
func (c *Collector) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Conns = len(c.conns)
	for _, cn := range c.conns {
		s.Streams += cn.dec.Open()
	}
	s.HTTP1 = c.h1.Stats()
	return s
}

// Source delivers kernel records; *probes.Probes is one. Run returns when
// ctx ends or the source fails; the sink owns each record it gets.
type Source interface {
	Run(ctx context.Context, sink func(*probes.Event)) error
}

// TickInterval is how often Run releases records that waited out the
// reorder window ("every few tens of ms", see Tick).
const TickInterval = 25 * time.Millisecond

// Run decodes the records of src until ctx ends or src fails, ticking every
// TickInterval; then it flushes what is queued, so that every record read
// reaches the output before Run returns.
func (c *Collector) Run(ctx context.Context, src Source) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		t := time.NewTicker(TickInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				c.Tick(now)
			}
		}
	}()
	err := src.Run(ctx, c.Handle)
	cancel()
	<-ticked
	c.Flush()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// Handle consumes one record. The collector owns ev from here and
// releases it (probes.Event.Release) once decoded.
func (c *Collector) Handle(ev *probes.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Events++
	if ev.Time.After(c.lastSeen) {
		c.lastSeen = ev.Time
	}
	switch ev.Kind {
	case probes.KindConn:
		c.open(ev)
		ev.Release()
		return
	case probes.KindClose:
		if cn := c.conns[ev.ConnID]; cn != nil {
			c.close(cn, ev.Time)
		}
		ev.Release()
		return
	case probes.KindProcExit:
		// The kernel closed every socket of the process without a
		// close() per connection.
		for _, cn := range c.conns {
			if cn.pid == ev.PID {
				c.close(cn, ev.Time)
			}
		}
		ev.Release()
		return
	}
	cn := c.conns[ev.ConnID]
	if cn == nil {
		c.stats.OrphanRecords++
		ev.Release()
		return
	}
	cn.lastActive = ev.Time
	if cn.checkSeq(ev) {
		c.stats.SeqGaps++
	}
	cn.queue[ev.Dir].push(ev)
	c.waiting[cn] = struct{}{}
	c.release(cn, c.lastSeen.Add(-c.cfg.ReorderWindow))
}

// Tick releases records that waited out the reorder window and closes
// connections whose process is gone. Call it every few tens of ms.
func (c *Collector) Tick(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	limit := now.Add(-c.cfg.ReorderWindow)
	for cn := range c.waiting {
		c.release(cn, limit)
	}
	c.sweep(now)
}

// Flush releases every queued record and reports exchanges still open on
// connections as they stand (used at shutdown).
func (c *Collector) Flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for cn := range c.waiting {
		c.release(cn, endOfTime)
	}
}

func (c *Collector) open(ev *probes.Event) {
	if ev.Conn == nil || c.conns[ev.ConnID] != nil {
		return
	}
	if len(c.conns) >= c.cfg.MaxConns {
		c.evictIdlest(ev.Time)
	}
	cn := &conn{id: ev.ConnID, info: *ev.Conn, pid: ev.PID, lastActive: ev.Time}
	cn.process = c.ids.Lookup(ev.PID, ev.Conn.CgroupID, ev.Conn.Comm)
	if !inScope(cn.process.Cgroup, c.cfg.CgroupScope) {
		return
	}
	emit := func(f *flow.Flow) { c.emit(cn, f) }
	switch ev.Conn.Proto {
	case probes.ProtoH2, probes.ProtoH2Midstream:
		// The client preface travels from the client: its direction says
		// which side the observed process is. Joined mid-way, the decoder
		// learns it from the first request or response.
		midway := ev.Conn.Proto == probes.ProtoH2Midstream
		cn.dec = h2Decoder{http2.NewConn(c.cfg.HTTP2, &c.stats.HTTP2, midway, flow.Direction(ev.Conn.PrefaceDir), emit)}
	case probes.ProtoH1:
		cn.dec = h1Decoder{c.h1.NewConn(func(ex *http1.Exchange) { emit(ex.Flow()) })}
	default:
		return
	}
	c.conns[ev.ConnID] = cn
}

func (c *Collector) close(cn *conn, t time.Time) {
	c.release(cn, endOfTime)
	delete(c.waiting, cn)
	delete(c.conns, cn.id)
	cn.dec.Close(t)
}

// release hands queued records to the decoder in time order: the older head
// of the two directions goes first; a lone head waits until it is older
// than limit, in case the other direction still has an earlier record.
func (c *Collector) release(cn *conn, limit time.Time) {
	for {
		e, i := cn.queue[probes.Egress].peek(), cn.queue[probes.Ingress].peek()
		var next *probes.Event
		switch {
		case e == nil && i == nil:
			delete(c.waiting, cn)
			return
		case e != nil && i != nil:
			next = e
			if i.Time.Before(e.Time) {
				next = i
			}
		default:
			next = e
			if e == nil {
				next = i
			}
			if next.Time.After(limit) {
				return
			}
		}
		cn.queue[next.Dir].pop()
		c.dispatch(cn, next)
		next.Release()
	}
}

func (c *Collector) dispatch(cn *conn, ev *probes.Event) {
	switch ev.Kind {
	case kindLost:
		cn.dec.Lost(flow.Direction(ev.Dir))
	case probes.KindParseError:
		// The kernel stopped parsing this direction: what is open on it
		// can no longer complete exactly.
		c.stats.ParseErrors++
		cn.dec.Lost(flow.Direction(ev.Dir))
	default:
		cn.dec.Feed(ev)
	}
}

// emit completes a decoder's flow with what the connection knows.
func (c *Collector) emit(cn *conn, f *flow.Flow) {
	f.Node = c.cfg.Node
	f.ConnID = cn.id
	f.Process = cn.process
	local, remote := cn.info.Local, cn.info.Remote
	switch f.Observer {
	case flow.SideClient:
		f.Source, f.Destination = local, remote
	case flow.SideServer:
		f.Source, f.Destination = remote, local
	}
	c.stats.Flows++
	c.out(f)
}

func (c *Collector) evictIdlest(now time.Time) {
	var idlest *conn
	for _, cn := range c.conns {
		if idlest == nil || cn.lastActive.Before(idlest.lastActive) {
			idlest = cn
		}
	}
	if idlest != nil {
		c.stats.ConnsEvicted++
		c.close(idlest, now)
	}
}

// inScope reports whether cgroup path p lies in the subtree scope.
func inScope(p, scope string) bool {
	scope = strings.TrimSuffix(scope, "/")
	return scope == "" || p == scope || strings.HasPrefix(p, scope+"/")
}

// endOfTime releases every queued record, whatever its time.
var endOfTime = time.Unix(1<<50, 0)

// sweepEvery is how often connections are checked for a process that is
// gone: under syscall capture, a process that exits closes its sockets
// without a close() call. Socket capture reports every socket's end, and
// a socket may outlive the process that first used it (inherited across
// fork, passed with SCM_RIGHTS): those connections are never swept.
const sweepEvery = 5 * time.Second

func (c *Collector) sweep(now time.Time) {
	if now.Sub(c.lastSweep) < sweepEvery {
		return
	}
	c.lastSweep = now
	for _, cn := range c.conns {
		if !cn.info.EndReported && now.Sub(cn.lastActive) > sweepEvery && !c.ids.Alive(cn.pid) {
			c.stats.ConnsEvicted++
			c.close(cn, now)
		}
	}
}
