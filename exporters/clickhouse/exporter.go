// Package clickhouse keeps the history of flows in ClickHouse: a server
// over the native protocol (clickhouse-go), or the embedded chDB engine
// when no server is configured. Flows are batched, written with explicit
// column lists, spooled to disk while the store is unreachable and replayed
// in order, without loss or duplicates. docs/clickhouse.md describes the
// table; docs/queries.md has queries.
package clickhouse

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/sextant/sextant/exporters"
	"github.com/sextant/sextant/flow"
)

// DefaultDatabase holds the flows table.
const DefaultDatabase = "sextant"

// Config configures the exporter. Zero values take the defaults named.
type Config struct {
	// BatchSize seals a batch at this many flows (default 20000).
	BatchSize int
	// FlushInterval seals a non-empty batch this long after its first flow
	// (default 1s): flows reach SQL within about this delay.
	FlushInterval time.Duration
	// QueueBatches bounds the sealed batches waiting in memory (default 8).
	// Memory is bounded by (QueueBatches+1) × BatchSize flows; past it,
	// flows are dropped and counted.
	QueueBatches int
	// SpoolDir keeps batches while the store is unreachable (default: none,
	// batches that cannot be written are dropped and counted).
	SpoolDir string
	// SpoolMaxBytes bounds the spool (default 1 GiB).
	SpoolMaxBytes int64
	// RetryInterval is the first wait before retrying the store; it doubles
	// up to MaxRetryInterval (defaults 500ms and 15s).
	RetryInterval, MaxRetryInterval time.Duration
	Log                             *slog.Logger
}

func (c *Config) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 20000
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = time.Second
	}
	if c.QueueBatches <= 0 {
		c.QueueBatches = 8
	}
	if c.SpoolMaxBytes <= 0 {
		c.SpoolMaxBytes = 1 << 30
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = 500 * time.Millisecond
	}
	if c.MaxRetryInterval <= 0 {
		c.MaxRetryInterval = 15 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// refusedError is a batch the client library refused to encode: retrying
// cannot help.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// rejectAfter: a spooled batch the server refused this many times in a
// row with a server-side exception (not a network error) is set aside.
const rejectAfter = 5

// Stats are the exporter's counters since start.
type Stats struct {
	Exported     uint64 // flows received
	Written      uint64 // flows in the store
	Dropped      uint64 // flows lost: memory queue full, spool full or absent, batch rejected
	Spooled      uint64 // flows that went through the spool
	Replayed     uint64 // spooled flows written after the store came back
	QueueBatches int    // sealed batches waiting in memory
	SpoolBatches int
	SpoolBytes   int64
	LastError    string
}

// Exporter writes flows to a Store in batches. Export never blocks.
type Exporter struct {
	cfg   Config
	store Store
	spool *spool // nil without SpoolDir

	mu      sync.Mutex
	pending []*flow.Flow
	closed  bool
	timer   *time.Timer

	queue chan []*flow.Flow
	done  chan struct{}
	stop  chan struct{} // closed by Close after the last batch is queued

	nextID    uint64 // batch ids: random high bits + sequence
	exported  atomic.Uint64
	written   atomic.Uint64
	dropped   atomic.Uint64
	spooled   atomic.Uint64
	replayed  atomic.Uint64
	lastError atomic.Value // string
}

var _ exporters.Exporter = (*Exporter)(nil)

// New starts an exporter writing to store. The store stays owned by the
// caller (the relay serves queries from it too).
func New(cfg Config, store Store) (*Exporter, error) {
	cfg.defaults()
	e := &Exporter{
		cfg:   cfg,
		store: store,
		queue: make(chan []*flow.Flow, cfg.QueueBatches),
		done:  make(chan struct{}),
		stop:  make(chan struct{}),
	}
	if cfg.SpoolDir != "" {
		var err error
		if e.spool, err = openSpool(cfg.SpoolDir, cfg.SpoolMaxBytes); err != nil {
			return nil, err
		}
	}
	// Batch ids must never repeat across restarts or relays writing to one
	// table: 32 random bits, then a sequence number.
	var seed [4]byte
	rand.Read(seed[:])
	e.nextID = uint64(binary.BigEndian.Uint32(seed[:])) << 32
	e.lastError.Store("")
	go e.run()
	return e, nil
}

// Export queues f. It never blocks: when the memory queue is full the
// batch is dropped and counted.
func (e *Exporter) Export(f *flow.Flow) {
	e.exported.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		e.dropped.Add(1)
		return
	}
	if len(e.pending) == 0 {
		e.pending = make([]*flow.Flow, 0, min(e.cfg.BatchSize, 1024))
		e.timer = time.AfterFunc(e.cfg.FlushInterval, e.flushTimer)
	}
	e.pending = append(e.pending, f)
	if len(e.pending) >= e.cfg.BatchSize {
		e.sealLocked()
	}
}

func (e *Exporter) flushTimer() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closed && len(e.pending) > 0 {
		e.sealLocked()
	}
}

func (e *Exporter) sealLocked() {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	b := e.pending
	e.pending = nil
	select {
	case e.queue <- b:
	default:
		e.dropped.Add(uint64(len(b)))
	}
}

// insertTimeout bounds one insert, so a server that stops answering
// turns into a retry instead of a stuck worker.
const insertTimeout = 30 * time.Second

// run is the one worker: it writes batches in order. While the store
// fails, batches go to the spool behind the ones already there, and the
// spool is replayed oldest first, with backoff, before anything newer is
// written directly again.
func (e *Exporter) run() {
	defer close(e.done)
	wait := e.cfg.RetryInterval
	// A spool left by an earlier run is replayed first.
	backlog := false
	if e.spool != nil {
		n, _ := e.spool.stats()
		backlog = n > 0
	}
	retry := time.NewTimer(0)
	refused := 0 // server exceptions in a row for the oldest spooled batch
	for {
		var flows []*flow.Flow
		select {
		case flows = <-e.queue:
		case <-retry.C:
			if backlog {
				if e.drain(&refused) {
					backlog, wait = false, e.cfg.RetryInterval
				} else {
					retry.Reset(wait)
					wait = min(2*wait, e.cfg.MaxRetryInterval)
				}
			}
			continue
		case <-e.stop:
			select {
			case flows = <-e.queue:
			default:
				if backlog {
					e.drain(&refused) // one last try; what remains stays spooled
				}
				return
			}
		}
		b := e.batch(flows)
		if backlog {
			e.toSpool(b) // behind the older batches
			continue
		}
		if err := e.insert(b); err != nil {
			e.fail(err)
			if e.spool == nil {
				e.dropped.Add(uint64(len(b.Rows)))
				continue
			}
			b.Attempted = true
			e.toSpool(b)
			backlog = true
			retry.Reset(wait)
			continue
		}
		e.written.Add(uint64(len(b.Rows)))
	}
}

func (e *Exporter) insert(b *Batch) error {
	ctx, cancel := context.WithTimeout(context.Background(), insertTimeout)
	defer cancel()
	return e.store.Insert(ctx, b)
}

func (e *Exporter) batch(flows []*flow.Flow) *Batch {
	e.nextID++
	b := &Batch{ID: e.nextID, Rows: make([]Row, len(flows))}
	for i, f := range flows {
		b.Rows[i] = rowOf(f)
	}
	return b
}

func (e *Exporter) toSpool(b *Batch) {
	if err := e.spool.push(b); err != nil {
		e.fail(err)
		e.dropped.Add(uint64(len(b.Rows)))
		return
	}
	e.spooled.Add(uint64(len(b.Rows)))
}

// drain writes spooled batches oldest first; false when some remain.
func (e *Exporter) drain(refused *int) bool {
	for {
		b, err := e.spool.oldest()
		if err != nil {
			e.fail(fmt.Errorf("spool: %w", err))
			if err := e.spool.reject(); err != nil {
				return false
			}
			continue
		}
		if b == nil {
			return true
		}
		// Any earlier attempt may have reached the table.
		b.Attempted = true
		if err := e.insert(b); err != nil {
			e.fail(err)
			var ex *clickhouse.Exception
			var bad *refusedError
			if errors.As(err, &ex) || errors.As(err, &bad) {
				*refused++
				if *refused >= rejectAfter {
					e.cfg.Log.Error("clickhouse: server refuses a spooled batch, set aside", "batch", b.ID, "rows", len(b.Rows), "err", err)
					e.dropped.Add(uint64(len(b.Rows)))
					e.spool.reject()
					*refused = 0
					continue
				}
			}
			return false
		}
		*refused = 0
		if err := e.spool.drop(); err != nil {
			// Written but still on disk: the next replay finds it
			// committed and drops it then.
			e.fail(fmt.Errorf("spool: %w", err))
			return false
		}
		e.written.Add(uint64(len(b.Rows)))
		e.replayed.Add(uint64(len(b.Rows)))
	}
}

func (e *Exporter) fail(err error) {
	msg := err.Error()
	if prev, _ := e.lastError.Load().(string); prev != msg {
		e.cfg.Log.Warn("clickhouse export", "err", err)
	}
	e.lastError.Store(msg)
}

// Close seals what is pending and waits until every queued batch is
// written or spooled, or ctx ends. The store is not closed.
func (e *Exporter) Close(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
	} else {
		e.closed = true
		if e.timer != nil {
			e.timer.Stop()
		}
		last := e.pending
		e.pending = nil
		e.mu.Unlock()
		if len(last) > 0 {
			// Unlike Export, Close may wait for room in the queue.
			select {
			case e.queue <- last:
			case <-ctx.Done():
				e.dropped.Add(uint64(len(last)))
			}
		}
		close(e.stop)
	}
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("clickhouse exporter: close: %w", ctx.Err())
	}
}

// QueueCapacity is how many sealed batches may wait in memory.
func (e *Exporter) QueueCapacity() int { return cap(e.queue) }

// Stats returns the counters.
func (e *Exporter) Stats() Stats {
	s := Stats{
		Exported:     e.exported.Load(),
		Written:      e.written.Load(),
		Dropped:      e.dropped.Load(),
		Spooled:      e.spooled.Load(),
		Replayed:     e.replayed.Load(),
		QueueBatches: len(e.queue),
	}
	s.LastError, _ = e.lastError.Load().(string)
	if e.spool != nil {
		s.SpoolBatches, s.SpoolBytes = e.spool.stats()
	}
	return s
}
