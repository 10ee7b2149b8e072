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

// readAll reads everything rd can read now.
func readAll(rd *Reader[*flow.Flow]) (got []uint64, lost uint64) {
	buf := make([]*flow.Flow, 3) // small: reads span several calls
	for {
		n, l := rd.Read(buf)
		lost += l
		if n == 0 {
			return got, lost
		}
		got = append(got, ids(buf[:n])...)
	}
}

func TestFollowReadsNewFlowsInOrder(t *testing.T) {
	r := New[*flow.Flow](8)
	r.Write(numbered(100)) // before the reader: not delivered
	rd := r.Follow()
	defer rd.Close()
	for i := range 5 {
		r.Write(numbered(i))
	}
	if got, lost := readAll(rd); !equal(got, []uint64{0, 1, 2, 3, 4}) || lost != 0 {
		t.Fatalf("read %v lost %d, want [0 1 2 3 4] and none lost", got, lost)
	}
	if st := r.Stats(); st.Subscribers != 1 {
		t.Fatalf("Subscribers = %d, want 1", st.Subscribers)
	}
	rd.Close()
	rd.Close() // twice is harmless
	if st := r.Stats(); st.Subscribers != 0 {
		t.Fatalf("Subscribers after Close = %d, want 0", st.Subscribers)
	}
}

// A reader that does not read costs the writer nothing; once the writer
// laps it, what it missed is counted, and what it then reads is the newest.
func TestLappedReaderLosesOldestCounted(t *testing.T) {
	r := New[*flow.Flow](4)
	rd := r.Follow()
	defer rd.Close()
	for i := range 100 {
		r.Write(numbered(i))
	}
	got, lost := readAll(rd)
	if !equal(got, []uint64{96, 97, 98, 99}) || lost != 96 || rd.Lost() != 96 {
		t.Fatalf("read %v lost %d (reader says %d), want [96..99] and 96 lost", got, lost, rd.Lost())
	}
	if st := r.Stats(); st.Lost != 96 || st.Written != 100 {
		t.Fatalf("Stats() = %+v", st)
	}
}

// A weighted ring counts in weight: what a lapped reader is told it lost
// is the weight it skipped, whatever the entries weighed.
func TestWeightedCounters(t *testing.T) {
	weight := func(f *flow.Flow) uint64 { return f.ConnID%2 + 1 } // odd: 2, even: 1
	r := NewWeighted[*flow.Flow](4, weight, 2)
	rd := r.Follow()
	defer rd.Close()
	for i := range 10 { // weights 1 2 1 2 1 2 1 2 1 2: 15
		r.Write(numbered(i))
	}
	got, lost := readAll(rd)
	// Entries 0..5 (weight 9) were overwritten.
	if !equal(got, []uint64{6, 7, 8, 9}) || lost != 9 {
		t.Fatalf("read %v lost %d, want [6..9] and 9 lost", got, lost)
	}
	want := Stats{Capacity: 8, Len: 6, Written: 15, Overwritten: 9, Lost: 9, Subscribers: 1}
	if st := r.Stats(); st != want {
		t.Fatalf("Stats() = %+v, want %+v", st, want)
	}
}

// A cursor of the same ring resumes exactly where the last reader stopped;
// one of another ring (an agent that restarted) starts at the oldest
// entry; one overwritten since counts what it missed.
func TestFollowFromCursor(t *testing.T) {
	r := New[*flow.Flow](4)
	for i := range 3 {
		r.Write(numbered(i))
	}
	rd := r.Follow()
	r.Write(numbered(3))
	readAll(rd)
	c := rd.Cursor()
	rd.Close()
	r.Write(numbered(4))
	r.Write(numbered(5))

	again, ok := r.FollowFrom(c)
	if got, lost := readAll(again); !ok || !equal(got, []uint64{4, 5}) || lost != 0 {
		t.Fatalf("resume: ok %v read %v lost %d, want [4 5]", ok, got, lost)
	}
	again.Close()

	other, ok := r.FollowFrom(Cursor{Instance: New[*flow.Flow](1).Instance(), Position: 5})
	if got, _ := readAll(other); ok || !equal(got, []uint64{2, 3, 4, 5}) {
		t.Fatalf("foreign cursor: ok %v read %v, want the whole ring", ok, got)
	}
	other.Close()

	for i := 6; i < 12; i++ {
		r.Write(numbered(i))
	}
	late, ok := r.FollowFrom(c)
	if got, lost := readAll(late); !ok || !equal(got, []uint64{8, 9, 10, 11}) || lost != 4 {
		t.Fatalf("overwritten cursor: ok %v read %v lost %d, want [8..11] and 4 lost", ok, got, lost)
	}
	late.Close()
}

func TestWaitEndsOnStopAndContext(t *testing.T) {
	r := New[*flow.Flow](8)
	rd := r.Follow()
	defer rd.Close()
	stop := make(chan struct{})
	close(stop)
	if rd.Wait(context.Background(), stop) {
		t.Fatal("Wait returned true with nothing written and stop closed")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if rd.Wait(ctx, nil) {
		t.Fatal("Wait returned true with nothing written and ctx done")
	}
	woke := make(chan bool)
	go func() { woke <- rd.Wait(context.Background(), nil) }()
	r.Write(numbered(1))
	select {
	case ok := <-woke:
		if !ok || !rd.Pending() {
			t.Fatalf("Wait = %v, Pending = %v after a write", ok, rd.Pending())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait not woken by a write")
	}
}

// History plus follow is gap-free and duplicate-free even while a writer
// runs: the reader starts exactly after the history.
func TestLastAndFollowIsSeamless(t *testing.T) {
	const total = 20000
	r := New[*flow.Flow](total) // within one ring of the writer nothing is lost
	for i := range 500 {
		r.Write(numbered(i))
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 500; i < total; i++ {
			r.Write(numbered(i))
		}
	})
	history, rd := r.LastAndFollow(100)
	defer rd.Close()
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
	got, lost := readAll(rd)
	for _, id := range got {
		if id != next {
			t.Fatalf("follow: got %d, want %d", id, next)
		}
		next++
	}
	if next != total || lost != 0 {
		t.Fatalf("follow ended at %d of %d, lost %d", next, total, lost)
	}
}

// Many concurrent writers and readers: run with -race. Every reader ends
// up with received + lost = written.
func TestConcurrentUse(t *testing.T) {
	r := New[*flow.Flow](128)
	const perWriter, writers = 5000, 4
	var readers sync.WaitGroup
	totals := make([]uint64, 4)
	stop := make(chan struct{})
	for i := range totals {
		rd := r.Follow()
		readers.Go(func() {
			defer rd.Close()
			buf := make([]*flow.Flow, 16)
			for {
				n, lost := rd.Read(buf)
				totals[i] += uint64(n) + lost
				if n == 0 && !rd.Wait(context.Background(), stop) {
					n, lost := rd.Read(buf) // the rest
					totals[i] += uint64(n) + lost
					if n == 0 {
						return
					}
				}
			}
		})
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				r.Write(numbered(w*perWriter + i))
				if i%100 == 0 {
					_ = r.Last(50)
					_ = r.Stats()
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	st := r.Stats()
	if st.Written != writers*perWriter {
		t.Fatalf("Written = %d", st.Written)
	}
	for i, n := range totals {
		if n != st.Written {
			t.Errorf("reader %d: received + lost = %d, want %d", i, n, st.Written)
		}
	}
}
