package probes

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sextant/sextant/testbed"
)

// A ring buffer too small for the traffic: lost records are counted and
// show up as sequence gaps, never as silently wrong data.
func TestRingFullIsCountedAndVisible(t *testing.T) {
	forEachCapture(t, testRingFull)
}

func testRingFull(t *testing.T, capture Capture) {
	testbed.RequireRoot(t)
	p, err := Load(Options{TraceSelf: true, RingBufferBytes: 16 << 10, Capture: capture})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	addr := h2cServer(t)
	client := h2cClient()
	// Nobody reads while the traffic runs: the ring overflows.
	doRequests(t, client, addr, 200, "flood")

	// Then a reader drains it, and later records of the same connection
	// arrive after the gap.
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var evs []*Event
	done := make(chan error)
	go func() { done <- p.Run(ctx, func(ev *Event) { mu.Lock(); evs = append(evs, ev); mu.Unlock() }) }()
	time.Sleep(2 * pollInterval)
	doRequests(t, client, addr, 3, "after")
	client.CloseIdleConnections()
	time.Sleep(4 * pollInterval)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if st.Drops[DropRingBufFull] == 0 {
		t.Fatalf("no ring buffer drops counted with a 16 KiB ring")
	}

	ap := netip.MustParseAddrPort(addr)
	ours := map[uint64]bool{}
	for _, ev := range evs {
		if ev.Kind == KindConn && (ev.Conn.Local == ap || ev.Conn.Remote == ap) {
			ours[ev.ConnID] = true
		}
	}
	next := map[connKey]uint32{}
	gaps := uint64(0)
	for _, ev := range evs {
		if !ours[ev.ConnID] || ev.Kind == KindConn || ev.Kind == KindClose {
			continue
		}
		if ev.Mirrored {
			// The writer's entries, whose gaps the writer's direction
			// shows too: one drop, two directions.
			continue
		}
		k := connKey{ev.ConnID, ev.Dir}
		if ev.Seq < next[k] {
			t.Fatalf("%v: seq went back from %d to %d", k, next[k], ev.Seq)
		}
		gaps += uint64(ev.Seq - next[k])
		next[k] = ev.Seq + 1
	}
	t.Logf("drops %d, records read %d, seq gaps on the test connections %d", st.Drops[DropRingBufFull], st.Events, gaps)
	if gaps == 0 {
		t.Errorf("no sequence gaps although records were dropped")
	}
	if gaps > st.Drops[DropRingBufFull] {
		t.Errorf("%d records missing from sequences but only %d drops counted", gaps, st.Drops[DropRingBufFull])
	}
	if capture == CaptureSocket {
		checkMirroredGaps(t, evs, ours)
	}
}

// checkMirroredGaps: a mirrored reader's ingress shows the writer's losses
// as its own. Its events carry the writer's egress sequence numbers, in
// the writer's order (up to where the reader stopped reading), so every
// record the writer lost is a gap in the reader's direction too.
func checkMirroredGaps(t *testing.T, evs []*Event, ours map[uint64]bool) {
	t.Helper()
	type ends struct{ local, remote netip.AddrPort }
	byEnds := map[ends]uint64{}
	conns := map[uint64]*ConnInfo{}
	for _, ev := range evs {
		if ev.Kind == KindConn && ours[ev.ConnID] {
			byEnds[ends{ev.Conn.Local, ev.Conn.Remote}] = ev.ConnID
			conns[ev.ConnID] = ev.Conn
		}
	}
	seqs := map[connKey][]uint32{}
	for _, ev := range evs {
		if !ours[ev.ConnID] || ev.Kind == KindConn || ev.Kind == KindClose {
			continue
		}
		k := connKey{ev.ConnID, ev.Dir}
		// Entries of one record share nothing but order: keep each
		// number once, as the gap count above sees them.
		if s := seqs[k]; len(s) == 0 || s[len(s)-1] != ev.Seq {
			seqs[k] = append(seqs[k], ev.Seq)
		}
	}
	compared, gapped := 0, 0
	for id, c := range conns {
		k := connKey{id, Ingress}
		mirrored := false
		for _, ev := range evs {
			if ev.ConnID == id && ev.Dir == Ingress && ev.Mirrored {
				mirrored = true
				break
			}
		}
		if !mirrored {
			continue
		}
		writer, ok := byEnds[ends{c.Remote, c.Local}]
		if !ok {
			t.Errorf("conn %d: mirrored ingress, but its writer's connection event is missing", id)
			continue
		}
		got, want := seqs[k], seqs[connKey{writer, Egress}]
		if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) {
			t.Errorf("conn %d ingress: sequence numbers %v, its writer %d's egress %v", id, got, writer, want)
			continue
		}
		compared++
		for i := 1; i < len(got); i++ {
			if got[i] != got[i-1]+1 {
				gapped++
				break
			}
		}
	}
	t.Logf("mirrored directions compared with their writers: %d, with gaps: %d", compared, gapped)
	if compared == 0 {
		t.Errorf("no mirrored direction on the test connections")
	}
}
