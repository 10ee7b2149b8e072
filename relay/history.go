package relay

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/sextant/sextant/exporters"
	"github.com/sextant/sextant/exporters/clickhouse"
	"github.com/sextant/sextant/exporters/otel"
	"github.com/sextant/sextant/serve"
	"github.com/sextant/sextant/stage"
)

// DefaultQuerySocket is where the relay answers `sextant query`.
const DefaultQuerySocket = "/var/run/sextant/query.sock"

// Kinds of StoreConfig.Kind.
const (
	StoreAuto     = ""           // a ClickHouse server when Addr is set, else the embedded engine
	StoreEmbedded = "embedded"   // chDB in the relay process (fetched once, ~570 MB)
	StoreServer   = "clickhouse" // a ClickHouse server (native protocol)
	StoreNone     = "none"       // no flow history
)

// StoreConfig configures the flow history.
type StoreConfig struct {
	Kind string `yaml:"kind"`
	// Addr is the ClickHouse server (native protocol, host:9000).
	Addr     string `yaml:"addr"`
	Database string `yaml:"database"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// QueryUsername runs `sextant query` statements on a server: a user
	// with the restricted profile of docs/clickhouse.md. Without one the
	// writer runs them with readonly=1 and the limits as settings.
	QueryUsername string `yaml:"queryUsername"`
	QueryPassword string `yaml:"queryPassword"`
	// DataDir holds the embedded engine's data and the spool of batches
	// waiting for an unreachable server (default /var/lib/sextant).
	DataDir string `yaml:"dataDir"`
	// Retention is how long flows are kept (TTL, where the engine has one).
	Retention time.Duration `yaml:"retention"`
	// Query is where SQL over the history is answered (default: the socket
	// DefaultQuerySocket; TCP only with mTLS).
	Query serve.Config `yaml:"query"`
}

// DefaultDataDir holds the relay's embedded store and spool.
const DefaultDataDir = "/var/lib/sextant"

// DefaultRetention of flow history.
const DefaultRetention = 7 * 24 * time.Hour

// storeStage opens the flow history first (the embedded engine may have to
// be fetched), and closes it last.
type storeStage struct {
	cfg     StoreConfig
	log     *slog.Logger
	metrics *relayMetrics
	store   clickhouse.Store
	query   serve.HTTP
}

func (s *storeStage) stage() stage.Stage {
	return stage.Stage{
		Name: "flow-store",
		Start: func(ctx context.Context) error {
			if s.cfg.DataDir == "" {
				s.cfg.DataDir = DefaultDataDir
			}
			if s.cfg.Retention == 0 {
				s.cfg.Retention = DefaultRetention
			}
			var err error
			s.store, err = s.open(ctx)
			return err
		},
		Stop: func(context.Context) error {
			if s.store == nil {
				return nil
			}
			return s.store.Close()
		},
	}
}

func (s *storeStage) open(ctx context.Context) (clickhouse.Store, error) {
	kind := s.cfg.Kind
	if kind == StoreAuto {
		kind = StoreEmbedded
		if s.cfg.Addr != "" {
			kind = StoreServer
		}
	}
	switch kind {
	case StoreNone:
		return nil, nil
	case StoreServer:
		st, err := clickhouse.OpenNative(clickhouse.NativeConfig{
			Addr: s.cfg.Addr, Database: s.cfg.Database, Username: s.cfg.Username, Password: s.cfg.Password, Retention: s.cfg.Retention,
			QueryUser: s.cfg.QueryUsername, QueryPassword: s.cfg.QueryPassword,
		})
		if err != nil {
			return nil, fmt.Errorf("clickhouse %s: %w", s.cfg.Addr, err)
		}
		return st, nil
	case StoreEmbedded:
		lib, err := clickhouse.EnsureChDB(ctx, "", os.Stderr)
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(s.cfg.DataDir, "chdb")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("embedded store: %w", err)
		}
		st, err := clickhouse.OpenEmbedded(ctx, clickhouse.EmbeddedConfig{Lib: lib, Dir: dir, Database: s.cfg.Database, Retention: s.cfg.Retention})
		if err != nil {
			return nil, fmt.Errorf("embedded store: %w", err)
		}
		return st, nil
	}
	return nil, fmt.Errorf("store kind %q: want %q, %q or %q", kind, StoreEmbedded, StoreServer, StoreNone)
}

// queryTimeout bounds the answer to one query (the handler bounds the
// query itself).
const queryTimeout = 3 * time.Minute

// queryStage serves SQL over the history on the query socket (and TCP
// with mTLS), for the operator: flows carry every process's URLs.
func (s *storeStage) queryStage() stage.Stage {
	return stage.Stage{
		Name: "query",
		Start: func(context.Context) error {
			if s.store == nil {
				return nil
			}
			cfg := s.cfg.Query
			if cfg.Socket == "" && cfg.Listen == "" {
				cfg.Socket = DefaultQuerySocket
			}
			lns, err := cfg.Bind()
			if err != nil {
				return fmt.Errorf("query endpoint: %w", err)
			}
			if len(lns) > 1 {
				return fmt.Errorf("query endpoint: serve either a socket or a TCP address, not both")
			}
			s.query = serve.HTTP{Listener: lns[0], Handler: clickhouse.QueryHandler(s.store), WriteTimeout: queryTimeout}
			s.log.Info("serving flow queries", "addr", serve.URL(lns[0].Addr()))
			return nil
		},
		Run: func(ctx context.Context) error {
			if s.query.Listener == nil {
				<-ctx.Done()
				return nil
			}
			return s.query.Run(ctx)
		},
		Stop: func(ctx context.Context) error {
			if s.query.Listener == nil {
				return nil
			}
			return s.query.Stop(ctx)
		},
	}
}

// exporter is the flow-history sink (nil without a store).
func (s *storeStage) exporter(context.Context) (exporters.Exporter, error) {
	if s.store == nil {
		return nil, nil
	}
	exp, err := clickhouse.New(clickhouse.Config{SpoolDir: filepath.Join(s.cfg.DataDir, "spool"), Log: s.log}, s.store)
	if err != nil {
		return nil, fmt.Errorf("flow history exporter: %w", err)
	}
	s.metrics.clickhouse.Store(exp)
	return exp, nil
}

// OTLPConfig configures spans and metrics over OTLP (off without an
// endpoint).
type OTLPConfig struct {
	Endpoint string `yaml:"endpoint"`
	Protocol string `yaml:"protocol"` // grpc (default) or http
	Insecure bool   `yaml:"insecure"` // no TLS

	metrics *relayMetrics
}

func (c *OTLPConfig) exporter(ctx context.Context) (exporters.Exporter, error) {
	if c.Endpoint == "" {
		return nil, nil
	}
	exp, err := otel.New(ctx, otel.Config{Endpoint: c.Endpoint, Protocol: c.Protocol, Insecure: c.Insecure, Traces: true, Metrics: true})
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	c.metrics.otel.Store(exp)
	return exp, nil
}
