package probes

import "testing"

// Lost counts traffic the kernel lost, not directions whose parsing stopped
// on bad input (those are decode errors, reported apart).
func TestStatsLost(t *testing.T) {
	var s Stats
	s.Drops[DropParseStopped], s.Drops[DropFrames], s.Drops[DropIOV] = 5, 2, 1
	if n := s.Lost(); n != 0 {
		t.Errorf("parse stops counted as lost: %d", n)
	}
	s.Drops[DropRingBufFull], s.Drops[DropConnTable], s.Drops[DropStreamTable] = 3, 1, 2
	if n := s.Lost(); n != 6 {
		t.Errorf("Lost() = %d, want 6", n)
	}
}
