package ring

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sextant/sextant/collector/flow"
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

// A subscriber that never reads must cost the writer nothing but counted loss.
func TestSlowSubscriberLosesFlowsWithoutBlockingWriter(t *testing.T) {
	r := New[*flow.Flow](64)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow := r.Subscribe(ctx, 2)
	fast := r.Subscribe(ctx, 100)

	done := make(chan struct{})
	go func() {
		for i := range 10 {
			r.Write(numbered(i))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Write blocked on a subscriber that does not read")
	}

	if got := slow.Lost(); got != 8 {
		t.Fatalf("slow.Lost() = %d, want 8", got)
	}
	if got := fast.Lost(); got != 0 {
		t.Fatalf("fast.Lost() = %d, want 0", got)
	}
	// The slow subscriber keeps the oldest flows it had room for.
	for want := range 2 {
		if f := <-slow.Events(); f.ConnID != uint64(want) {
			t.Fatalf("slow flow %d: got ConnID %d", want, f.ConnID)
		}
	}
	if got := len(fast.Events()); got != 10 {
		t.Fatalf("fast subscriber holds %d flows, want 10", got)
	}
	st := r.Stats()
	if st.Lost != 8 || st.Subscribers != 2 || st.Written != 10 {
		t.Fatalf("Stats() = %+v, want Lost 8, Subscribers 2, Written 10", st)
	}
}

func TestCancelEndsSubscription(t *testing.T) {
	r := New[*flow.Flow](8)
	ctx, cancel := context.WithCancel(context.Background())
	s := r.Subscribe(ctx, 1)
	r.Write(numbered(1))
	r.Write(numbered(2)) // lost: buffer is 1
	cancel()

	// The buffered flow is still delivered, then the channel closes.
	var got []uint64
	timeout := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case f, ok := <-s.Events():
			if !ok {
				open = false
				break
			}
			got = append(got, f.ConnID)
		case <-timeout:
			t.Fatal("channel not closed after cancel")
		}
	}
	if !equal(got, []uint64{1}) {
		t.Fatalf("received %v, want [1]", got)
	}
	if n := r.Stats().Subscribers; n != 0 {
		t.Fatalf("Subscribers after cancel = %d, want 0", n)
	}
	// Writing after the subscription ended must neither panic nor count loss.
	r.Write(numbered(3))
	if st := r.Stats(); st.Lost != 1 {
		t.Fatalf("total Lost = %d, want 1 (losses of departed subscribers are kept)", st.Lost)
	}
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
	r := New[*flow.Flow](1024)
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
	history, s := r.LastAndSubscribe(ctx, 100, total)
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
		t.Fatalf("Lost() = %d with a buffer large enough for everything", s.Lost())
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
	for i := range subs {
		subs[i] = r.Subscribe(ctx, 8)
		received.Add(1)
		go func() {
			defer received.Done()
			for range subs[i].Events() {
				counts[i]++
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
