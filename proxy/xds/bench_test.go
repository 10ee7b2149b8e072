package xds_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sextant/sextant/proxy/config"
	pxds "github.com/sextant/sextant/proxy/xds"
	"github.com/sextant/sextant/proxy/xdstest"
)

// BenchmarkConfigChangeApplied: from Apply to the first call, started
// after Apply began, that a real grpc-go client sends by the new route.
// Reports p50 and p99 over b.N changes, each moving all traffic to the
// other of two backends: "weights" flips a 100/0 split to 0/100 (both
// clusters stay referenced: a canary shift), "cluster" replaces the
// route's only backend (the client subscribes to the new cluster, its
// endpoints, and connects).
func BenchmarkConfigChangeApplied(b *testing.B) {
	b.Run("weights", func(b *testing.B) {
		benchChange(b, func(to, other string) string {
			return "  - backendRefs: [{name: " + to + ", weight: 100}, {name: " + other + ", weight: 0}]\n"
		})
	})
	b.Run("cluster", func(b *testing.B) {
		benchChange(b, func(to, _ string) string { return "  - backendRefs: [{name: " + to + "}]\n" })
	})
}

func benchChange(b *testing.B, rule func(to, other string) string) {
	cp := xdstest.StartControlPlane(b, pxds.Options{})
	x, y := xdstest.StartBackend(b, "bench-x", nil), xdstest.StartBackend(b, "bench-y", nil)
	route := func(to string) *config.Set {
		other := map[string]string{"bench-x": "bench-y", "bench-y": "bench-x"}[to]
		s, err := config.Parse(map[string][]byte{"bench.yaml": []byte(backendsDoc(x, y) + `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: bench}
spec:
  hostnames: [bench.test]
  rules:
` + rule(to, other))})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	sets := map[string]*config.Set{"bench-x": route("bench-x"), "bench-y": route("bench-y")}
	if _, err := cp.Server.Apply(sets["bench-x"]); err != nil {
		b.Fatal(err)
	}
	cc := cp.Dial(b, "client-bench", "bench.test")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := call(ctx, cc); err != nil {
		b.Fatal(err)
	}
	// A caller loop: each call's start time and who answered.
	type answer struct {
		start time.Time
		done  time.Time
		who   string
	}
	answers := make(chan answer, 1024)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			start := time.Now()
			who, err := call(ctx, cc)
			if err != nil {
				continue
			}
			select {
			case answers <- answer{start, time.Now(), who}:
			case <-ctx.Done():
				return
			}
		}
	}()
	var lat []time.Duration
	to := "bench-y"
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := cp.Server.Apply(sets[to]); err != nil {
			b.Fatal(err)
		}
		for a := range answers {
			if a.start.After(t0) && a.who == to {
				lat = append(lat, a.done.Sub(t0))
				break
			}
		}
		if to == "bench-y" {
			to = "bench-x"
		} else {
			to = "bench-y"
		}
	}
	b.StopTimer()
	cancel()
	wg.Wait()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// manyRoutes is n GRPCRoutes (each its own hostname, a 90/10 split over
// two of 50 backends, a header match) and their backends.
func manyRoutes(n int) map[string][]byte {
	var s strings.Builder
	for i := range 50 {
		fmt.Fprintf(&s, "apiVersion: proxy.sextant.io/v1alpha1\nkind: Backend\nmetadata: {name: be-%d}\nspec:\n  endpoints: [{address: 10.0.%d.1, port: 8080}, {address: 10.0.%d.2, port: 8080}]\n---\n", i, i, i)
	}
	for i := range n {
		fmt.Fprintf(&s, `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: r-%d}
spec:
  hostnames: [svc-%d.test]
  rules:
  - matches: [{headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: be-%d}]
  - backendRefs: [{name: be-%d, weight: 90}, {name: be-%d, weight: 10}]
---
`, i, i, i%50, i%50, (i+1)%50)
	}
	return map[string][]byte{"routes.yaml": []byte(s.String())}
}

// BenchmarkSnapshotBuild1000Routes: translation for both profiles,
// validation of every resource and the snapshots (what Apply does).
func BenchmarkSnapshotBuild1000Routes(b *testing.B) {
	set, err := config.Parse(manyRoutes(1000))
	if err != nil {
		b.Fatal(err)
	}
	s := pxds.NewServer(pxds.Options{}, slog.New(slog.DiscardHandler))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Apply(set); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParse1000Routes: strict decoding and validation of the files.
func BenchmarkParse1000Routes(b *testing.B) {
	files := manyRoutes(1000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := config.Parse(files); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMemory1000Routes reports the heap a server keeps for 1,000
// routes (inputs, both profiles' snapshots) after a GC.
func BenchmarkMemory1000Routes(b *testing.B) {
	files := manyRoutes(1000)
	var retained uint64
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		set, err := config.Parse(files)
		if err != nil {
			b.Fatal(err)
		}
		s := pxds.NewServer(pxds.Options{}, slog.New(slog.DiscardHandler))
		if _, err := s.Apply(set); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		retained = after.HeapAlloc - before.HeapAlloc
		runtime.KeepAlive(s)
	}
	b.ReportMetric(float64(retained)/(1<<20), "MiB-retained")
}
