package e2e

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sextant/sextant/collector/flow"
	"github.com/sextant/sextant/probes"
)

var dbgMu sync.Mutex
var dbgEvents = map[uint64][]string{}

func dbgRecord(ev *probes.Event) {
	dbgMu.Lock()
	defer dbgMu.Unlock()
	var s string
	switch ev.Kind {
	case probes.KindConn:
		s = fmt.Sprintf("%d CONN pid=%d dir=%v %v", ev.Mono, ev.PID, ev.Dir, ev.Conn.Proto)
	default:
		s = fmt.Sprintf("%d %v pid=%d tid=%d seq=%d dir=%v ft=%v fl=%v sid=%d len=%d off=%d v=%d data=%d reason=%d t=%s", ev.Mono, ev.Kind, ev.PID, ev.TID, ev.Seq, ev.Dir, ev.FrameType, ev.Flags, ev.StreamID, ev.FrameLen, ev.Offset, ev.Value, len(ev.Data), ev.Reason, ev.Time.Format("05.000000"))
	}
	dbgEvents[ev.ConnID] = append(dbgEvents[ev.ConnID], s)
}

func TestZZDebugCurl(t *testing.T) {
	pl := startPipeline(t)
	dbgHook = dbgRecord
	srv := startPeer(t, "h2c-server", nil)
	addr, port := serverAddr(t, srv)
	for range 40 {
		runTool(t, "curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "http://"+addr+"/s/200/70000/x")
	}
	got := pl.await(workload(nil, []uint16{port}), 80)
	t.Logf("%d flows", len(got))
	for _, f := range got {
		if f.Outcome != flow.OutcomeComplete {
			t.Logf("BAD %s", describe(f))
			dbgMu.Lock()
			for _, e := range dbgEvents[f.ConnID] {
				t.Log("   ", e)
			}
			dbgMu.Unlock()
		}
	}
	_ = time.Second
}
