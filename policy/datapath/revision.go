package datapath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// EndpointInfo is an endpoint as the programs see it.
type EndpointInfo struct {
	EpID           uint32
	Identity       uint32
	EnforceIngress bool
	EnforceEgress  bool
	Audit          bool
	// AnyRemoteIngress, AnyRemoteEgress: the direction's table has
	// entries for any remote identity (PolicyKey.Remote 0).
	AnyRemoteIngress bool
	AnyRemoteEgress  bool
}

// PolicyKey is one prefix of an endpoint's table: remote identity (0:
// any), protocol (0: any, every port) and the top PortBits bits of Port.
type PolicyKey struct {
	EpID     uint32
	Remote   uint32
	Dir      uint8
	Proto    uint8
	Port     uint16
	PortBits uint8
}

// PolicyValue is what a prefix decides.
type PolicyValue struct {
	Deny      bool
	MatchType uint8
	Cookie    uint32
}

// Revision is everything the programs need for one policy revision.
type Revision struct {
	Number          uint64
	AuditAll        bool
	HostNetns       uint64
	CgroupEndpoints map[uint64]EndpointInfo // by cgroup id
	NetnsEndpoints  map[uint64]EndpointInfo // by netns cookie
	Policy          map[PolicyKey]PolicyValue
	IPCache         map[netip.Prefix]uint32
}

type slotMaps struct {
	epsCg, epsNs, pol, ipc *ebpf.Map
	polExact, ipcExact     *ebpf.Map // the full-length entries (policy.c)
}

func (d *Datapath) slot(i uint32) slotMaps {
	m := &d.objs.policyMaps
	if i == 0 {
		return slotMaps{m.EpsCgA, m.EpsNsA, m.PolA, m.IpcA, m.PolExactA, m.IpcExactA}
	}
	return slotMaps{m.EpsCgB, m.EpsNsB, m.PolB, m.IpcB, m.PolExactB, m.IpcExactB}
}

func (d *Datapath) config() (policyPolicyConfig, error) {
	var c policyPolicyConfig
	if err := d.objs.Config.Lookup(uint32(0), &c); err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	return c, nil
}

// Active returns the revision the programs enforce now (0: none yet).
func (d *Datapath) Active() (uint64, error) {
	c, err := d.config()
	if err != nil {
		return 0, err
	}
	return c.Revision[c.Active&1], nil
}

// Prefix lengths of a key that fixes every bit (policy.c's lookups): an
// endpoint, identity, direction, protocol and port; an address.
const (
	fullPolKey = 96
	fullIPCKey = 128
)

// Apply writes a revision into the slot the programs do not use, then
// flips the active slot with one map write: a program sees the old
// revision or the new one, never a mix. On error the old one stays.
func (d *Datapath) Apply(rev *Revision) error {
	c, err := d.config()
	if err != nil {
		return err
	}
	next := (c.Active & 1) ^ 1
	s := d.slot(next)
	for _, m := range []*ebpf.Map{s.epsCg, s.epsNs, s.pol, s.ipc, s.polExact, s.ipcExact} {
		if err := clearMap(m); err != nil {
			return err
		}
	}
	put := func(m *ebpf.Map, k, v any) error {
		if err := m.Put(k, v); err != nil {
			return fmt.Errorf("revision %d: write %s: %w", rev.Number, m, err)
		}
		return nil
	}
	for id, e := range rev.CgroupEndpoints {
		if err := put(s.epsCg, id, epInfo(e)); err != nil {
			return err
		}
	}
	for cookie, e := range rev.NetnsEndpoints {
		if err := put(s.epsNs, cookie, epInfo(e)); err != nil {
			return err
		}
	}
	for k, v := range rev.Policy {
		pk := policyPolKey{Prefixlen: 72, EpId: k.EpID, Remote: k.Remote, Dir: k.Dir}
		if k.Proto != 0 {
			pk.Proto = k.Proto
			pk.Prefixlen = 80 + uint32(k.PortBits)
			// dport is big-endian in the key: prefixes are matched from its top bit.
			pk.Dport = binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, k.Port))
		}
		pv := policyPolVal{MatchType: v.MatchType, Cookie: v.Cookie}
		if v.Deny {
			pv.Deny = 1
		}
		m := s.pol
		if pk.Prefixlen == fullPolKey {
			m = s.polExact
		}
		if err := put(m, pk, pv); err != nil {
			return err
		}
	}
	for p, id := range rev.IPCache {
		k := policyIpcKey{Prefixlen: uint32(p.Bits())}
		a := p.Addr()
		if a.Is4() {
			k.Prefixlen += 96
		}
		k.Addr = a.As16()
		m := s.ipc
		if k.Prefixlen == fullIPCKey {
			m = s.ipcExact
		}
		if err := put(m, k, id); err != nil {
			return err
		}
	}
	c.Revision[next] = rev.Number
	c.HostNetns = rev.HostNetns
	c.AuditAll = 0
	if rev.AuditAll {
		c.AuditAll = 1
	}
	if err := d.objs.Config.Put(uint32(0), c); err != nil {
		return fmt.Errorf("revision %d: write config: %w", rev.Number, err)
	}
	c.Active = next
	if err := d.objs.Config.Put(uint32(0), c); err != nil {
		return fmt.Errorf("revision %d: switch to slot %d: %w", rev.Number, next, err)
	}
	return nil
}

func epInfo(e EndpointInfo) policyEpInfo {
	v := policyEpInfo{EpId: e.EpID, Identity: e.Identity}
	if e.EnforceIngress {
		v.Flags |= uint32(policyEpFlagsEP_ENFORCE_INGRESS)
	}
	if e.EnforceEgress {
		v.Flags |= uint32(policyEpFlagsEP_ENFORCE_EGRESS)
	}
	if e.Audit {
		v.Flags |= uint32(policyEpFlagsEP_AUDIT)
	}
	if e.AnyRemoteIngress {
		v.Flags |= uint32(policyEpFlagsEP_ANY_REMOTE_INGRESS)
	}
	if e.AnyRemoteEgress {
		v.Flags |= uint32(policyEpFlagsEP_ANY_REMOTE_EGRESS)
	}
	return v
}

// clearMap deletes every key (the map is not in use by the programs).
func clearMap(m *ebpf.Map) error {
	var keys [][]byte
	key := make([]byte, m.KeySize())
	it := m.Iterate()
	val := make([]byte, m.ValueSize())
	for it.Next(&key, &val) {
		keys = append(keys, append([]byte(nil), key...))
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate %s: %w", m, err)
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clear %s: %w", m, err)
		}
	}
	return nil
}

// Record is one verdict record from the kernel.
type Record struct {
	Time           time.Time
	CgroupID       uint64
	SockCookie     uint64
	Revision       uint64
	PID            uint32
	EpID           uint32
	Identity       uint32
	RemoteIdentity uint32
	Cookie         uint32
	Count          uint32 // decisions this record stands for
	Local, Remote  netip.AddrPort
	Proto          uint8
	Dir            uint8 // 0 ingress, 1 egress
	Verdict        uint8 // 0 forwarded, 1 dropped, 2 audit
	Reason         uint8 // 0 none, 1 default deny, 2 deny rule
	MatchType      uint8
	Hook           Hook
}

// Hook is where a decision was taken.
type Hook uint8

const (
	HookConnect    = Hook(policyHookHOOK_CONNECT)
	HookSendmsg    = Hook(policyHookHOOK_SENDMSG)
	HookCgroupSKB  = Hook(policyHookHOOK_CGROUP_SKB)
	HookTCXIngress = Hook(policyHookHOOK_TCX_INGRESS)
	HookTCXEgress  = Hook(policyHookHOOK_TCX_EGRESS)
)

func (h Hook) String() string {
	switch h {
	case HookConnect:
		return "connect"
	case HookSendmsg:
		return "sendmsg"
	case HookCgroupSKB:
		return "cgroup_skb"
	case HookTCXIngress:
		return "tcx_ingress"
	case HookTCXEgress:
		return "tcx_egress"
	}
	return fmt.Sprintf("hook_%d", uint8(h))
}

// Reader reads verdict records.
type Reader struct {
	rd       *ringbuf.Reader
	monoToRT int64

	mu      sync.Mutex
	waiters []chan struct{} // Drain calls waiting for Run to empty the ring
}

// NewReader opens the verdict ring buffer. Only one agent should read it.
func (d *Datapath) NewReader() (*Reader, error) {
	rd, err := ringbuf.NewReader(d.objs.Verdicts)
	if err != nil {
		return nil, fmt.Errorf("open ring buffer verdicts: %w", err)
	}
	var mono, real unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		rd.Close()
		return nil, err
	}
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &real); err != nil {
		rd.Close()
		return nil, err
	}
	return &Reader{rd: rd, monoToRT: real.Nano() - mono.Nano()}, nil
}

// pollInterval: the programs never wake the reader (a wakeup per
// verdict halved the connection rate of a 2-core host: 20k → 11k
// connections/s); the reader drains the ring this often. 4 MiB of ring
// holds ~100 ms of 128-byte verdicts at 300k decisions/s.
const pollInterval = 50 * time.Millisecond

// maxBatch bounds the records Run hands over at once (a full ring holds
// ≈ 37,000 of 112 bytes): the first of them need not wait for the last.
const maxBatch = 1024

// Run hands the records to sink, in batches of one pass over the ring
// (at most maxBatch records; sink must not keep the slice), until ctx is
// done or the reader is closed. A pass waits pollInterval, reads what
// the ring holds and ends at the first empty read; its deadline is set
// once: set per record, its clock read and the poller's lock cost
// ≈ 0.25 µs per connection (two records) under BenchmarkConnect (perf
// cpu-clock, blocks with the policy on against blocks without). A batch
// lets the engine take its locks once per pass.
func (r *Reader) Run(ctx context.Context, sink func([]Record)) error {
	var rec ringbuf.Record
	batch := make([]Record, 0, maxBatch)
	flush := func() {
		if len(batch) > 0 {
			sink(batch)
			batch = batch[:0]
		}
	}
	defer flush()
	var released []chan struct{} // Drain calls the current pass reads for
	for pass := false; ctx.Err() == nil; {
		if !pass {
			deadline := time.Now().Add(pollInterval)
			if len(released) > 0 {
				deadline = time.Now() // a pass that only empties the ring
			}
			r.rd.SetDeadline(deadline)
			pass = true
		}
		err := r.rd.ReadInto(&rec)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ringbuf.ErrFlushed):
			// The ring was empty a moment ago: the Drain calls taken
			// before this pass have their records, once sink has them.
			// Those that came since get one more pass (the read that
			// woke Run may have found the ring empty before they came).
			flush()
			for _, w := range released {
				close(w)
			}
			r.mu.Lock()
			released, r.waiters = r.waiters, nil
			r.mu.Unlock()
			pass = false
			continue
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		case err != nil:
			return fmt.Errorf("read ring buffer verdicts: %w", err)
		}
		if out, ok := r.decode(rec.RawSample); ok {
			if batch = append(batch, out); len(batch) == maxBatch {
				flush()
			}
		}
	}
	return nil
}

// Drain waits until Run has handed sink every record committed before
// the call, or until timeout (false). The ring is otherwise read every
// pollInterval: a caller that needs a decision the kernel took a moment
// ago (the verdict of a connection whose first exchange it sees) asks
// for it instead of guessing.
func (r *Reader) Drain(timeout time.Duration) bool {
	done := make(chan struct{})
	r.mu.Lock()
	r.waiters = append(r.waiters, done)
	r.mu.Unlock()
	if err := r.rd.Flush(); err != nil {
		return false
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// Close stops Run.
func (r *Reader) Close() error { return r.rd.Close() }

// decode reads a record in place: policyVerdictRec has the C layout
// (structs.HostLayout, explicit padding), so a length check and a cast do
// what binary.Decode did by reflection at ≈40 % of the reader's CPU time
// (perf, BenchmarkDecision).
func (r *Reader) decode(b []byte) (Record, bool) {
	if len(b) < int(unsafe.Sizeof(policyVerdictRec{})) {
		return Record{}, false
	}
	v := (*policyVerdictRec)(unsafe.Pointer(&b[0]))
	return Record{
		Time:           time.Unix(0, int64(v.TsNs)+r.monoToRT),
		CgroupID:       v.CgroupId,
		SockCookie:     v.SockCookie,
		Revision:       v.Revision,
		PID:            v.Pid,
		EpID:           v.EpId,
		Identity:       v.Identity,
		RemoteIdentity: v.RemoteIdentity,
		Cookie:         v.Cookie,
		Count:          v.Count,
		Local:          netip.AddrPortFrom(netip.AddrFrom16(v.LocalAddr).Unmap(), v.LocalPort),
		Remote:         netip.AddrPortFrom(netip.AddrFrom16(v.RemoteAddr).Unmap(), v.RemotePort),
		Proto:          v.Proto,
		Dir:            v.Dir,
		Verdict:        v.Verdict,
		Reason:         v.Reason,
		MatchType:      v.MatchType,
		Hook:           Hook(v.Hook),
	}, true
}

// Stats are counters of the loaded programs.
type Stats struct {
	RingBufferFull uint64 // verdict records lost
	FlowsFull      uint64 // flows that could not be recorded
	Programs       []ProgramStats
}

// ProgramStats is one program's run time (with Options.KernelStats).
type ProgramStats struct {
	Name      string
	RunTimeNs uint64
	RunCount  uint64
}

// Stats reads the counters and the programs' run-time statistics.
func (d *Datapath) Stats() Stats {
	var s Stats
	s.RingBufferFull = d.counter(policyCounterCNT_RINGBUF_FULL)
	s.FlowsFull = d.counter(policyCounterCNT_FLOWS_FULL)
	p := &d.objs.policyPrograms
	for _, np := range []struct {
		name string
		prog *ebpf.Program
	}{
		{"connect4", p.SextantConnect4}, {"connect6", p.SextantConnect6},
		{"sendmsg4", p.SextantSendmsg4}, {"sendmsg6", p.SextantSendmsg6},
		{"post_bind4", p.SextantPostBind4}, {"post_bind6", p.SextantPostBind6},
		{"sock_release", p.SextantSockRelease},
		{"skb_ingress", p.SextantSkbIngress}, {"skb_egress", p.SextantSkbEgress},
	} {
		if np.prog == nil {
			continue
		}
		ps := ProgramStats{Name: np.name}
		if st, err := np.prog.Stats(); err == nil {
			ps.RunTimeNs, ps.RunCount = uint64(st.Runtime), st.RunCount
		}
		s.Programs = append(s.Programs, ps)
	}
	// TCX programs run as one instance per netns endpoint: summed.
	in, eg := ProgramStats{Name: "tcx_ingress"}, ProgramStats{Name: "tcx_egress"}
	for _, t := range d.tcx {
		for _, x := range []struct {
			ps   *ProgramStats
			prog *ebpf.Program
		}{{&in, t.Ingress}, {&eg, t.Egress}} {
			if st, err := x.prog.Stats(); err == nil {
				x.ps.RunTimeNs += uint64(st.Runtime)
				x.ps.RunCount += st.RunCount
			}
		}
	}
	s.Programs = append(s.Programs, in, eg)
	return s
}

// ClientIdentity is the identity the kernel learnt for a flow's client
// (recorded when the client endpoint sent its first packet), 0 when it
// knows none.
func (d *Datapath) ClientIdentity(client netip.AddrPort, serverPort uint16, proto uint8) uint32 {
	k := policyFlowKey{Client: v4mapped(client.Addr()), ClientPort: client.Port(), ServerPort: serverPort, Proto: proto}
	var v policyFlowVal
	if err := d.objs.Flows.Lookup(k, &v); err != nil {
		return 0
	}
	return v.ClientIdentity
}

// RingBufferFull is the number of verdict records lost to a full ring.
// Unlike Stats, it touches no attachment state: safe beside Attach.
func (d *Datapath) RingBufferFull() uint64 { return d.counter(policyCounterCNT_RINGBUF_FULL) }

// counter sums a per-CPU counter.
func (d *Datapath) counter(i policyCounter) uint64 {
	var per []uint64
	if err := d.objs.Counters.Lookup(uint32(i), &per); err != nil {
		return 0
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n
}

// ServerIdentity is the identity of the local endpoint bound to addr:port
// in the network namespace netns (exact address, then wildcard), 0 when none.
func (d *Datapath) ServerIdentity(netns uint64, addr netip.Addr, port uint16, proto uint8) uint32 {
	for _, a := range []netip.Addr{addr, netip.IPv6Unspecified(), netip.AddrFrom4([4]byte{})} {
		k := policyListenKey{Netns: netns, Addr: v4mapped(a), Port: port, Proto: proto}
		var v policyListenVal
		if err := d.objs.Listeners.Lookup(k, &v); err == nil {
			return v.Identity
		}
	}
	return 0
}

// v4mapped is the 16-byte form the programs use (IPv4 as ::ffff:a.b.c.d).
func v4mapped(a netip.Addr) [16]byte {
	return a.Unmap().As16() // As16 of an IPv4 address is its v4-mapped form
}
