package ipcache

import (
	"net/netip"
	"testing"

	"github.com/cilium/cilium/pkg/labels"
)

func TestLookupLongestPrefix(t *testing.T) {
	c := New()
	c.Upsert(netip.MustParsePrefix("10.0.0.0/8"), 100)
	c.Upsert(netip.MustParsePrefix("10.1.0.0/16"), 101)
	c.Upsert(netip.MustParsePrefix("10.1.2.3/32"), 300)
	c.Upsert(netip.MustParsePrefix("::ffff:192.0.2.0/120"), 102) // v4-mapped: stored as 192.0.2.0/24
	c.Upsert(netip.MustParsePrefix("2001:db8::/32"), 103)
	for _, tc := range []struct {
		addr string
		want ID
	}{
		{"10.9.9.9", 100}, {"10.1.9.9", 101}, {"10.1.2.3", 300}, {"::ffff:10.1.2.3", 300},
		{"192.0.2.7", 102}, {"2001:db8::1", 103}, {"11.0.0.1", WorldIPv4}, {"2001:db9::1", WorldIPv6},
	} {
		if got, _ := c.Lookup(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.addr, got, tc.want)
		}
	}
}

func TestAllocator(t *testing.T) {
	sets := []labels.LabelArray{
		labels.ParseLabelArray("k8s:app=web"),
		labels.ParseLabelArray("k8s:app=db"),
	}
	a, b := NewAllocator(), NewAllocator()
	ia := a.ForLabelSets(sets)
	ib := b.ForLabelSets([]labels.LabelArray{sets[1], sets[0]})
	if ia[0].ID != ib[1].ID || ia[1].ID != ib[0].ID || ia[0].ID < FirstEndpoint {
		t.Fatalf("numbering depends on order: %v %v", ia, ib)
	}
	if again := a.ForLabels(sets[0]); again.ID != ia[0].ID {
		t.Fatalf("same labels, new number %d", again.ID)
	}
	if h := a.ForLabels(labels.ParseLabelArray("reserved:host")); h.ID != Host {
		t.Fatalf("reserved:host is %d", h.ID)
	}
	p := a.ForPrefix(netip.MustParsePrefix("10.0.0.0/8"))
	if p.ID&LocalScope == 0 || p.Labels.GetModel()[0] != "cidr:10.0.0.0/8" {
		t.Fatalf("CIDR identity %v", p)
	}
	if w := a.ForPrefix(netip.MustParsePrefix("0.0.0.0/0")); w.ID != WorldIPv4 {
		t.Fatalf("0.0.0.0/0 is %d", w.ID)
	}
}
