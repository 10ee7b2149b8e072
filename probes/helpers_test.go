package probes

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sextant/sextant/testbed"
)

// recorder loads the probes (tracing this very process too, whose peers
// the tests run) and keeps every record; tests pick their connections by
// address.
type recorder struct {
	p      *Probes
	cancel context.CancelFunc
	done   chan error

	mu     sync.Mutex
	events []*Event
	stats  Stats // at stop
}

func startRecorder(t *testing.T, capture Capture) *recorder {
	t.Helper()
	testbed.RequireRoot(t)
	p, err := Load(Options{TraceSelf: true, Capture: capture})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{p: p, cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- p.Run(ctx, func(ev *Event) {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		})
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop waits for records in flight (the reader polls every pollInterval),
// then stops reading and unloads.
func (r *recorder) stop(t *testing.T) []*Event {
	t.Helper()
	if r.p == nil {
		return r.snapshot()
	}
	time.Sleep(4 * pollInterval)
	r.cancel()
	if err := <-r.done; err != nil {
		t.Errorf("Run: %v", err)
	}
	st := r.p.Stats()
	r.stats = st
	for i, d := range st.Drops {
		if d != 0 {
			t.Logf("drops[%s] = %d", DropReason(i), d)
		}
	}
	if st.Invalid != 0 {
		t.Errorf("%d records could not be decoded", st.Invalid)
	}
	if err := r.p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	r.p = nil
	return r.snapshot()
}

// needTool finds an external peer; missing tools fail in CI.
func needTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	testbed.Missing(t, "%s not installed", name)
	return ""
}

func (r *recorder) snapshot() []*Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Event(nil), r.events...)
}

// connKey names one direction of one traced connection.
type connKey struct {
	conn uint64
	dir  Direction
}

// frame is an HTTP/2 frame rebuilt from records; header blocks are decoded.
type frame struct {
	typ      http2.FrameType
	flags    http2.Flags
	stream   uint32
	length   uint32
	grpcMsgs uint32
	value    uint32
	value2   uint32
	fields   []hpack.HeaderField // HEADERS (with its CONTINUATIONs)
	static   uint8               // HEADERS: the kernel's static-table hint
	settings []byte
}

// h2Dir rebuilds the frames of one connection direction the way user
// space is meant to: header block pieces in order, one HPACK decoder.
type h2Dir struct {
	dec         *hpack.Decoder
	frames      []frame
	block       []byte // header block being assembled
	pending     *frame // HEADERS waiting for END_HEADERS
	piece       []byte // payload of the current HEADERS/CONTINUATION frame
	firstStatic uint8
	nextSeq     uint32
	errs        []string
	// hpackErrs: a decoder that joined midstream misses dynamic table
	// entries; tests of such connections ignore these.
	hpackErrs []string
}

func newH2Dir() *h2Dir {
	return &h2Dir{dec: hpack.NewDecoder(65536, nil)}
}

func (d *h2Dir) add(ev *Event) {
	if ev.Seq != d.nextSeq {
		d.errs = append(d.errs, fmt.Sprintf("seq gap: want %d got %d", d.nextSeq, ev.Seq))
	}
	d.nextSeq = ev.Seq + 1
	switch ev.Kind {
	case KindParseError:
		d.errs = append(d.errs, fmt.Sprintf("parse error %d header %x", ev.Reason, ev.FrameHeader))
		return
	case KindH2Frame:
	default:
		return
	}
	switch ev.FrameType {
	case http2.FrameHeaders, http2.FrameContinuation:
		if ev.Offset != uint32(len(d.piece)) {
			d.errs = append(d.errs, fmt.Sprintf("piece offset %d, have %d", ev.Offset, len(d.piece)))
		}
		if ev.Offset == 0 {
			d.firstStatic = ev.StaticIndex
		}
		d.piece = append(d.piece, ev.Data...)
		if uint32(len(d.piece)) < ev.FrameLen {
			return
		}
		payload := d.piece
		d.piece = nil
		if ev.FrameType == http2.FrameHeaders {
			if ev.Flags.Has(http2.FlagHeadersPadded) {
				pad := int(payload[0])
				payload = payload[1 : len(payload)-pad]
			}
			if ev.Flags.Has(http2.FlagHeadersPriority) {
				payload = payload[5:]
			}
			d.pending = &frame{typ: ev.FrameType, flags: ev.Flags, stream: ev.StreamID, length: ev.FrameLen, static: d.firstStatic}
			d.block = nil
		}
		d.block = append(d.block, payload...)
		if ev.Flags.Has(http2.FlagHeadersEndHeaders) && d.pending != nil {
			fields, err := d.dec.DecodeFull(d.block)
			if err != nil {
				d.hpackErrs = append(d.hpackErrs, fmt.Sprintf("hpack: %v", err))
			}
			d.pending.fields = fields
			d.frames = append(d.frames, *d.pending)
			d.pending = nil
		}
	default:
		d.frames = append(d.frames, frame{
			typ: ev.FrameType, flags: ev.Flags, stream: ev.StreamID, length: ev.FrameLen,
			grpcMsgs: ev.GRPCMessages, value: ev.Value, value2: ev.Value2, settings: ev.Data,
		})
	}
}

// byConn groups records per connection direction and remembers EV_CONN
// (and its pid), EV_CLOSE and EV_PROC_EXIT.
type byConn struct {
	conns map[uint64]*ConnInfo
	pids  map[uint64]uint32
	dirs  map[connKey]*h2Dir
	h1    map[connKey][]*Event
	close map[uint64]int
	exits map[uint32]int
}

func group(evs []*Event) *byConn {
	g := &byConn{conns: map[uint64]*ConnInfo{}, pids: map[uint64]uint32{}, dirs: map[connKey]*h2Dir{},
		h1: map[connKey][]*Event{}, close: map[uint64]int{}, exits: map[uint32]int{}}
	for _, ev := range evs {
		k := connKey{ev.ConnID, ev.Dir}
		switch ev.Kind {
		case KindConn:
			g.conns[ev.ConnID] = ev.Conn
			g.pids[ev.ConnID] = ev.PID
		case KindClose:
			g.close[ev.ConnID]++
		case KindProcExit:
			g.exits[ev.PID]++
		case KindH1Data:
			g.h1[k] = append(g.h1[k], ev)
		default:
			d := g.dirs[k]
			if d == nil {
				d = newH2Dir()
				g.dirs[k] = d
			}
			d.add(ev)
		}
	}
	return g
}

func field(fs []hpack.HeaderField, name string) string {
	for _, f := range fs {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// captures are the capture paths the tests run on: both on a kernel that
// has socket capture, the fallback alone on one that has not.
func captures(t testing.TB) []Capture {
	t.Helper()
	if c, err := chooseCapture(CaptureAuto, false); err == nil && c == CaptureSyscall {
		return []Capture{CaptureSyscall}
	}
	return []Capture{CaptureSocket, CaptureSyscall}
}

// forEachCapture runs f as a subtest per capture path.
func forEachCapture(t *testing.T, f func(t *testing.T, capture Capture)) {
	for _, c := range captures(t) {
		t.Run(c.String(), func(t *testing.T) { f(t, c) })
	}
}

// startNghttpd serves dir over h2c on a free port until the test ends and
// returns its address once it accepts connections.
func startNghttpd(tb testing.TB, nghttpd, dir string) string {
	tb.Helper()
	return startNghttpdWith(tb, exec.Command, nghttpd, dir)
}

// startNghttpdWith is startNghttpd with the command built by command
// (testbed.Cgroup.Command starts it inside a cgroup).
func startNghttpdWith(tb testing.TB, command func(string, ...string) *exec.Cmd, nghttpd, dir string) string {
	tb.Helper()
	port := testbed.FreePort(tb)
	srv := command(nghttpd, "--no-tls", "-a", "127.0.0.1", "-d", dir, fmt.Sprint(port))
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		if i > 500 {
			tb.Fatal("nghttpd did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// getAll GETs each url with client and checks the body is want.
func getAll(tb testing.TB, client *http.Client, want []byte, urls ...string) {
	tb.Helper()
	for _, u := range urls {
		resp, err := client.Get(u)
		if err != nil {
			tb.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(body, want) {
			tb.Fatalf("GET %s: body of %d bytes, want %d", u, len(body), len(want))
		}
	}
}
