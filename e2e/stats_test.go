package e2e

import (
	"fmt"

	"github.com/sextant/sextant/collector"
	"github.com/sextant/sextant/collector/http2"
)

// decodeErrors sums the collector's error counters: directions the kernel
// stopped parsing, and every HTTP/2 decode error kind.
func decodeErrors(s collector.Stats) uint64 {
	n := s.ParseErrors
	for _, v := range s.HTTP2.Errors {
		n += v
	}
	return n
}

// statsDelta says which error and loss counters moved between two snapshots.
func statsDelta(before, after collector.Stats) string {
	s := fmt.Sprintf("ParseErrors +%d", after.ParseErrors-before.ParseErrors)
	for k := range http2.NumErrorKinds {
		if d := after.HTTP2.Errors[k] - before.HTTP2.Errors[k]; d > 0 {
			s += fmt.Sprintf(", http2 %s +%d", k, d)
		}
	}
	return s + fmt.Sprintf(", StreamsLost +%d, OrphanRecords +%d, SeqGaps +%d",
		after.HTTP2.StreamsLost-before.HTTP2.StreamsLost, after.OrphanRecords-before.OrphanRecords, after.SeqGaps-before.SeqGaps)
}
