package probes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

const (
	// 16 MiB rides out the ~0.1 s a reader starved by a saturated host
	// may lose: 8 MiB dropped records at h2load saturation (~90 MB/s of
	// records), 16 MiB did not.
	defaultRingBufferBytes = 16 << 20
	// The kernel wakes the reader only once this much is queued; below it
	// the reader polls every pollInterval. Waking per record costs more
	// than the record itself (ENVIRONMENT.md: waking every event loses events).
	defaultWakeupBytes = 256 << 10
	pollInterval       = 25 * time.Millisecond
	// maxPollInterval: an idle host's reader backs off to this, so that an
	// idle agent does not wake 40 times a second for nothing; the first
	// records after a quiet spell wait at most this long.
	maxPollInterval = 200 * time.Millisecond
)

// attachPoints are the programs of each capture, in attach order; each
// runs on the BTF-typed tracepoint its section names (no tracefs needed).
//
// Socket capture: the end of a socket first, so that no connection seen
// sending or receiving misses its end; then the send and receive hooks.
//
// Syscall capture: every syscall exit (one program: the kernel verifies
// the walkers once), every syscall entry (dispatched on the syscall number
// in the program) and process exit, which ends the connections a process
// never close()d. The exit program goes first: a syscall that entered with
// only sys_enter attached would stay armed until its thread's next syscall
// exit, of whatever syscall.
var attachPoints = map[Capture][]string{
	CaptureSocket:  {sextantProgSockDestroy, sextantProgSockSend, sextantProgSockRecv},
	CaptureSyscall: {sextantProgSysExit, sextantProgSysEnter, sextantProgProcessExit},
}

// Options configure Load.
type Options struct {
	// ExcludePIDs are tgids that are never traced.
	ExcludePIDs []uint32
	// RingBufferBytes is the size of the kernel→user ring buffer, rounded
	// up to a power of two. Default 16 MiB.
	RingBufferBytes int
	// TraceSelf traces the process that calls Load too. Off by default so
	// the agent never observes its own API traffic; tests turn it on to
	// observe peers they run in-process.
	TraceSelf bool
	// KernelStats enables BPF run-time statistics (BPF_ENABLE_STATS) while
	// the probes are loaded, so Stats reports per-program run time.
	KernelStats bool
	// Capture selects the hooks (default CaptureAuto: socket capture where
	// the kernel has it).
	Capture Capture
	// Cgroup, when set, limits the capture to tasks in this cgroup v2
	// subtree: its directory (e.g. /sys/fs/cgroup/sextant/node1) or its id
	// (the directory's inode number, as in ConnInfo.CgroupID). The kernel
	// programs return at once for every other task, before touching any
	// state or counter: their connections are never tracked, their drops
	// never counted.
	Cgroup string
}

// Stats are counters of the loaded probes.
type Stats struct {
	Drops     [DropMax]uint64 // summed over CPUs, index = DropReason
	Records   uint64          // records read from the ring buffer
	Events    uint64          // events decoded from them (a chunk record carries several)
	Invalid   uint64          // records user space could not decode (a bug if ever non-zero)
	Chunks    uint64          // reads/writes of HTTP connections the kernel walked
	UserReads uint64          // bpf_probe_read_user calls the walkers made for them
	Programs  []ProgramStats  // per program; run time only with Options.KernelStats
}

// ProgramStats describe one kernel program.
type ProgramStats struct {
	Name         string
	Instructions uint32 // instructions the verifier processed at load
	RunTimeNs    uint64
	RunCount     uint64
}

// DropReason indexes Stats.Drops (enum drop_reason in events.h).
type DropReason int

const (
	DropRingBufFull  DropReason = DropReason(sextantDropReasonDROP_RINGBUF_FULL)
	DropConnTable    DropReason = DropReason(sextantDropReasonDROP_CONN_TABLE)
	DropIOV          DropReason = DropReason(sextantDropReasonDROP_IOV)
	DropFrames       DropReason = DropReason(sextantDropReasonDROP_FRAMES)
	DropStreamTable  DropReason = DropReason(sextantDropReasonDROP_STREAM_TABLE)
	DropParseStopped DropReason = DropReason(sextantDropReasonDROP_PARSE_STOP)
	DropUnseen       DropReason = DropReason(sextantDropReasonDROP_UNSEEN)
	DropMax                     = int(sextantDropReasonDROP_MAX)
)

func (r DropReason) String() string {
	switch r {
	case DropRingBufFull:
		return "ringbuf_full"
	case DropConnTable:
		return "conn_table"
	case DropIOV:
		return "iov_segments"
	case DropFrames:
		return "frames_per_chunk"
	case DropStreamTable:
		return "stream_table"
	case DropParseStopped:
		return "parse_stopped"
	case DropUnseen:
		return "unseen_bytes"
	}
	return fmt.Sprintf("drop_%d", int(r))
}

// LosesTraffic says whether drops of this reason lose traffic: a full ring
// buffer, a full connection or stream table, bytes that held frame or
// message boundaries moved where the probes cannot read them. A direction whose parsing
// stopped (bad frames, too many frames or iovec segments in one call) is
// not such a loss: its EV_PARSE_ERR reaches user space, which reports the
// exchanges concerned as incomplete; a host with malformed traffic must
// not look like one that loses records.
func (r DropReason) LosesTraffic() bool {
	return r == DropRingBufFull || r == DropConnTable || r == DropStreamTable || r == DropUnseen
}

// Lost sums the drops that lose traffic (DropReason.LosesTraffic).
func (s Stats) Lost() uint64 {
	var n uint64
	for r, d := range s.Drops {
		if DropReason(r).LosesTraffic() {
			n += d
		}
	}
	return n
}

// Probes are loaded and attached kernel programs.
type Probes struct {
	capture  Capture
	coll     *ebpf.Collection
	links    []link.Link
	reader   *ringbuf.Reader
	stats    io.Closer // BPF_ENABLE_STATS, nil unless Options.KernelStats
	progs    []string  // sorted program names
	insns    map[string]uint32
	monoToRT int64 // add to bpf_ktime_get_ns() to get Unix ns
	loadTime time.Duration

	records atomic.Uint64
	events  atomic.Uint64
	invalid atomic.Uint64
}

// Load checks that the kernel has what the capture needs, loads its
// programs, fills the exclusion table and attaches every program to its
// tracepoint. Nothing runs in the background: records queue in the ring
// buffer until Run reads them.
func Load(opts Options) (_ *Probes, err error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit: %w", err)
	}
	capture, err := chooseCapture(opts.Capture, opts.Cgroup != "")
	if err != nil {
		return nil, err
	}
	var scope *os.File
	if opts.Cgroup != "" {
		if scope, err = openScope(opts.Cgroup); err != nil {
			return nil, err
		}
		defer scope.Close() // the map holds the cgroup once filled
	}
	spec, err := loadSextant()
	if err != nil {
		return nil, err
	}
	keepOnly(spec, attachPoints[capture])
	size := opts.RingBufferBytes
	if size <= 0 {
		size = defaultRingBufferBytes
	}
	size = ringSize(size)
	spec.Maps[sextantMapEvents].MaxEntries = uint32(size)
	// Both powers of two: the kernel side wakes once per 2^shift bytes.
	wake := min(defaultWakeupBytes, size/4)
	if err := spec.Variables[sextantVarWakeupShift].Set(uint32(bits.TrailingZeros(uint(wake)))); err != nil {
		return nil, fmt.Errorf("set %s: %w", sextantVarWakeupShift, err)
	}
	if scope != nil {
		if err := spec.Variables[sextantVarScopeOn].Set(uint32(1)); err != nil {
			return nil, fmt.Errorf("set %s: %w", sextantVarScopeOn, err)
		}
	}

	p := &Probes{capture: capture, insns: map[string]uint32{}}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if opts.KernelStats {
		p.stats, err = ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
		if err != nil {
			return nil, fmt.Errorf("enable bpf stats: %w", err)
		}
	}

	start := time.Now()
	p.coll, err = ebpf.NewCollection(spec)
	if err != nil {
		return nil, fmt.Errorf("load sextant: %w", verifierTail(err))
	}
	p.loadTime = time.Since(start)

	if scope != nil {
		if err := p.coll.Maps[sextantMapScope].Put(uint32(0), uint32(scope.Fd())); err != nil {
			return nil, fmt.Errorf("scope to cgroup %s: %w", scope.Name(), err)
		}
	}
	excluded := p.coll.Maps[sextantMapExcluded]
	pids := opts.ExcludePIDs
	if !opts.TraceSelf {
		pids = append(pids[:len(pids):len(pids)], uint32(os.Getpid()))
	}
	for _, pid := range pids {
		if err := excluded.Put(pid, uint8(1)); err != nil {
			return nil, fmt.Errorf("exclude pid %d: %w", pid, err)
		}
	}

	for name := range p.coll.Programs {
		p.progs = append(p.progs, name)
		if info, err := p.coll.Programs[name].Info(); err == nil {
			if n, ok := info.VerifiedInstructions(); ok {
				p.insns[name] = n
			}
		}
	}
	sort.Strings(p.progs)
	for _, name := range attachPoints[capture] {
		prog := p.coll.Programs[name]
		if prog == nil {
			return nil, fmt.Errorf("attach %s: program not in object", name)
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		if err != nil {
			return nil, fmt.Errorf("attach %s to its tracepoint: %w", name, err)
		}
		p.links = append(p.links, l)
	}

	p.reader, err = ringbuf.NewReader(p.coll.Maps[sextantMapEvents])
	if err != nil {
		return nil, fmt.Errorf("open ring buffer %s: %w", sextantMapEvents, err)
	}
	p.monoToRT, err = monoToRealtime()
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Capture is the capture path in use.
func (p *Probes) Capture() Capture { return p.capture }

// LoadTime is how long loading (verification included) took.
func (p *Probes) LoadTime() time.Duration { return p.loadTime }

// Run reads records until ctx is done and hands each one to sink. The
// sink owns the Event. Run returns nil when ctx is done.
func (p *Probes) Run(ctx context.Context, sink func(*Event)) error {
	rd := p.reader // Close sets p.reader to nil and makes ReadInto return ErrClosed
	if rd == nil {
		return fmt.Errorf("read ring buffer %s: %w", sextantMapEvents, ringbuf.ErrClosed)
	}
	var rec ringbuf.Record
	poll, read := pollInterval, false
	rd.SetDeadline(time.Now().Add(poll))
	for ctx.Err() == nil {
		err := rd.ReadInto(&rec)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			// Everything queued without a wakeup has been read.
			if read {
				poll = pollInterval
			} else {
				poll = min(2*poll, maxPollInterval)
			}
			read = false
			rd.SetDeadline(time.Now().Add(poll))
			continue
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		case err != nil:
			return fmt.Errorf("read ring buffer %s: %w", sextantMapEvents, err)
		}
		p.records.Add(1)
		read = true
		n, err := decode(rec.RawSample, p.monoToRT, p.capture == CaptureSocket, sink)
		p.events.Add(uint64(n))
		if err != nil {
			p.invalid.Add(1)
		}
	}
	return nil
}

// Stats returns the drop counters, record counts and program statistics.
func (p *Probes) Stats() Stats {
	s := Stats{Records: p.records.Load(), Events: p.events.Load(), Invalid: p.invalid.Load()}
	if p.coll == nil {
		return s
	}
	if drops := p.coll.Maps[sextantMapDrops]; drops != nil {
		sum := func(i int) (n uint64) {
			var perCPU []uint64
			if err := drops.Lookup(uint32(i), &perCPU); err == nil {
				for _, v := range perCPU {
					n += v
				}
			}
			return n
		}
		for i := range DropMax {
			s.Drops[i] = sum(i)
		}
		s.UserReads = sum(int(sextantStatCounterSTAT_USER_READS))
		s.Chunks = sum(int(sextantStatCounterSTAT_CHUNKS))
	}
	for _, name := range p.progs {
		ps := ProgramStats{Name: name, Instructions: p.insns[name]}
		if st, err := p.coll.Programs[name].Stats(); err == nil {
			ps.RunTimeNs = uint64(st.Runtime)
			ps.RunCount = st.RunCount
		}
		s.Programs = append(s.Programs, ps)
	}
	return s
}

// Close detaches and unloads everything. Safe to call more than once.
func (p *Probes) Close() error {
	// A tracepoint detach may wait for an RCU grace period (~40 ms):
	// detaching concurrently costs one wait, not one per link.
	linkErrs := make([]error, len(p.links))
	var wg sync.WaitGroup
	for i, l := range p.links {
		wg.Go(func() {
			if err := l.Close(); err != nil {
				linkErrs[i] = fmt.Errorf("detach: %w", err)
			}
		})
	}
	wg.Wait()
	errs := slices.DeleteFunc(linkErrs, func(err error) bool { return err == nil })
	p.links = nil
	if p.reader != nil {
		if err := p.reader.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close ring buffer reader: %w", err))
		}
		p.reader = nil
	}
	if p.coll != nil {
		p.coll.Close()
		p.coll = nil
	}
	if p.stats != nil {
		if err := p.stats.Close(); err != nil {
			errs = append(errs, fmt.Errorf("disable bpf stats: %w", err))
		}
		p.stats = nil
	}
	return errors.Join(errs...)
}

// keepOnly removes from spec the programs a capture does not attach and
// the maps no remaining program uses, so that neither is verified nor
// created (a kernel may lack the other path's map types).
func keepOnly(spec *ebpf.CollectionSpec, progs []string) {
	used := map[string]bool{}
	for name, ps := range spec.Programs {
		if !slices.Contains(progs, name) {
			delete(spec.Programs, name)
			continue
		}
		for _, ins := range ps.Instructions {
			if ref := ins.Reference(); ref != "" {
				used[ref] = true
			}
		}
	}
	for name := range spec.Maps {
		if !used[name] && !strings.HasPrefix(name, ".") {
			delete(spec.Maps, name)
		}
	}
}

// verifierTail keeps the end of a verifier log, where the reason is.
func verifierTail(err error) error {
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		return err
	}
	lines := ve.Log
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return fmt.Errorf("%w\nverifier log (tail):\n%s", err, strings.Join(lines, "\n"))
}

// ringSize rounds n up to a power of two of at least one page.
func ringSize(n int) int {
	size := os.Getpagesize()
	for size < n {
		size <<= 1
	}
	return size
}

// monoToRealtime returns the offset from CLOCK_MONOTONIC (bpf_ktime_get_ns)
// to the Unix epoch, measured once.
func monoToRealtime() (int64, error) {
	var mono, real unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		return 0, fmt.Errorf("read CLOCK_MONOTONIC: %w", err)
	}
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &real); err != nil {
		return 0, fmt.Errorf("read CLOCK_REALTIME: %w", err)
	}
	return real.Nano() - mono.Nano(), nil
}
