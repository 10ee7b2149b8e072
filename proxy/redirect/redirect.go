// Package redirect loads the connect-time redirect (bpf/redirect.c):
// TCP connects from a cgroup to chosen destinations go to the node proxy
// instead, and the proxy learns each connection's original destination
// with getsockopt(SOL_IP, SO_ORIGINAL_DST) — answered by the program, as
// netfilter would answer it — or with OriginalDst.
package redirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Options of Load.
type Options struct {
	// Cgroup is the cgroup v2 directory whose processes are redirected
	// (and where the proxy's getsockopt is answered: the proxy must be in
	// it too, or in a cgroup below it).
	Cgroup string
	// SkipMark: sockets with this SO_MARK (the proxy's upstream side) are
	// never redirected. 0 = none (then the proxy must not run in Cgroup,
	// or it would loop back to itself).
	SkipMark uint32
}

// Redirect is the loaded, attached programs.
type Redirect struct {
	objs  redirectObjects
	links []link.Link
}

// Load checks what the kernel offers, loads the programs and attaches
// them to the cgroup. Nothing is redirected until Set names destinations.
func Load(opt Options) (_ *Redirect, err error) {
	if st, err := os.Stat(opt.Cgroup); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("redirect: cgroup %q: not a directory", opt.Cgroup)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("redirect: remove memlock limit: %w", err)
	}
	for _, pt := range []ebpf.ProgramType{ebpf.CGroupSockAddr, ebpf.SockOps, ebpf.CGroupSockopt} {
		if err := features.HaveProgramType(pt); err != nil {
			return nil, fmt.Errorf("redirect: kernel lacks %s programs: %w", pt, err)
		}
	}
	spec, err := loadRedirect()
	if err != nil {
		return nil, fmt.Errorf("redirect: %w", err)
	}
	if err := spec.Variables["skip_mark"].Set(opt.SkipMark); err != nil {
		return nil, fmt.Errorf("redirect: skip_mark: %w", err)
	}
	r := &Redirect{}
	if err := spec.LoadAndAssign(&r.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("redirect: load: %+v", ve)
		}
		return nil, fmt.Errorf("redirect: load: %w", err)
	}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	for _, a := range []struct {
		name string
		typ  ebpf.AttachType
		prog *ebpf.Program
	}{
		{"connect4", ebpf.AttachCGroupInet4Connect, r.objs.RedirectConnect4},
		{"connect6", ebpf.AttachCGroupInet6Connect, r.objs.RedirectConnect6},
		{"sockops", ebpf.AttachCGroupSockOps, r.objs.RedirectSockops},
		{"getsockopt", ebpf.AttachCGroupGetsockopt, r.objs.RedirectGetsockopt},
	} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: opt.Cgroup, Attach: a.typ, Program: a.prog})
		if err != nil {
			return nil, fmt.Errorf("redirect: attach %s to %s: %w", a.name, opt.Cgroup, err)
		}
		r.links = append(r.links, l)
	}
	return r, nil
}

// Close detaches the programs: connects are no longer redirected.
func (r *Redirect) Close() error {
	var errs []error
	for _, l := range r.links {
		errs = append(errs, l.Close())
	}
	errs = append(errs, r.objs.Close())
	return errors.Join(errs...)
}

func toAddr(a netip.AddrPort) redirectAddr {
	var out redirectAddr
	b := a.Addr().As16() // IPv4 as ::ffff:a.b.c.d
	for i := range 4 {
		out.Ip6[i] = binary.NativeEndian.Uint32(b[4*i:]) // the bytes as the kernel has them
	}
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], a.Port())
	out.Port = binary.NativeEndian.Uint16(p[:])
	return out
}

func fromAddr(a redirectAddr) netip.AddrPort {
	var b [16]byte
	for i := range 4 {
		binary.NativeEndian.PutUint32(b[4*i:], a.Ip6[i])
	}
	var p [2]byte
	binary.NativeEndian.PutUint16(p[:], a.Port)
	return netip.AddrPortFrom(netip.AddrFrom16(b).Unmap(), binary.BigEndian.Uint16(p[:]))
}

// Set makes connects to each destination go to its proxy listener
// instead, and stops redirecting destinations no longer named.
func (r *Redirect) Set(routes map[netip.AddrPort]netip.AddrPort) error {
	want := map[redirectAddr]redirectAddr{}
	for dst, proxy := range routes {
		want[toAddr(dst)] = toAddr(proxy)
	}
	var k, v redirectAddr
	var stale []redirectAddr
	it := r.objs.Services.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("redirect: read services: %w", err)
	}
	for _, s := range stale {
		if err := r.objs.Services.Delete(&s); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("redirect: remove %s: %w", fromAddr(s), err)
		}
	}
	for dst, proxy := range want {
		if err := r.objs.Services.Put(&dst, &proxy); err != nil {
			return fmt.Errorf("redirect: %s → %s: %w", fromAddr(dst), fromAddr(proxy), err)
		}
	}
	return nil
}

// OriginalDst is the destination the client at addr (the proxy's peer)
// connected to, from the program's map.
func (r *Redirect) OriginalDst(client netip.AddrPort) (netip.AddrPort, bool) {
	var v redirectAddr
	k := toAddr(client)
	if err := r.objs.ByClient.Lookup(&k, &v); err != nil {
		return netip.AddrPort{}, false
	}
	return fromAddr(v), true
}

// Stats count what the programs did.
type Stats struct {
	Redirected uint64 // connects sent to the proxy
	Answered   uint64 // SO_ORIGINAL_DST answers
}

func (r *Redirect) Stats() (Stats, error) {
	var st Stats
	for i, dst := range []*uint64{&st.Redirected, &st.Answered} {
		var per []uint64
		if err := r.objs.Counters.Lookup(uint32(i), &per); err != nil {
			return st, fmt.Errorf("redirect: counters: %w", err)
		}
		for _, n := range per {
			*dst += n
		}
	}
	return st, nil
}

// SockoptOriginalDst asks the kernel for an accepted connection's
// original destination (getsockopt SOL_IP SO_ORIGINAL_DST): answered by
// the redirect's getsockopt program for redirected connections.
func SockoptOriginalDst(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination: %T has no socket", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var sa unix.RawSockaddrInet4
	var serr error
	if err := raw.Control(func(fd uintptr) {
		n := uint32(unsafe.Sizeof(sa))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&n)), 0)
		if e != 0 {
			serr = e
		}
	}); err != nil {
		return netip.AddrPort{}, err
	}
	if serr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of %s: %w", c.RemoteAddr(), serr)
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), nil
}
