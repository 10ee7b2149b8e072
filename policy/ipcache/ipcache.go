package ipcache

import (
	"maps"
	"net/netip"
	"slices"
)

// Cache maps prefixes to identities; an address resolves to the identity
// of its longest matching prefix, and to the world identity of its family
// when none matches. The kernel programs hold the same table in an LPM
// trie (datapath); this copy answers traces and tests.
type Cache struct {
	prefixes map[netip.Prefix]ID
}

// New returns an empty cache.
func New() *Cache { return &Cache{prefixes: map[netip.Prefix]ID{}} }

// Upsert maps a prefix (an address is a host prefix) to id. IPv4-mapped
// IPv6 prefixes are stored as IPv4.
func (c *Cache) Upsert(p netip.Prefix, id ID) {
	c.prefixes[Canonical(p)] = id
}

// Canonical unmaps IPv4-mapped prefixes and masks host bits.
func Canonical(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() {
		bits := p.Bits() - 96
		if bits < 0 {
			bits = 0
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), bits)
	}
	return p.Masked()
}

// Lookup resolves an address.
func (c *Cache) Lookup(a netip.Addr) (ID, netip.Prefix) {
	a = a.Unmap()
	for bits := a.BitLen(); bits >= 0; bits-- {
		p := netip.PrefixFrom(a, bits).Masked()
		if id, ok := c.prefixes[p]; ok {
			return id, p
		}
	}
	return WorldFor(a), netip.Prefix{}
}

// Entries returns every prefix and its identity, sorted by prefix.
func (c *Cache) Entries() []Entry {
	out := make([]Entry, 0, len(c.prefixes))
	for _, p := range slices.SortedFunc(maps.Keys(c.prefixes), func(x, y netip.Prefix) int {
		if d := x.Addr().Compare(y.Addr()); d != 0 {
			return d
		}
		return x.Bits() - y.Bits()
	}) {
		out = append(out, Entry{Prefix: p, ID: c.prefixes[p]})
	}
	return out
}

// Entry is one prefix of the cache.
type Entry struct {
	Prefix netip.Prefix
	ID     ID
}
