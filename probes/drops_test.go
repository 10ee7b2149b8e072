package probes

import (
	"context"
	"net/netip"
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
}
