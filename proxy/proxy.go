// Package proxy is the node proxy's composition root, what the agent
// runs and the CLI asks: the xDS control plane (proxy/xds) fed by the
// input files (proxy/config, watched) and the policy stage's L7 rules;
// the in-agent gRPC forwarder (proxy/forward); the connect-time redirect
// (proxy/redirect) that sends the traffic of routed fronts to the
// forwarder (GRPCRoute fronts) or to the node Envoy (HTTPRoute fronts,
// only while Envoy is ready); Envoy itself (proxy/envoy) when some input
// needs it; and the access records of both (proxy/access) to a sink.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"

	"github.com/sextant/sextant/proxy/access"
	"github.com/sextant/sextant/proxy/config"
	"github.com/sextant/sextant/proxy/envoy"
	"github.com/sextant/sextant/proxy/forward"
	"github.com/sextant/sextant/proxy/redirect"
	"github.com/sextant/sextant/proxy/xds"
)

// Config of the node proxy.
type Config struct {
	// Files are the input files and directories (`--proxy-config`).
	Files []string
	// StateDir holds the unix sockets (xDS, ALS, Envoy admin) and the
	// Envoy bootstrap.
	StateDir string
	// XDSAddr, when set, also serves xDS on TCP for proxyless gRPC
	// applications of the node (bootstrap server_uri).
	XDSAddr string
	// Cgroup is the cgroup v2 directory whose connects are redirected; ""
	// redirects nothing (xDS is still served).
	Cgroup string
	// ForwarderAddr is the gRPC forwarder's listener (default
	// 127.0.0.1:15002).
	ForwarderAddr netip.AddrPort
	// FailOpen: traffic the forwarder cannot route goes to its original
	// destination; otherwise it fails (UNAVAILABLE).
	FailOpen bool
	// Mark is the SO_MARK of the proxies' upstream sockets (default
	// 0x5e7a): the redirect lets them through.
	Mark uint32
	// EnvoyBinary is --envoy PATH ("" = envoy on PATH).
	EnvoyBinary string
	// Node names this node in records and xDS node ids.
	Node string
	Log  *slog.Logger
}

// Proxy is a running node proxy.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	xds    *xds.Server
	als    *access.ALS
	sinkID string

	mu        sync.Mutex
	set       *config.Set
	redirect  *redirect.Redirect
	forwarder *forward.Forwarder
	envoy     *envoy.Launcher
	envoyErr  *envoy.Status                     // why Envoy cannot run
	routes    map[netip.AddrPort]netip.AddrPort // redirected destination → proxy listener
	fronts    map[netip.AddrPort]string
	envoyUp   bool
	loadErr   error
}

// New prepares the proxy; Run starts it. sink receives every access
// record (Envoy access logs, gRPC servers' RBAC decisions).
func New(cfg Config, sink access.Sink) (*Proxy, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.StateDir == "" {
		return nil, errors.New("proxy: no state directory")
	}
	if !cfg.ForwarderAddr.IsValid() {
		cfg.ForwarderAddr = netip.MustParseAddrPort("127.0.0.1:15002")
	}
	if cfg.Mark == 0 {
		cfg.Mark = 0x5e7a
	}
	if cfg.Node == "" {
		cfg.Node, _ = os.Hostname()
	}
	p := &Proxy{cfg: cfg, log: cfg.Log, als: access.NewALS(sink), sinkID: "proxy-" + cfg.Node, set: &config.Set{}}
	access.RegisterSink(p.sinkID, sink)
	p.xds = xds.NewServer(xds.Options{Servers: []netip.AddrPort{cfg.ForwarderAddr}, AuditSink: p.sinkID, UpstreamMark: cfg.Mark}, cfg.Log)
	return p, nil
}

// OriginalDst is the destination a redirected client (at its local
// address) connected to: the agent puts it on the flows it observes of
// that connection, whose destination is the proxy's listener.
func (p *Proxy) OriginalDst(client netip.AddrPort) (netip.AddrPort, bool) {
	p.mu.Lock()
	r := p.redirect
	p.mu.Unlock()
	if r == nil {
		return netip.AddrPort{}, false
	}
	return r.OriginalDst(client)
}

// originalDst of a connection the forwarder accepted: SO_ORIGINAL_DST,
// which the redirect's getsockopt program answers where the proxy runs in
// the redirected cgroup (as in the tests of this package), else the
// redirect's note of the client's address, which is what an agent outside
// that cgroup has.
func (p *Proxy) originalDst(c net.Conn) (netip.AddrPort, error) {
	dst, err := redirect.SockoptOriginalDst(c)
	if err == nil {
		return dst, nil
	}
	if client, perr := netip.ParseAddrPort(c.RemoteAddr().String()); perr == nil {
		if d, ok := p.OriginalDst(netip.AddrPortFrom(client.Addr().Unmap(), client.Port())); ok {
			return d, nil
		}
	}
	return netip.AddrPort{}, err
}

// XDS is the control plane (for its Prometheus collectors).
func (p *Proxy) XDS() *xds.Server { return p.xds }

func (p *Proxy) socket(name string) string { return filepath.Join(p.cfg.StateDir, name) }

// Run serves until ctx ends.
func (p *Proxy) Run(ctx context.Context) error {
	if err := os.MkdirAll(p.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("proxy: state dir: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	serve := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("proxy %s: %w", name, err)
				cancel()
			}
		}()
	}
	// xDS on a unix socket (Envoy, the forwarder) and optionally TCP.
	xdsSock := p.socket("xds.sock")
	os.Remove(xdsSock)
	xl, err := net.Listen("unix", xdsSock)
	if err != nil {
		return fmt.Errorf("proxy: xDS socket: %w", err)
	}
	serve("xDS", func() error { return p.xds.Serve(ctx, xl) })
	if p.cfg.XDSAddr != "" {
		tl, err := net.Listen("tcp", p.cfg.XDSAddr)
		if err != nil {
			return fmt.Errorf("proxy: xDS %s: %w", p.cfg.XDSAddr, err)
		}
		serve("xDS tcp", func() error { return p.xds.Serve(ctx, tl) })
	}
	alsSock := p.socket("als.sock")
	os.Remove(alsSock)
	al, err := net.Listen("unix", alsSock)
	if err != nil {
		return fmt.Errorf("proxy: ALS socket: %w", err)
	}
	g := grpc.NewServer()
	p.als.Register(g)
	serve("ALS", func() error { return g.Serve(al) })
	go func() { <-ctx.Done(); g.Stop() }()

	p.Reload() // a bad first input is reported; the proxy starts empty

	fl, err := net.Listen("tcp", p.cfg.ForwarderAddr.String())
	if err != nil {
		return fmt.Errorf("proxy: forwarder %s: %w", p.cfg.ForwarderAddr, err)
	}
	fw, err := forward.New(forward.Config{
		Listener: fl, Bootstrap: xds.GRPCBootstrap("unix://"+xdsSock, "sextant-forwarder-"+p.cfg.Node), OriginalDst: p.originalDst,
		Front: p.front, FailOpen: p.cfg.FailOpen, Mark: p.cfg.Mark, Log: p.log,
	})
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.forwarder = fw
	p.mu.Unlock()
	serve("forwarder", func() error { return fw.Serve(ctx) })

	if p.cfg.Cgroup != "" {
		r, err := redirect.Load(redirect.Options{Cgroup: p.cfg.Cgroup, SkipMark: p.cfg.Mark})
		if err != nil {
			cancel()
			wg.Wait()
			return err
		}
		defer r.Close()
		p.mu.Lock()
		p.redirect = r
		p.mu.Unlock()
		p.applyRedirects()
	}
	serve("watch", func() error { return p.watch(ctx) })
	serve("envoy", func() error { return p.runEnvoy(ctx) })
	<-ctx.Done()
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// Reload re-reads the input files; a rejected set leaves the one in
// force and is returned (and shown in Status).
func (p *Proxy) Reload() error {
	set := &config.Set{}
	var err error
	if len(p.cfg.Files) > 0 {
		set, err = config.Load(p.cfg.Files...)
	}
	if err == nil {
		_, err = p.xds.Apply(set)
	}
	p.mu.Lock()
	p.loadErr = err
	if err == nil {
		p.set = set
	}
	p.mu.Unlock()
	if err != nil {
		p.log.Warn("proxy inputs rejected, the last good ones stay in force", "err", err)
		return err
	}
	p.applyRedirects()
	return nil
}

// SetL7 installs the policy stage's L7 rules (CiliumNetworkPolicy
// rules.http, converted to config.L7Policy).
func (p *Proxy) SetL7(policies []config.Doc[*config.L7Policy]) error {
	_, err := p.xds.ApplyL7(policies)
	return err
}

// front is the forwarder's route lookup.
func (p *Proxy) front(dst netip.AddrPort) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.fronts[dst]
	return n, ok
}

// applyRedirects: GRPCRoute fronts to the forwarder; HTTPRoute fronts to
// Envoy while it is ready, else not redirected at all.
func (p *Proxy) applyRedirects() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fronts = map[netip.AddrPort]string{}
	p.routes = map[netip.AddrPort]netip.AddrPort{}
	outbound := netip.MustParseAddrPort("127.0.0.1:15001")
	for _, f := range xds.Fronts(p.set) {
		for _, a := range f.Addrs {
			switch {
			case f.GRPCOnly:
				p.fronts[a] = f.Name
				p.routes[a] = p.cfg.ForwarderAddr
			case p.envoyUp:
				p.routes[a] = outbound
			}
		}
	}
	if p.redirect != nil {
		if err := p.redirect.Set(p.routes); err != nil {
			p.log.Error("proxy redirect", "err", err)
		}
	}
}

// needsEnvoy: HTTPRoute fronts or raw Envoy resources.
func needsEnvoy(s *config.Set) bool {
	if len(s.EnvoyResources) > 0 {
		return true
	}
	for _, f := range xds.Fronts(s) {
		if !f.GRPCOnly {
			return true
		}
	}
	return len(s.HTTPRoutes) > 0
}

// runEnvoy starts Envoy once some input needs it; without a binary the
// error is kept for Status and nothing is redirected to Envoy.
func (p *Proxy) runEnvoy(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		p.mu.Lock()
		need := needsEnvoy(p.set)
		p.mu.Unlock()
		if need {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
	l, err := envoy.New(envoy.Options{Binary: p.cfg.EnvoyBinary, Dir: p.cfg.StateDir, Log: p.log,
		Bootstrap: envoy.BootstrapOptions{NodeID: "sextant-envoy-" + p.cfg.Node, XDSSocket: p.socket("xds.sock"), ALSSocket: p.socket("als.sock")}})
	p.mu.Lock()
	p.envoy = l
	if err != nil {
		st := envoy.MissingStatus(err)
		p.envoyErr = &st
	}
	p.mu.Unlock()
	if err != nil {
		p.log.Error("node Envoy needed but cannot run: HTTP fronts are not redirected", "err", err)
		return nil
	}
	go func() {
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-l.Ready():
			}
			p.setEnvoyUp(true)
			for ctx.Err() == nil && l.Status().State == envoy.StateReady {
				time.Sleep(100 * time.Millisecond)
			}
			p.setEnvoyUp(false)
		}
	}()
	return l.Run(ctx)
}

func (p *Proxy) setEnvoyUp(up bool) {
	p.mu.Lock()
	p.envoyUp = up
	p.mu.Unlock()
	p.applyRedirects()
}

// watch reloads when an input file changes (debounced).
func (p *Proxy) watch(ctx context.Context) error {
	if len(p.cfg.Files) == 0 {
		<-ctx.Done()
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	for _, f := range p.cfg.Files {
		dir := f
		if st, err := os.Stat(f); err == nil && !st.IsDir() {
			dir = filepath.Dir(f)
		}
		if err := w.Add(dir); err != nil {
			return fmt.Errorf("watch %s: %w", dir, err)
		}
	}
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.Events:
			timer = time.After(100 * time.Millisecond)
		case err := <-w.Errors:
			p.log.Warn("proxy config watch", "err", err)
		case <-timer:
			p.Reload()
		}
	}
}

// Status is `sextant proxy status`.
type Status struct {
	XDS       xds.Status      `json:"xds"`
	Envoy     envoy.Status    `json:"envoy"`
	Forwarder forward.Stats   `json:"forwarder"`
	Redirect  *redirect.Stats `json:"redirect,omitempty"`
	// Redirected are the destinations sent to a proxy now.
	Redirected map[string]string `json:"redirected"`
	LoadError  string            `json:"load_error,omitempty"`
	ALS        access.ALSStats   `json:"als"`
}

func (p *Proxy) Status() Status {
	st := Status{XDS: p.xds.Status(), ALS: p.als.Stats(), Redirected: map[string]string{}}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.envoy != nil:
		st.Envoy = p.envoy.Status()
	case p.envoyErr != nil:
		st.Envoy = *p.envoyErr
	default:
		st.Envoy = envoy.Status{State: envoy.StateStopped}
	}
	if p.forwarder != nil {
		st.Forwarder = p.forwarder.Stats()
	}
	if p.redirect != nil {
		if rs, err := p.redirect.Stats(); err == nil {
			st.Redirect = &rs
		}
	}
	for d, to := range p.routes {
		st.Redirected[d.String()] = to.String()
	}
	if p.loadErr != nil {
		st.LoadError = p.loadErr.Error()
	}
	return st
}

// Validate is `sextant proxy validate FILE…`.
func Validate(files ...string) (xds.Report, error) { return xds.Validate(xds.Options{}, files...) }
