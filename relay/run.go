package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sextant/sextant/certs"
	"github.com/sextant/sextant/exporters"
	"github.com/sextant/sextant/serve"
	"github.com/sextant/sextant/stage"
)

// DefaultSocket is where the relay serves its merged Observer API.
const DefaultSocket = "/var/run/sextant/relay.sock"

// DefaultListen is the relay's TCP address (Hubble relay's usual port),
// served when mTLS certificates are configured.
const DefaultListen = "127.0.0.1:4245"

// Config configures the relay daemon (relay.Run); it is also the `relay:`
// section of the configuration file (docs/configuration.md).
type Config struct {
	// Agents are the agents' Observer APIs: unix:///path, or host:port
	// over mTLS (plaintext only with AllowInsecureTCP). A host name may
	// resolve to several agents.
	Agents []string `yaml:"agents"`
	// AgentTLS is the client certificate, key and CA towards agents;
	// AgentServerName the name their certificates must carry (default:
	// the host of each agent address).
	AgentTLS        certs.Files `yaml:"agentTLS"`
	AgentServerName string      `yaml:"agentServerName"`
	// AllowInsecureTCP allows plaintext TCP to agents.
	AllowInsecureTCP bool `yaml:"allowInsecureTCP"`

	// Observer is where the merged Observer API answers (default: the
	// socket DefaultSocket; TCP with mTLS when configured).
	Observer        serve.Config  `yaml:"observer"`
	RingSize        int           `yaml:"ringSize"`
	SortWindow      time.Duration `yaml:"sortWindow"`
	MaxHeld         int           `yaml:"maxHeld"`
	ResolveInterval time.Duration `yaml:"resolveInterval"`
	// History, when > 0, also fetches each agent's flows of this long
	// before the relay started, on first contact.
	History time.Duration `yaml:"history"`

	Store   StoreConfig   `yaml:"store"`
	OTLP    OTLPConfig    `yaml:"otlp"`
	Metrics MetricsConfig `yaml:"metrics"`

	Logger *slog.Logger `yaml:"-"`
}

// Run runs the relay until ctx ends or a stage fails. Its stages, in the
// order they start (they stop in reverse):
//
//	flow-store    ClickHouse server or the embedded engine (flow history)
//	observer-api  the merged Hubble Observer API
//	query         SQL over the flow history, for `sextant query`
//	metrics       the relay's /metrics
//	clickhouse    sink: flows → flow history
//	otlp          sink: flows → spans and metrics over OTLP
//	export        the merged flows → every sink
//	merge         follow every agent, merge in time order
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger
	if len(cfg.Agents) == 0 {
		return errors.New("no agent: give at least one agent address")
	}
	opts := Options{
		Agents: cfg.Agents, AllowInsecure: cfg.AllowInsecureTCP, RingSize: cfg.RingSize,
		SortWindow: cfg.SortWindow, MaxHeld: cfg.MaxHeld, ResolveInterval: cfg.ResolveInterval, Log: log,
	}
	if !cfg.AgentTLS.Empty() {
		tc, err := certs.ClientConfig(cfg.AgentTLS, cfg.AgentServerName)
		if err != nil {
			return fmt.Errorf("TLS towards agents: %w", err)
		}
		opts.AgentTLS = tc
	}
	if cfg.History > 0 {
		opts.Since = time.Now().Add(-cfg.History)
	}
	r, err := New(opts)
	if err != nil {
		return err
	}
	if cfg.Observer.Socket == "" && cfg.Observer.Listen == "" {
		cfg.Observer.Socket = DefaultSocket
	}

	var (
		store  = &storeStage{cfg: cfg.Store, log: log}
		api    = &serve.GRPC{Server: serve.NewGRPC(), BeforeStop: r.Shutdown}
		export = &exportStage{r: r, log: log}
		m      = newMetrics(r, export)
	)
	store.metrics, cfg.OTLP.metrics = m, m
	r.Register(api.Server)
	stages := []stage.Stage{store.stage()}
	stages = append(stages, stage.Stage{
		Name:  "observer-api",
		Start: func(context.Context) error { return bind(api, cfg.Observer, "Observer API", log) },
		Run:   api.Run,
		Stop:  api.Stop,
	})
	stages = append(stages, store.queryStage())
	if cfg.Metrics.Listen != "" {
		stages = append(stages, m.stage(cfg.Metrics, log))
	}
	stages = append(stages,
		export.sink("clickhouse", store.exporter),
		export.sink("otlp", cfg.OTLP.exporter),

		export.stage(),
		stage.Stage{Name: "merge", Run: r.Run},
	)
	return stage.Run(ctx, log, func() { log.Info("relaying", "agents", cfg.Agents) }, stages...)
}

// bind listens where cfg says and logs each address.
func bind(g *serve.GRPC, cfg serve.Config, what string, log *slog.Logger) error {
	lns, err := cfg.Bind()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	g.Listeners = lns
	for _, ln := range lns {
		log.Info("serving the "+what, "addr", serve.URL(ln.Addr()))
	}
	return nil
}

// exportStage hands the merged flows to the sinks.
type exportStage struct {
	r        *Relay
	log      *slog.Logger
	sinks    exporters.Fanout
	sub      *Subscription
	exported uint64
}

// sink is the stage of one exporter: open returns nil when it is not
// configured. Opened before the export stage starts, closed (flushed)
// after it stopped.
func (e *exportStage) sink(name string, open func(context.Context) (exporters.Exporter, error)) stage.Stage {
	var exp exporters.Exporter
	return stage.Stage{
		Name: name,
		Start: func(ctx context.Context) error {
			var err error
			if exp, err = open(ctx); err != nil || exp == nil {
				return err
			}
			e.sinks = append(e.sinks, exp)
			return nil
		},
		Stop: func(ctx context.Context) error {
			if exp == nil {
				return nil
			}
			return exp.Close(ctx)
		},
	}
}

func (e *exportStage) stage() stage.Stage {
	done := make(chan struct{})
	return stage.Stage{
		Name: "export",
		Start: func(context.Context) error {
			if len(e.sinks) > 0 {
				e.sub = e.r.Subscribe()
			}
			return nil
		},
		Run: func(ctx context.Context) error {
			if e.sub == nil {
				<-ctx.Done()
				return nil
			}
			go func() {
				defer close(done)
				e.exported = Export(e.sub, e.sinks)
			}()
			// The merge stops first and closes the subscription: every
			// event it released reaches the sinks before they close.
			<-ctx.Done()
			<-done
			e.log.Info("exporters fed", "flows", e.exported, "dropped", e.sub.Dropped())
			return nil
		},
	}
}

// Dropped is what the exporters' subscription lost (0 without one).
func (e *exportStage) Dropped() uint64 {
	if e.sub == nil {
		return 0
	}
	return e.sub.Dropped()
}
