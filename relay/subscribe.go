package relay

import (
	"context"
	"sync"

	"github.com/sextant/sextant/observer"
	"github.com/sextant/sextant/observer/ring"
)

// Subscription delivers the merged stream to one consumer (an exporter):
// it reads the relay's ring from its own position, in batches. The merge
// never waits for it: a subscription that falls a whole ring behind loses
// the oldest events it has not read, for itself alone, and counts them,
// so a slow exporter sees no gap it cannot measure.
type Subscription struct {
	r      *Relay
	rd     *ring.Reader[observer.Entry]
	ctx    context.Context
	cancel context.CancelFunc
	close  sync.Once
}

// Subscribe returns a subscription to every event merged from now on.
// Entries are shared with the relay's ring and other subscribers: treat
// them as read-only.
func (r *Relay) Subscribe() *Subscription {
	ctx, cancel := context.WithCancel(context.Background())
	return &Subscription{r: r, rd: r.ring.Follow(), ctx: ctx, cancel: cancel}
}

// Read waits for merged events and copies them into buf, oldest first. It
// returns ok false once the relay stopped and every event merged before
// was read, or once the subscription was closed. One goroutine reads a
// subscription.
func (s *Subscription) Read(buf []observer.Entry) (n int, ok bool) {
	for {
		// Stopped before the read: the read sees all the merge released.
		stopped := closed(s.r.stoppedCh)
		if n, _ = s.rd.Read(buf); n > 0 {
			return n, true
		}
		if stopped || s.ctx.Err() != nil {
			return 0, false
		}
		s.rd.Wait(s.ctx, s.r.stoppedCh)
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Dropped is how many events this subscription lost because it fell a
// ring behind.
func (s *Subscription) Dropped() uint64 { return s.rd.Lost() }

// Close ends the subscription; a Read waiting returns.
func (s *Subscription) Close() {
	s.close.Do(func() {
		s.cancel()
		s.rd.Close()
	})
}
