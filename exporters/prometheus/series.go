package prometheus

import (
	"sync/atomic"

	prom "github.com/prometheus/client_golang/prometheus"
)

// family is the set of metrics of one observer side and protocol that share
// their labels (e.g. the server duration and body size histograms). It
// keeps the histogram children it handed out under a comparable key, so
// that an observation costs one map lookup instead of hashing label
// values, and enforces the series limit: once limit keys exist, new ones
// go to the overflow series and are counted.
//
// Only the exporter's worker goroutine calls get; series and overflowed are
// read at scrape time.
type family[K comparable] struct {
	names  []string // metric names, parallel to vecs
	vecs   []*prom.HistogramVec
	values func(K) []string // label values of a key, in the vecs' label order
	limit  int

	series   map[K]*children
	labels   int       // number of labels
	overflow *children // made at the first overflow

	count      atomic.Int64  // series handed out (overflow series not counted)
	overflowed atomic.Uint64 // observations that went to the overflow series
}

// children are the histogram children of one label set, in the order of
// family.vecs; exemplar is the first (the duration) with exemplar support.
type children struct {
	obs      []prom.Observer
	exemplar prom.ExemplarObserver
}

func newFamily[K comparable](names []string, vecs []*prom.HistogramVec, labels int, values func(K) []string, limit int) *family[K] {
	return &family[K]{names: names, vecs: vecs, values: values, limit: limit, labels: labels, series: make(map[K]*children)}
}

func (fam *family[K]) children(lvs []string) *children {
	c := &children{obs: make([]prom.Observer, len(fam.vecs))}
	for i, v := range fam.vecs {
		c.obs[i] = v.WithLabelValues(lvs...)
	}
	c.exemplar, _ = c.obs[0].(prom.ExemplarObserver)
	return c
}

// get returns the children of k, creating them while under the limit.
func (fam *family[K]) get(k K) *children {
	if c, ok := fam.series[k]; ok {
		return c
	}
	if len(fam.series) >= fam.limit {
		fam.overflowed.Add(1)
		if fam.overflow == nil {
			ov := make([]string, fam.labels)
			for i := range ov {
				ov[i] = overflow
			}
			fam.overflow = fam.children(ov)
		}
		return fam.overflow
	}
	c := fam.children(fam.values(k))
	fam.series[k] = c
	fam.count.Add(1)
	return c
}
