package e2e

import "github.com/sextant/sextant/collector"

// decodeErrors sums the collector's error counters: directions the kernel
// stopped parsing, and every HTTP/2 decode error kind.
func decodeErrors(s collector.Stats) uint64 {
	n := s.ParseErrors
	for _, v := range s.HTTP2.Errors {
		n += v
	}
	return n
}
