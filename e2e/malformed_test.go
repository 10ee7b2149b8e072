package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/sextant/sextant/flow"
)

// frame builds one HTTP/2 frame by hand: the point is to write frames that
// golang.org/x/net/http2's Framer refuses to write.
func frame(length int, typ http2.FrameType, flags http2.Flags, stream uint32, payload []byte) []byte {
	var b [9]byte
	b[0], b[1], b[2] = byte(length>>16), byte(length>>8), byte(length)
	b[3], b[4] = byte(typ), byte(flags)
	binary.BigEndian.PutUint32(b[5:], stream&0x7fffffff)
	return append(b[:], payload...)
}

// h2Start is a client preface followed by an empty SETTINGS frame: what a
// real client sends first, so the probes recognise the connection as
// HTTP/2 from byte 0.
func h2Start() []byte {
	return append([]byte(http2.ClientPreface), frame(0, http2.FrameSettings, 0, 0, nil)...)
}

type malformedCase struct {
	name   string
	chunks [][]byte
}

func malformedCases() []malformedCase {
	rng := rand.New(rand.NewPCG(7, 7))
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	validHPACK := []byte{0x82, 0x86, 0x84} // :method GET, :scheme http, :path /

	var flood bytes.Buffer
	flood.Write(frame(len(validHPACK), http2.FrameHeaders, http2.FlagHeadersEndStream, 1, validHPACK))
	cont := bytes.Repeat([]byte{0x86}, 8) // more ":scheme http" fields, forever
	// 40000 × 8 bytes: a header block beyond the collector's 256 KiB
	// default MaxHeaderBlock.
	for range 40000 {
		flood.Write(frame(len(cont), http2.FrameContinuation, 0, 1, cont)) // never END_HEADERS
	}
	var floodChunks [][]byte
	for b := flood.Bytes(); len(b) > 0; {
		n := min(len(b), 32<<10)
		floodChunks = append(floodChunks, b[:n])
		b = b[n:]
	}

	endAll := http2.FlagHeadersEndHeaders | http2.FlagHeadersEndStream
	badIndex := append(bytes.Clone(validHPACK), 0xff, 0x80, 0x01)   // indexed field 255: no such entry
	badHuffman := append(bytes.Clone(validHPACK), 0x44, 0x81, 0xff) // :path literal, Huffman with 8 bits of padding
	return []malformedCase{
		{"garbage", [][]byte{garbage[:16<<10], garbage[16<<10:]}},
		{"oversized frame header", [][]byte{h2Start(), frame(0xffffff, http2.FrameHeaders, endAll, 1, bytes.Repeat([]byte{0x82}, 100))}},
		{"truncated frame", [][]byte{h2Start(), frame(100, http2.FrameHeaders, endAll, 1, validHPACK)}},
		{"bad HPACK index", [][]byte{h2Start(), frame(len(badIndex), http2.FrameHeaders, endAll, 1, badIndex)}},
		{"index zero", [][]byte{h2Start(), frame(1, http2.FrameHeaders, endAll, 1, []byte{0x80})}},
		{"bad Huffman", [][]byte{h2Start(), frame(len(badHuffman), http2.FrameHeaders, endAll, 1, badHuffman)}},
		{"CONTINUATION flood", append([][]byte{h2Start()}, floodChunks...)},
	}
}

// Test 8: malformed input on raw TCP connections. The pipeline must keep
// running, must not invent flows (a flow for a bad stream must name what it
// could not decode and carry nothing that was not sent), must count the
// errors, and must still see a normal request afterwards exactly.
func TestMalformedInput(t *testing.T) {
	pl := startPipeline(t)
	before := pl.collectorStats()

	sink := startPeer(t, "raw-sink", nil)
	sinkAddr, sinkPort := serverAddr(t, sink)
	var senders []uint32
	caseOf := map[uint32]string{}
	dir := t.TempDir()
	prev := before
	for _, c := range malformedCases() {
		args := rawSendArgs{Addr: sinkAddr}
		for i, chunk := range c.chunks {
			file := filepath.Join(dir, fmt.Sprintf("%s-%d", strings.ReplaceAll(c.name, " ", "-"), i))
			if err := os.WriteFile(file, chunk, 0o644); err != nil {
				t.Fatal(err)
			}
			args.Files = append(args.Files, file)
		}
		s := startPeer(t, "raw-send", args)
		s.expect("SENT", time.Minute)
		s.waitExit(30 * time.Second)
		sink.expect("CONNDONE", time.Minute) // the sink read it all: both sides were seen
		senders = append(senders, s.pid())
		caseOf[s.pid()] = c.name
		// Diagnostics only: which counters this case moved.
		time.Sleep(500 * time.Millisecond)
		now := pl.collectorStats()
		n := 0
		for _, b := range c.chunks {
			n += len(b)
		}
		t.Logf("sent %s (%d bytes): collector %s", c.name, n, statsDelta(prev, now))
		prev = now
	}

	// A normal exchange afterwards: exactly one correct flow per side.
	srv := startPeer(t, "h2c-server", nil)
	addr, port := serverAddr(t, srv)
	spec := reqSpec{Method: "GET", Path: "/s/200/64/after-malformed"}
	cli := startPeer(t, "http-client", clientArgs{Addr: addr, H2C: true, Reqs: []reqSpec{spec}})
	var res clientResult
	cli.expectJSON(&res, time.Minute)
	cli.waitExit(30 * time.Second)
	checkClientResults(t, []reqSpec{spec}, res, 1)
	wants := wantHTTP("HTTP/2", "http", addr, port, spec).both(cli.pid(), srv.pid())
	got := pl.await(workload([]uint32{cli.pid(), srv.pid()}, []uint16{port}), len(wants))
	pl.assertFlows(got, wants, noUnknown)

	// The bad streams: no flow, or a flow that admits what it does not know
	// and carries nothing the bytes did not say.
	for _, f := range pl.matching(workload(append(senders, sink.pid()), []uint16{sinkPort})) {
		ok := len(f.Unknown) > 0 && f.Status == 0 && f.RequestBytes == 0 && f.ResponseBytes == 0 &&
			(f.Method == "" || f.Method == "GET") && (f.Path == "" || f.Path == "/") && f.Authority == "" && f.GRPC == nil
		// Which case: the client side carries the sender's pid, the server
		// side the sender's port.
		name := caseOf[f.Process.PID]
		for _, other := range pl.matching(func(o *flow.Flow) bool { return o.Source == f.Source && o.Observer == flow.SideClient }) {
			name = caseOf[other.Process.PID]
		}
		if !ok {
			t.Errorf("%s: flow is not marked unknown or carries values never sent: %s", name, describe(f))
		} else {
			t.Logf("%s: flow (acceptable: marked unknown, nothing invented): %s", name, describe(f))
		}
	}

	after := pl.collectorStats()
	t.Logf("collector stats before: %+v", before)
	t.Logf("collector stats after:  %+v", after)
	if decodeErrors(after) <= decodeErrors(before) {
		t.Errorf("collector Stats counted no error for the malformed input: ParseErrors %d→%d, HTTP2.Errors %v→%v",
			before.ParseErrors, after.ParseErrors, before.HTTP2.Errors, after.HTTP2.Errors)
	}
	if st := pl.probes.Stats(); st.Events == 0 {
		t.Errorf("probes Stats: 0 events read")
	}
	pl.requireRunning()
}
