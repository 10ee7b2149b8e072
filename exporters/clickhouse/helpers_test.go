package clickhouse

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/route"
	"github.com/sextant/sextant/testbed"
)

var (
	chdbOnce  sync.Once
	chdbShare *EmbeddedStore
	chdbErr   error
	chdbDir   string
)

// embedded returns the test process's embedded store (chDB allows one
// engine per process) with an empty flows table.
func embedded(tb testing.TB) *EmbeddedStore {
	tb.Helper()
	chdbOnce.Do(func() {
		lib := os.Getenv("CHDB_LIB_PATH")
		if lib == "" {
			lib = filepath.Join(DefaultChDBDir(), chdbLibRel)
		}
		if _, err := os.Stat(lib); err != nil {
			chdbErr = fmt.Errorf("libchdb.so not found (npm install --prefix %s %s, or set CHDB_LIB_PATH): %w", DefaultChDBDir(), ChDBPackage, err)
			return
		}
		chdbDir, chdbErr = os.MkdirTemp("", "sextant-chdb-test-")
		if chdbErr != nil {
			return
		}
		chdbShare, chdbErr = OpenEmbedded(context.Background(), EmbeddedConfig{Lib: lib, Dir: chdbDir, Retention: 30 * 24 * time.Hour,
			QueryLimits:    QueryLimits{MaxExecutionTime: 3 * time.Second, MaxMemoryUsage: 512 << 20, MaxResultBytes: 8 << 20},
			grantDatabases: []string{"migr_embedded"}})
	})
	if chdbErr != nil {
		testbed.Missing(tb, "chDB: %v", chdbErr)
	}
	if err := chdbShare.exec(context.Background(), "TRUNCATE TABLE sextant.flows"); err != nil {
		tb.Fatal(err)
	}
	return chdbShare
}

func TestMain(m *testing.M) {
	code := m.Run()
	if chdbShare != nil {
		chdbShare.Close()
	}
	if chdbDir != "" {
		os.RemoveAll(chdbDir)
	}
	os.Exit(code)
}

// testFlows makes n flows around t0 spread over services, routes with ids,
// statuses and gRPC methods; every 10th carries a traceparent.
func testFlows(n int, t0 time.Time) []*flow.Flow {
	out := make([]*flow.Flow, n)
	for i := range out {
		f := &flow.Flow{
			Time:          t0.Add(time.Duration(i) * time.Microsecond),
			Latency:       time.Duration(1+i%100) * time.Millisecond,
			TTFB:          time.Duration(1+i%50) * time.Millisecond,
			Node:          fmt.Sprintf("node-%d", i%3),
			Observer:      flow.Side(1 + i%2),
			Protocol:      "HTTP/2",
			Method:        "GET",
			Scheme:        "http",
			Authority:     fmt.Sprintf("svc-%d:8080", i%4),
			Path:          fmt.Sprintf("/users/%d/orders?page=%d", i%1000, i%7),
			Status:        []uint32{200, 200, 200, 404, 500}[i%5],
			RequestBytes:  uint64(i % 512),
			ResponseBytes: uint64(i % 4096),
			RequestHeaders: []flow.Header{
				{Name: "user-agent", Value: "test/1"},
				{Name: "x-request-id", Value: fmt.Sprintf("req-%d", i)},
			},
			ResponseHeaders: []flow.Header{{Name: "content-type", Value: "text/plain"}},
			Source:          netip.MustParseAddrPort(fmt.Sprintf("10.0.%d.%d:%d", i%7, 1+i%200, 30000+i%1000)),
			Destination:     netip.MustParseAddrPort(fmt.Sprintf("10.1.0.%d:8080", 1+i%4)),
			Process:         flow.Process{PID: uint32(100 + i%5), Comm: "server", Exe: "/usr/bin/server", ContainerID: "c0ffee", Cgroup: "/system.slice/x.service"},
			ConnID:          uint64(i / 10),
			StreamID:        uint32(1 + 2*(i%10)),
		}
		if i%10 == 0 {
			f.TraceParent = fmt.Sprintf("00-%032x-%016x-01", 1+i/10, 1+i)
		}
		if i%3 == 0 {
			st := uint32(i % 17)
			f.Path = "/helloworld.Greeter/SayHello"
			f.Method = "POST"
			f.Status = 200
			f.GRPC = &flow.GRPC{Service: "helloworld.Greeter", Method: "SayHello", Status: &st, StatusSource: "trailers", RequestMessages: 1, ResponseMessages: 1}
			if st != 0 {
				f.GRPC.Message = "failed \"quoted\"\n"
			}
		}
		out[i] = f
	}
	enrichRoutes(out)
	return out
}

// enrichRoutes sets flow.Route as the agent's route stage does.
func enrichRoutes(fs []*flow.Flow) {
	r, err := route.New(nil, 0)
	if err != nil {
		panic(err)
	}
	for _, f := range fs {
		r.Enrich(f)
	}
}
