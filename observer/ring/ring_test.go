package ring

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
)

// numbered returns a flow whose ConnID is its sequence number, so tests can
// check order and completeness.
func numbered(i int) *flow.Flow { return &flow.Flow{ConnID: uint64(i)} }

func ids(fs []*flow.Flow) []uint64 {
	out := make([]uint64, len(fs))
	for i, f := range fs {
		out[i] = f.ConnID
	}
	return out
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNewDefaultCapacity(t *testing.T) {
	if got := New[*flow.Flow](0).Capacity(); got != DefaultCapacity {
		t.Fatalf("New[*flow.Flow](0).Capacity() = %d, want %d", got, DefaultCapacity)
	}
	if got := New[*flow.Flow](-3).Capacity(); got != DefaultCapacity {
		t.Fatalf("New[*flow.Flow](-3).Capacity() = %d, want %d", got, DefaultCapacity)
	}
	if got := New[*flow.Flow](7).Capacity(); got != 7 {
		t.Fatalf("New[*flow.Flow](7).Capacity() = %d, want 7", got)
	}
}

func TestLastBeforeFull(t *testing.T) {
	r := New[*flow.Flow](4)
	if got := r.Last(10); len(got) != 0 {
		t.Fatalf("empty ring: Last(10) = %v, want none", ids(got))
	}
	for i := range 3 {
		r.Write(numbered(i))
	}
	r.Write(nil) // ignored
	if got := ids(r.Last(10)); !equal(got, []uint64{0, 1, 2}) {
		t.Fatalf("Last(10) = %v, want [0 1 2]", got)
	}
	if got := ids(r.Last(2)); !equal(got, []uint64{1, 2}) {
		t.Fatalf("Last(2) = %v, want [1 2]", got)
	}
	if got := r.Last(0); got != nil {
		t.Fatalf("Last(0) = %v, want nil", ids(got))
	}
	if got := r.Last(-1); got != nil {
		t.Fatalf("Last(-1) = %v, want nil", ids(got))
	}
	st := r.Stats()
	want := Stats{Capacity: 4, Len: 3, Written: 3}
	if st != want {
		t.Fatalf("Stats() = %+v, want %+v", st, want)
	}
}

func TestWrapAround(t *testing.T) {
	r := New[*flow.Flow](4)
	for i := range 10 {
		r.Write(numbered(i))
	}
	if got := ids(r.Last(100)); !equal(got, []uint64{6, 7, 8, 9}) {
		t.Fatalf("Last(100) = %v, want [6 7 8 9]", got)
	}
	if got := ids(r.Last(3)); !equal(got, []uint64{7, 8, 9}) {
		t.Fatalf("Last(3) = %v, want [7 8 9]", got)
	}
	st := r.Stats()
	want := Stats{Capacity: 4, Len: 4, Written: 10, Overwritten: 6}
	if st != want {
		t.Fatalf("Stats() = %+v, want %+v", st, want)
	}
}

func TestSubscribeReceivesNewFlowsInOrder(t *testing.T) {
	r := New[*flow.Flow](8)
	r.Write(numbered(100)) // before the subscription: must not be delivered
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := r.Subscribe(ctx, 16)
	for i := range 5 {
		r.Write(numbered(i))
	}
	for want := range 5 {
		select {
		case f := <-s.Events():
			if f.ConnID != uint64(want) {
				t.Fatalf("flow %d: got ConnID %d", want, f.ConnID)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("flow %d never arrived", want)
		}
	}
	if s.Lost() != 0 {
		t.Fatalf("Lost() = %d, want 0", s.Lost())
	}
}

// A subscriber that does not read must cost the writer nothing; once the
// writer laps it, what it missed is counted, and what it then receives is in
// order and newer than what it lost.
func TestSlowSubscriberLosesFlowsWithoutBlockingWriter(t *testing.T) {
	r := New[*flow.Flow](4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow := r.Subscribe(ctx, 1)

	done := make(chan struct{})
	go func() {
		for i := range 100 {
			r.Write(numbered(i))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Write blocked on a subscriber that does not read")
	}
	var got []uint64
	for len(got) == 0 || got[len(got)-1] != 99 {
		select {
		case f := <-slow.Events():
			got = append(got, f.ConnID)
		case <-time.After(5 * time.Second):
			t.Fatalf("follower stopped after %v", got)
		}
	}
	if uint64(len(got))+slow.Lost() != 100 || slow.Lost() == 0 {
		t.Fatalf("received %d + lost %d, want 100 with some lost", len(got), slow.Lost())
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("out of order: %v", got)
		}
	}
	if st := r.Stats(); st.Lost != slow.Lost() || st.Subscribers != 1 || st.Written != 100 {
		t.Fatalf("Stats() = %+v", st)
	}
}

// A follower less than a ring behind loses nothing, however slow it reads.
func TestSubscriberWithinRingLosesNothing(t *testing.T) {
	r := New[*flow.Flow](64)
	s := r.Subscribe(t.Context(), 1)
	for i := range 64 {
		r.Write(numbered(i))
	}
	for want := range 64 {
		if f := <-s.Events(); f.ConnID != uint64(want) {
			t.Fatalf("got %d, want %d", f.ConnID, want)
		}
	}
	if s.Lost() != 0 {
		t.Fatalf("Lost() = %d", s.Lost())
	}
}

func TestCancelEndsSubscription(t *testing.T) {
	r := New[*flow.Flow](8)
	ctx, cancel := context.WithCancel(context.Background())
	s := r.Subscribe(ctx, 1)
	r.Write(numbered(1))
	cancel()
	timeout := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case _, ok := <-s.Events():
			open = ok
		case <-timeout:
			t.Fatal("channel not closed after cancel")
		}
	}
	if n := r.Stats().Subscribers; n != 0 {
		t.Fatalf("Subscribers after cancel = %d, want 0", n)
	}
	r.Write(numbered(3)) // must not panic
}

func TestSubscribeWithDoneContext(t *testing.T) {
	r := New[*flow.Flow](8)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := r.Subscribe(ctx, 1)
	select {
	case _, ok := <-s.Events():
		if ok {
			t.Fatal("received a flow on a subscription whose context was already done")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel not closed for an already-done context")
	}
}

// History plus follow must be gap-free and duplicate-free even while a
// writer is running: the subscription starts exactly after the history.
func TestLastAndSubscribeIsSeamless(t *testing.T) {
	const total = 20000
	r := New[*flow.Flow](total) // a follower within one ring of the writer loses nothing
	for i := range 500 {
		r.Write(numbered(i))
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 500; i < total; i++ {
			r.Write(numbered(i))
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	history, s := r.LastAndSubscribe(ctx, 100, 16)
	if len(history) != 100 {
		t.Fatalf("history has %d flows, want 100", len(history))
	}
	wg.Wait()

	next := history[0].ConnID
	for _, f := range history {
		if f.ConnID != next {
			t.Fatalf("history: got %d, want %d", f.ConnID, next)
		}
		next++
	}
	for next < total {
		select {
		case f := <-s.Events():
			if f.ConnID != next {
				t.Fatalf("follow: got %d, want %d", f.ConnID, next)
			}
			next++
		case <-time.After(5 * time.Second):
			t.Fatalf("follow stopped at %d of %d", next, total)
		}
	}
	if s.Lost() != 0 {
		t.Fatalf("Lost() = %d within one ring of the writer", s.Lost())
	}
}

// Many concurrent writers, readers and subscribers: run with -race.
func TestConcurrentUse(t *testing.T) {
	r := New[*flow.Flow](128)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var received sync.WaitGroup
	subs := make([]*Subscription[*flow.Flow], 4)
	counts := make([]int, len(subs))
	var countsMu sync.Mutex
	for i := range subs {
		subs[i] = r.Subscribe(ctx, 8)
		received.Add(1)
		go func() {
			defer received.Done()
			for range subs[i].Events() {
				countsMu.Lock()
				counts[i]++
				countsMu.Unlock()
			}
		}()
	}

	var writers sync.WaitGroup
	const perWriter = 5000
	for w := range 4 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := range perWriter {
				r.Write(numbered(w*perWriter + i))
				if i%100 == 0 {
					_ = r.Last(50)
					_ = r.Stats()
				}
			}
		}()
	}
	writers.Wait()
	// Every follower ends up a ring or less behind: it reads the rest.
	deadline := time.Now().Add(10 * time.Second)
	for i, s := range subs {
		for {
			n := countOf(&counts[i], &countsMu)
			if uint64(n)+s.Lost() == 4*perWriter {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("subscriber %d: received %d + lost %d of %d", i, n, s.Lost(), 4*perWriter)
			}
			time.Sleep(time.Millisecond)
		}
	}
	cancel()
	received.Wait()

	st := r.Stats()
	if st.Written != 4*perWriter {
		t.Fatalf("Written = %d, want %d", st.Written, 4*perWriter)
	}
	var lost uint64
	for i, s := range subs {
		if uint64(counts[i])+s.Lost() != st.Written {
			t.Fatalf("subscriber %d: received %d + lost %d != written %d", i, counts[i], s.Lost(), st.Written)
		}
		lost += s.Lost()
	}
	if st.Lost != lost {
		t.Fatalf("total Lost = %d, sum over subscribers = %d", st.Lost, lost)
	}
}

func countOf(n *int, mu *sync.Mutex) int {
	mu.Lock()
	defer mu.Unlock()
	return *n
}

// Stop delivers what was written before it, then closes the channel.
func TestStopDrains(t *testing.T) {
	r := New[*flow.Flow](8)
	s := r.Subscribe(t.Context(), 1)
	for i := range 5 {
		r.Write(numbered(i))
	}
	s.Stop()
	var got []uint64
	for f := range s.Events() {
		got = append(got, f.ConnID)
	}
	if !equal(got, []uint64{0, 1, 2, 3, 4}) {
		t.Fatalf("got %v", got)
	}
}
