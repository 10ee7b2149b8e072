package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Limits of every gRPC server (the Observer API of agent and relay). Their
// requests are small (a GetFlows request with filters is a few hundred
// bytes); what flows is the answer.
const (
	MaxRequestBytes      = 1 << 20  // a 100 MB request is refused with ResourceExhausted
	MaxHeaderListBytes   = 16 << 10 // headers of a request
	MaxConcurrentStreams = 64       // per connection
	MaxIdle              = 5 * time.Minute
	// HandshakeTimeout closes a connection that has not finished its TLS
	// handshake and HTTP/2 preface by then, so idle sockets cannot hold
	// the connection slots.
	HandshakeTimeout = 10 * time.Second
	// GracePeriod is how long a stopping server lets its clients finish
	// (followers receive what is queued for them) before it closes them.
	GracePeriod = 5 * time.Second
)

// NewGRPC returns a gRPC server with sextant's limits, plus opts.
func NewGRPC(opts ...grpc.ServerOption) *grpc.Server {
	base := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxRequestBytes),
		grpc.MaxHeaderListSize(MaxHeaderListBytes),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.ConnectionTimeout(HandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: MaxIdle}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	return grpc.NewServer(append(base, opts...)...)
}

// GRPC serves one gRPC server on several listeners: the body of a stage.
type GRPC struct {
	Server    *grpc.Server
	Listeners []net.Listener
	// BeforeStop runs first when the server stops (e.g. the Observer
	// service reports NOT_SERVING so that health checks turn away).
	BeforeStop func()
}

// Run serves until ctx ends; a listener that fails stops it with an error.
func (g *GRPC) Run(ctx context.Context) error {
	errs := make(chan error, len(g.Listeners))
	var wg sync.WaitGroup
	for _, ln := range g.Listeners {
		wg.Go(func() {
			if err := g.Server.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				errs <- fmt.Errorf("serve %s: %w", ln.Addr(), err)
			}
		})
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	StopGRPC(g.Server, GracePeriod, g.BeforeStop)
	wg.Wait()
	return err
}

// Stop closes the listeners in case Run never ran (a later stage failed
// to start).
func (g *GRPC) Stop(context.Context) error {
	for _, ln := range g.Listeners {
		ln.Close()
	}
	return nil
}

// StopGRPC stops srv gracefully, then forcibly after grace: streams that
// never end by themselves (followers) must not hold a shutdown forever.
func StopGRPC(srv *grpc.Server, grace time.Duration, before func()) {
	if before != nil {
		before()
	}
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(grace):
		srv.Stop()
		<-stopped
	}
}
