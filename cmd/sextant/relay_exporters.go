package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/sextant/sextant/exporters"
	"github.com/sextant/sextant/exporters/clickhouse"
	"github.com/sextant/sextant/exporters/otel"
	"github.com/sextant/sextant/relay"
)

// defaultQueryListen serves `sextant query` on loopback.
const defaultQueryListen = "127.0.0.1:4246"

// relayExporters are the exporters the relay feeds: flow history in
// ClickHouse (a server, or the embedded engine when none is named) and
// OpenTelemetry.
type relayExporters struct {
	clickhouseAddr string
	embedded       bool
	dataDir        string
	queryListen    string
	retention      time.Duration
	otlp           otel.Config
}

func (x *relayExporters) flags(f *pflag.FlagSet) {
	f.StringVar(&x.clickhouseAddr, "clickhouse-addr", "", "ClickHouse server (native protocol, host:9000) for flow history; without it the embedded engine (chDB) is used")
	f.BoolVar(&x.embedded, "embedded-store", true, "keep flow history in the embedded ClickHouse engine when no --clickhouse-addr is given (fetches chDB once, ~570 MB)")
	f.StringVar(&x.dataDir, "data-dir", "/var/lib/sextant", "where the embedded store and the ClickHouse spool live")
	f.DurationVar(&x.retention, "retention", 7*24*time.Hour, "how long flow history is kept (TTL; modern ClickHouse and the embedded store)")
	f.StringVar(&x.queryListen, "query-listen", defaultQueryListen, "serve SQL queries over the flow history here, for 'sextant query' ('' for none; loopback only)")
	f.StringVar(&x.otlp.Endpoint, "otlp-endpoint", "", "send spans and metrics over OTLP to this collector (host:port); off when empty")
	f.StringVar(&x.otlp.Protocol, "otlp-protocol", otel.ProtocolGRPC, "OTLP protocol: grpc or http")
	f.BoolVar(&x.otlp.Insecure, "otlp-insecure", false, "OTLP without TLS")
}

// start opens what is configured and subscribes it to r; stop flushes and
// closes everything once r has stopped.
func (x *relayExporters) start(ctx context.Context, r *relay.Relay, log *slog.Logger) (func(), error) {
	var (
		exps    exporters.Fanout
		closers []func() error
		admin   *http.Server
	)
	closeAll := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if admin != nil {
			admin.Shutdown(ctx)
		}
		if err := exps.Close(ctx); err != nil {
			log.Warn("close exporters", "err", err)
		}
		for _, c := range closers {
			if err := c(); err != nil {
				log.Warn("close flow store", "err", err)
			}
		}
	}
	fail := func(err error) (func(), error) { closeAll(); return nil, err }

	store, err := x.openStore(ctx)
	if err != nil {
		return fail(err)
	}
	if store != nil {
		closers = append(closers, store.Close)
		exp, err := clickhouse.New(clickhouse.Config{
			SpoolDir: filepath.Join(x.dataDir, "spool"), Log: log,
		}, store)
		if err != nil {
			return fail(fmt.Errorf("flow history exporter: %w", err))
		}
		exps = append(exps, exp)
		if x.queryListen != "" {
			if admin, err = serveQueries(x.queryListen, store, log); err != nil {
				return fail(err)
			}
		}
	}
	if x.otlp.Endpoint != "" {
		x.otlp.Traces, x.otlp.Metrics = true, true
		exp, err := otel.New(ctx, x.otlp)
		if err != nil {
			return fail(fmt.Errorf("otlp exporter: %w", err))
		}
		exps = append(exps, exp)
	}
	if len(exps) == 0 {
		return closeAll, nil
	}
	sub := r.Subscribe(0)
	var wg sync.WaitGroup
	wg.Go(func() {
		n, bad := relay.Export(sub, exps, log)
		log.Info("exporters stopped", "flows", n, "undecodable", bad, "dropped", sub.Dropped())
	})
	return func() { wg.Wait(); closeAll() }, nil
}

func (x *relayExporters) openStore(ctx context.Context) (clickhouse.Store, error) {
	switch {
	case x.clickhouseAddr != "":
		s, err := clickhouse.OpenNative(clickhouse.NativeConfig{Addr: x.clickhouseAddr, Retention: x.retention})
		if err != nil {
			return nil, fmt.Errorf("clickhouse %s: %w", x.clickhouseAddr, err)
		}
		return s, nil
	case x.embedded:
		lib, err := clickhouse.EnsureChDB(ctx, "", os.Stderr)
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(x.dataDir, "chdb")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("embedded store: %w", err)
		}
		s, err := clickhouse.OpenEmbedded(ctx, clickhouse.EmbeddedConfig{Lib: lib, Dir: dir, Retention: x.retention})
		if err != nil {
			return nil, fmt.Errorf("embedded store: %w", err)
		}
		return s, nil
	}
	return nil, nil
}

// serveQueries answers 'sextant query' on a loopback address: SQL over the
// flow history is for the operator, not the network.
func serveQueries(addr string, store clickhouse.Store, log *slog.Logger) (*http.Server, error) {
	if host, _, err := net.SplitHostPort(addr); err != nil || !(host == "localhost" || net.ParseIP(host).IsLoopback()) {
		return nil, fmt.Errorf("--query-listen %s: only loopback addresses are allowed", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: clickhouse.QueryHandler(store), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("query endpoint", "addr", addr, "err", err)
		}
	}()
	log.Info("serving flow queries", "addr", addr)
	return srv, nil
}
