package probes

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/sextant/sextant/testbed"
)

// Two instances side by side, one scoped to a cgroup the test makes: the
// scoped one tracks and counts only the traffic of processes in it (curl
// and nghttpd, both ends), none of this process's, whose traffic fills a
// small ring and breaks a frame: drops the unscoped instance counts, and
// the scoped one does not.
func TestCgroupScope(t *testing.T) {
	forEachCapture(t, testCgroupScope)
}

func testCgroupScope(t *testing.T, capture Capture) {
	testbed.RequireRoot(t)
	curl, nghttpd := needTool(t, "curl"), needTool(t, "nghttpd")
	cg := testbed.NewCgroup(t, "probes-scope-"+capture.String())
	var st syscall.Stat_t
	if err := syscall.Stat(cg.Dir, &st); err != nil {
		t.Fatal(err)
	}
	cgroupID := st.Ino

	// Small rings, nobody reading while the traffic runs: what is lost
	// outside the scope must show in the unscoped instance only.
	const ring = 16 << 10
	scoped, err := Load(Options{TraceSelf: true, Capture: capture, RingBufferBytes: ring, Cgroup: cg.Dir})
	if err != nil {
		t.Fatal(err)
	}
	defer scoped.Close()
	all, err := Load(Options{TraceSelf: true, Capture: capture, RingBufferBytes: ring})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()

	// Inside: nghttpd and curl, both in the cgroup from their first
	// instruction.
	dir := t.TempDir()
	doc := bytes.Repeat([]byte{'d'}, 1000)
	if err := os.WriteFile(filepath.Join(dir, "doc"), doc, 0o644); err != nil {
		t.Fatal(err)
	}
	inside := startNghttpdWith(t, cg.Command, nghttpd, dir)
	for range 2 {
		out, err := cg.Command(curl, "-sS", "--http2-prior-knowledge", "http://"+inside+"/doc").Output()
		if err != nil || !bytes.Equal(out, doc) {
			t.Fatalf("curl in the cgroup: %v (%d bytes)", err, len(out))
		}
	}

	// Outside: this process floods the rings and sends a frame that stops
	// its direction.
	outside := h2cServer(t)
	doRequests(t, h2cClient(), outside, 200, "flood")
	bad := badFrameConn(t)

	evs := map[*Probes][]*Event{scoped: readAll(t, scoped), all: readAll(t, all)}
	// Connections to addr: clients (curl) and servers (nghttpd; also the
	// readiness probe's, which nghttpd greets with SETTINGS).
	conns := func(p *Probes, addr string) (clients, servers int) {
		ap := netip.MustParseAddrPort(addr)
		for _, ev := range evs[p] {
			switch {
			case ev.Kind != KindConn:
			case ev.Conn.Remote == ap:
				clients++
			case ev.Conn.Local == ap:
				servers++
			}
		}
		return clients, servers
	}

	// The scoped instance: the inside connections (2 curl runs, each end),
	// nothing else, and no drop.
	if c, s := conns(scoped, inside); c != 2 || s < 2 {
		t.Errorf("scoped: %d curl and %d nghttpd connections in the cgroup, want 2 and at least 2", c, s)
	}
	for _, ev := range evs[scoped] {
		if ev.Kind == KindConn && ev.Conn.CgroupID != cgroupID {
			t.Errorf("scoped: connection of pid %d (%s) in cgroup %d, outside the scope %d",
				ev.PID, ev.Conn.Comm, ev.Conn.CgroupID, cgroupID)
		}
	}
	sst, ast := scoped.Stats(), all.Stats()
	for r, d := range sst.Drops {
		if d != 0 {
			t.Errorf("scoped: drops[%s] = %d from traffic outside its scope", DropReason(r), d)
		}
	}
	if sst.Chunks == 0 || sst.Chunks >= ast.Chunks {
		t.Errorf("scoped walked %d chunks, unscoped %d", sst.Chunks, ast.Chunks)
	}

	// The unscoped instance counted the drops outside. (Whether the inside
	// connections are in its ring depends on the rest of the host: under a
	// parallel test suite, other processes fill its 16 KiB first.)
	if ast.Drops[DropRingBufFull] == 0 || ast.Drops[DropParseStopped] == 0 {
		t.Errorf("unscoped: drops %v: the outside traffic should have filled the ring and stopped a direction", ast.Drops)
	}
	if c, s := conns(scoped, bad); c+s != 0 {
		t.Errorf("scoped: the outside connection with a bad frame was tracked")
	}
	t.Logf("chunks scoped %d unscoped %d; unscoped drops %v", sst.Chunks, ast.Chunks, ast.Drops)
}

// badFrameConn writes the client preface, then a frame that cannot be
// valid, to a sink; returns the sink's address.
func badFrameConn(t *testing.T) string {
	t.Helper()
	ln := sink(t)
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var b bytes.Buffer
	b.WriteString(http2.ClientPreface)
	http2.NewFramer(&b, nil).WriteSettings()
	conn.Write(b.Bytes())
	conn.Write([]byte{0, 0, 7, byte(http2.FramePing), 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7}) // PING must be 8 bytes long
	return ln.Addr().String()
}

// readAll reads what p queued until nothing more comes.
func readAll(t *testing.T, p *Probes) []*Event {
	t.Helper()
	var mu sync.Mutex
	var evs []*Event
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, func(ev *Event) { mu.Lock(); evs = append(evs, ev); mu.Unlock() }) }()
	for n := -1; ; {
		time.Sleep(4 * pollInterval)
		mu.Lock()
		now := len(evs)
		mu.Unlock()
		if now == n {
			break
		}
		n = now
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return evs
}

// Options.Cgroup names a cgroup v2 directory or id; anything else is a
// clear error at Load.
func TestCgroupScopeInvalid(t *testing.T) {
	testbed.RequireRoot(t)
	for _, tc := range []struct{ name, cgroup, want string }{
		{"relative", "sextant/x", "absolute path"},
		{"not cgroup2", t.TempDir(), "not a cgroup v2 directory"},
		{"missing", "/sys/fs/cgroup/sextant-no-such-cgroup", "no such file"},
		{"unknown id", "18446744073709551615", "no such cgroup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Load(Options{Cgroup: tc.cgroup})
			if err == nil {
				p.Close()
				t.Fatalf("Load with cgroup %q: no error", tc.cgroup)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load with cgroup %q: %v, want %q in it", tc.cgroup, err, tc.want)
			}
		})
	}
}

// A cgroup id names the same directory.
func TestCgroupScopeByID(t *testing.T) {
	cg := testbed.NewCgroup(t, "probes-scope-id")
	var st syscall.Stat_t
	if err := syscall.Stat(cg.Dir, &st); err != nil {
		t.Fatal(err)
	}
	f, err := openScope(strconv.FormatUint(st.Ino, 10))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Name() != cg.Dir {
		t.Errorf("cgroup id %d opened %s, want %s", st.Ino, f.Name(), cg.Dir)
	}
}
