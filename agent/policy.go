package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"

	"github.com/sextant/sextant/exporters"
	"github.com/sextant/sextant/policy"
	"github.com/sextant/sextant/policy/datapath"
	"github.com/sextant/sextant/stage"
)

// PolicyConfig configures the policy stage (docs/policy.md). The stage
// runs when Dir is set; the CLI sets it when --policy-dir is given or the
// default directory exists.
type PolicyConfig struct {
	// Dir is the policy directory (--policy-dir; policy.DefaultPolicyDir).
	Dir string `yaml:"dir"`
	// Endpoints is the endpoints file (--policy-endpoints;
	// policy.DefaultEndpointsFile).
	Endpoints string `yaml:"endpoints"`
	// Audit puts every endpoint in audit mode (--policy-audit): decide,
	// report, never drop.
	Audit bool `yaml:"audit"`
	// BPFFS is where the programs and maps are pinned (--policy-bpffs;
	// datapath.DefaultPinPath): enforcement outlives the agent there
	// until `sextant agent --cleanup`.
	BPFFS string `yaml:"bpffs"`
	// KernelStats turns on BPF run-time statistics (ns per decision).
	KernelStats bool `yaml:"kernelStats"`
}

func (c PolicyConfig) pinPath() string {
	if c.BPFFS == "" {
		return datapath.DefaultPinPath
	}
	return c.BPFFS
}

// Cleanup removes what the agent left in the kernel on purpose: the
// pinned policy programs and maps (enforcement stops). `sextant agent
// --cleanup`.
func Cleanup(cfg Config) error {
	if err := policy.Cleanup(cfg.Policy.pinPath()); err != nil {
		if isPermission(err) {
			return fmt.Errorf("%w: %v", ErrPermission, err)
		}
		return err
	}
	return nil
}

// policyStage runs the policy engine: it loads (or re-adopts) the pinned
// programs, applies the policies in force and watches them. Its Stop
// leaves the programs pinned: the revision in force keeps being
// enforced while no agent runs.
type policyStage struct {
	cfg     PolicyConfig
	node    string
	log     *slog.Logger
	eng     *policy.Engine
	running atomic.Pointer[policy.Engine] // for the status service
}

// newPolicyStage: the engine's verdicts become flows (the conversion at
// the stage's boundary) and go to the same sinks as the collector's
// flows: the Hubble feed, Prometheus, and through the link the relay's
// ClickHouse and OTLP sinks. The engine calls them on its reader
// goroutine; its Stop hands them what it read before, and the sinks'
// stages, which start before the policy stage, stop after it.
func newPolicyStage(cfg Config, sinks *exporters.Fanout) (*policyStage, error) {
	if cfg.Policy.Dir == "" {
		return nil, nil
	}
	eng, err := policy.New(policy.Config{
		PolicyDir: cfg.Policy.Dir, EndpointsFile: cfg.Policy.Endpoints, PinPath: cfg.Policy.pinPath(),
		Audit: cfg.Policy.Audit, Node: cfg.Node, KernelStats: cfg.Policy.KernelStats, Logger: cfg.Logger,
		Sink: func(vs []policy.Verdict) {
			for i := range vs {
				sinks.Export(vs[i].Flow())
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return &policyStage{cfg: cfg.Policy, node: cfg.Node, log: cfg.Logger, eng: eng}, nil
}

// engine is the running engine, nil before it started (or without one).
func (s *policyStage) engine() *policy.Engine {
	if s == nil {
		return nil
	}
	return s.running.Load()
}

func (s *policyStage) stage() stage.Stage {
	return stage.Stage{
		Name: "policy",
		Start: func(ctx context.Context) error {
			if _, err := os.Stat(s.cfg.Dir); err != nil {
				s.log.Warn("policy directory missing: nothing is enforced until it appears", "dir", s.cfg.Dir)
			}
			if err := s.eng.Start(ctx); err != nil {
				if isPermission(err) {
					return fmt.Errorf("%w: %v", ErrPermission, err)
				}
				return err
			}
			s.running.Store(s.eng)
			return nil
		},
		Stop: func(context.Context) error {
			s.running.Store(nil)
			return s.eng.Stop()
		},
	}
}
