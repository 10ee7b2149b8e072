package clickhouse

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sextant/sextant/testbed"
)

// cpuTime is the CPU time (user + system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchExport pushes b.N flows through an exporter into store and reports
// flows per second of wall time and per CPU-second of this process (the
// exporter's cost per core; the server's own CPU is not in it).
func benchExport(b *testing.B, store Store, count func() int64) {
	const batch = 50000
	pool := testFlows(100000, time.Now())
	e, err := New(Config{BatchSize: batch, QueueBatches: b.N/batch + 2}, store)
	if err != nil {
		b.Fatal(err)
	}
	before := count()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, t0 := cpuTime(), time.Now()
	for i := 0; i < b.N; i++ {
		e.Export(pool[i%len(pool)])
	}
	if err := e.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	wall, cpu := time.Since(t0), cpuTime()-cpu0
	b.StopTimer()
	if st := e.Stats(); st.Written != uint64(b.N) || st.Dropped != 0 {
		b.Fatalf("stats %+v", st)
	}
	if got := count() - before; got != int64(b.N) {
		b.Fatalf("%d rows in the table, want %d", got, b.N)
	}
	b.ReportMetric(float64(b.N)/wall.Seconds(), "flows/s")
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "flows/cpu-s")
}

// Export into the ClickHouse 18.16 server over the native protocol.
// go test -run - -bench ExportLegacyServer -benchtime 1000000x -cpu 1
func BenchmarkExportLegacyServer(b *testing.B) {
	srv := testbed.StartClickHouse(b)
	store, err := OpenNative(NativeConfig{Addr: srv.Addr()})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	if err := store.Ready(context.Background()); err != nil {
		b.Fatal(err)
	}
	benchExport(b, store, func() int64 {
		n, _ := strconv.ParseInt(srv.SQL(b, "SELECT count() FROM sextant.flows"), 10, 64)
		return n
	})
}

// Export into the embedded chDB engine (in this process: its CPU counts).
// go test -run - -bench ExportEmbedded -benchtime 500000x
func BenchmarkExportEmbedded(b *testing.B) {
	s := embedded(b)
	benchExport(b, s, func() int64 {
		n, _ := queryInt(context.Background(), s, "SELECT toString(count()) FROM sextant.flows")
		return n
	})
}

// Flow visible to SQL: flows are exported at 10k/s, each stamped with the
// time it was exported; a reader polls max(time) every 10 ms. The lag
// now − max(time) is how old the newest visible flow is.
// go test -run - -bench VisibleLatency -benchtime 1x
func BenchmarkVisibleLatency(b *testing.B) {
	b.Run("legacy-server", func(b *testing.B) {
		srv := testbed.StartClickHouse(b)
		store, err := OpenNative(NativeConfig{Addr: srv.Addr()})
		if err != nil {
			b.Fatal(err)
		}
		defer store.Close()
		if err := store.Ready(context.Background()); err != nil {
			b.Fatal(err)
		}
		benchVisible(b, store)
	})
	b.Run("embedded", func(b *testing.B) {
		benchVisible(b, embedded(b))
	})
}

func benchVisible(b *testing.B, store Store) {
	const rate, run = 10000, 5 * time.Second
	for range b.N {
		e, err := New(Config{}, store) // default batching: 20000 flows or 1 s
		if err != nil {
			b.Fatal(err)
		}
		pool := testFlows(1000, time.Now())
		stop := make(chan struct{})
		go func() {
			start := time.Now()
			for i := 0; ; i++ {
				due := start.Add(time.Duration(i) * time.Second / rate)
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
				select {
				case <-stop:
					return
				default:
				}
				f := *pool[i%len(pool)]
				f.Time = time.Now()
				e.Export(&f)
			}
		}()
		var lags []time.Duration
		begin := time.Now()
		time.Sleep(1500 * time.Millisecond) // the first batch
		for time.Since(begin) < run {
			res, err := store.Query(context.Background(), newestNanos(store), 0)
			if err != nil {
				b.Fatal(err)
			}
			ns, _ := strconv.ParseInt(fmt.Sprint(res.Rows[0][0]), 10, 64)
			lags = append(lags, time.Since(time.Unix(0, ns)))
			time.Sleep(10 * time.Millisecond)
		}
		close(stop)
		e.Close(context.Background())
		sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
		b.ReportMetric(lags[len(lags)/2].Seconds(), "p50-lag-s")
		b.ReportMetric(lags[len(lags)*99/100].Seconds(), "p99-lag-s")
		b.ReportMetric(lags[len(lags)-1].Seconds(), "max-lag-s")
		if st := e.Stats(); st.Dropped != 0 {
			b.Fatalf("dropped %d", st.Dropped)
		}
	}
}

// newestNanos selects the time of the newest row in Unix nanoseconds.
func newestNanos(s Store) string {
	if s.Dialect() == Legacy {
		return "SELECT toString(toUInt64(toUnixTimestamp(time)) * 1000000000 + time_ns) FROM flows WHERE time > now() - INTERVAL 10 SECOND ORDER BY time DESC, time_ns DESC LIMIT 1"
	}
	return "SELECT toString(toUnixTimestamp64Nano(max(time))) FROM flows"
}
