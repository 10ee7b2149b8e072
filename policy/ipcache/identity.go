// Package ipcache numbers identities, as Cilium does: reserved identities
// with Cilium's numbers, one identity per endpoint label set, one local
// identity per CIDR a rule names; and maps IP addresses to identities by
// longest prefix (Cilium's ipcache).
package ipcache

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/cilium/cilium/pkg/labels"
)

// ID is a numeric security identity.
type ID uint32

// Cilium's reserved identities (pkg/identity/numericidentity.go): the same
// numbers, so that `hubble observe --identity 2` means the same thing.
const (
	Unknown       ID = 0
	Host          ID = 1
	World         ID = 2
	Unmanaged     ID = 3
	Health        ID = 4
	Init          ID = 5
	RemoteNode    ID = 6
	KubeAPIServer ID = 7
	Ingress       ID = 8
	WorldIPv4     ID = 9
	WorldIPv6     ID = 10
	// FirstEndpoint is Cilium's MinimalNumericIdentity: endpoint label
	// sets are numbered from here.
	FirstEndpoint ID = 256
	// LocalScope marks node-local identities (CIDR identities), as
	// Cilium's IdentityScopeLocal.
	LocalScope ID = 1 << 24
)

var reservedNames = map[ID]string{
	Host: labels.IDNameHost, World: labels.IDNameWorld, Unmanaged: labels.IDNameUnmanaged,
	Health: labels.IDNameHealth, Init: labels.IDNameInit, RemoteNode: labels.IDNameRemoteNode,
	KubeAPIServer: labels.IDNameKubeAPIServer, Ingress: labels.IDNameIngress,
	WorldIPv4: labels.IDNameWorldIPv4, WorldIPv6: labels.IDNameWorldIPv6,
}

// Identity is a numbered label set. CIDR identities also carry their prefix.
type Identity struct {
	ID     ID
	Labels labels.LabelArray
	Prefix netip.Prefix // valid for CIDR identities only
}

// IsReserved says whether id is one of Cilium's reserved identities.
func (id ID) IsReserved() bool { return id > 0 && id < FirstEndpoint }

// Reserved returns the reserved identities sextant can meet on a host.
func Reserved() []Identity {
	var out []Identity
	for _, id := range []ID{Host, World, WorldIPv4, WorldIPv6} {
		out = append(out, Identity{ID: id, Labels: labels.LabelArray{labels.NewLabel(reservedNames[id], "", labels.LabelSourceReserved)}})
	}
	return out
}

// WorldFor is the world identity of an address family, as a dual-stack
// Cilium numbers them.
func WorldFor(a netip.Addr) ID {
	if a.Unmap().Is4() {
		return WorldIPv4
	}
	return WorldIPv6
}

// Allocator numbers label sets and CIDRs. An identity keeps its number for
// the life of the allocator; a fresh allocator numbers the same label sets
// in the same order, so numbers survive an agent restart as long as the
// endpoints do.
type Allocator struct {
	byLabels map[string]ID
	byPrefix map[netip.Prefix]ID
	ids      map[ID]Identity
	next     ID
	nextCIDR ID
}

// NewAllocator returns an allocator holding the reserved identities.
func NewAllocator() *Allocator {
	a := &Allocator{byLabels: map[string]ID{}, byPrefix: map[netip.Prefix]ID{}, ids: map[ID]Identity{}, next: FirstEndpoint, nextCIDR: LocalScope | 1}
	for _, r := range Reserved() {
		a.ids[r.ID] = r
	}
	return a
}

// ForLabels returns the identity of a label set, numbering it if new.
func (a *Allocator) ForLabels(l labels.LabelArray) Identity {
	l = l.Sort()
	key := l.String()
	if id, ok := a.byLabels[key]; ok {
		return a.ids[id]
	}
	for id, r := range reservedNames {
		if len(l) == 1 && l[0].Source == labels.LabelSourceReserved && l[0].Key == r {
			return a.ids[id]
		}
	}
	id := a.next
	a.next++
	a.byLabels[key] = id
	a.ids[id] = Identity{ID: id, Labels: l}
	return a.ids[id]
}

// ForLabelSets numbers several label sets in a stable order (sorted by
// their string form), so that the same sets get the same numbers in a
// fresh allocator.
func (a *Allocator) ForLabelSets(sets []labels.LabelArray) []Identity {
	idx := make([]int, len(sets))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(i, j int) bool { return sets[idx[i]].Sort().String() < sets[idx[j]].Sort().String() })
	out := make([]Identity, len(sets))
	for _, i := range idx {
		out[i] = a.ForLabels(sets[i])
	}
	return out
}

// ForPrefix returns the CIDR identity of a prefix (labels cidr:<prefix>
// and the world label of its family, as Cilium's GetCIDRLabels). A /0
// prefix is the world identity of its family.
func (a *Allocator) ForPrefix(p netip.Prefix) Identity {
	p = p.Masked()
	if p.Bits() == 0 {
		return a.ids[WorldFor(p.Addr())]
	}
	if id, ok := a.byPrefix[p]; ok {
		return a.ids[id]
	}
	id := a.nextCIDR
	a.nextCIDR++
	l := labels.GetCIDRLabelArray(p)
	a.byPrefix[p] = id
	a.ids[id] = Identity{ID: id, Labels: l, Prefix: p}
	return a.ids[id]
}

// Lookup returns a numbered identity.
func (a *Allocator) Lookup(id ID) (Identity, bool) {
	i, ok := a.ids[id]
	return i, ok
}

// All returns every identity numbered so far, by number.
func (a *Allocator) All() []Identity {
	out := make([]Identity, 0, len(a.ids))
	for _, i := range a.ids {
		out = append(out, i)
	}
	slices.SortFunc(out, func(x, y Identity) int { return int(x.ID) - int(y.ID) })
	return out
}

// String shows an identity as Hubble does: number and labels.
func (i Identity) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d", i.ID)
	if len(i.Labels) > 0 {
		b.WriteString(" (")
		b.WriteString(strings.Join(i.Labels.GetModel(), ","))
		b.WriteString(")")
	}
	return b.String()
}
