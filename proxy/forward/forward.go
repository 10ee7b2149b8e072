// Package forward is the light gRPC node proxy that needs no Envoy:
// connections the redirect (proxy/redirect) sends to it are served by a
// grpc-go xDS server (its listener from the control plane: RBAC), and
// each call is sent on through a grpc-go xDS client channel for the
// original destination's front (routing, weighted splits, retries,
// timeouts, faults, circuit breaking, outlier detection: grpc-go's own
// implementation of the xDS semantics, fed by the same snapshots). The
// forwarder never decodes messages: it moves their bytes.
package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
)

// Config of a forwarder.
type Config struct {
	// Listener is where redirected connections arrive (the redirect's
	// proxy address); the forwarder serves on it.
	Listener net.Listener
	// Bootstrap is the gRPC xDS bootstrap of the forwarder's node, used by
	// its xDS server and its xDS client.
	Bootstrap []byte
	// OriginalDst tells an accepted connection's original destination
	// (redirect.SockoptOriginalDst, or a lookup in the redirect's map).
	OriginalDst func(net.Conn) (netip.AddrPort, error)
	// Front names the xDS front (listener, dialled as xds:///front) of an
	// original destination; false: no route for it.
	Front func(netip.AddrPort) (string, bool)
	// FailOpen: a call with no front, or whose original destination is
	// unknown, goes straight to its original destination. Otherwise
	// (fail-closed) it fails with UNAVAILABLE.
	FailOpen bool
	// Mark is the SO_MARK of upstream connections: the redirect skips
	// them (redirect.Options.SkipMark).
	Mark uint32
	Log  *slog.Logger
}

// Forwarder is a running forwarder.
type Forwarder struct {
	cfg      Config
	server   *xds.GRPCServer
	resolver resolver.Builder

	mu       sync.Mutex
	channels map[string]*grpc.ClientConn // xds:///front or the original destination
	origins  map[string]netip.AddrPort   // client address → original destination

	calls, direct, refused atomic.Uint64
}

// Stats count calls.
type Stats struct {
	Calls   uint64 // calls forwarded through xDS routes
	Direct  uint64 // fail-open calls sent straight to their original destination
	Refused uint64 // fail-closed calls refused (no route)
}

func (f *Forwarder) Stats() Stats {
	return Stats{Calls: f.calls.Load(), Direct: f.direct.Load(), Refused: f.refused.Load()}
}

// New prepares a forwarder; Serve runs it.
func New(cfg Config) (*Forwarder, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	r, err := xds.NewXDSResolverWithConfigForTesting(cfg.Bootstrap)
	if err != nil {
		return nil, fmt.Errorf("forwarder: xDS client bootstrap: %w", err)
	}
	f := &Forwarder{cfg: cfg, resolver: r, channels: map[string]*grpc.ClientConn{}, origins: map[string]netip.AddrPort{}}
	// grpc-go's per-server bootstrap option is marked for testing; it is
	// the only way to give one process's xDS server a bootstrap of its
	// own instead of the process-wide GRPC_XDS_BOOTSTRAP.
	srv, err := xds.NewGRPCServer(
		grpc.Creds(insecure.NewCredentials()),
		xds.BootstrapContentsForTesting(cfg.Bootstrap),
		grpc.UnknownServiceHandler(f.handle),
		grpc.ForceServerCodecV2(rawCodec{}),
	)
	if err != nil {
		return nil, fmt.Errorf("forwarder: xDS server: %w", err)
	}
	f.server = srv
	return f, nil
}

// Serve serves until ctx ends.
func (f *Forwarder) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		f.server.Stop()
		f.mu.Lock()
		for _, cc := range f.channels {
			cc.Close()
		}
		f.mu.Unlock()
	}()
	err := f.server.Serve(&originListener{Listener: f.cfg.Listener, f: f})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// originListener learns each connection's original destination at accept.
type originListener struct {
	net.Listener
	f *Forwarder
}

func (l *originListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if dst, err := l.f.cfg.OriginalDst(c); err == nil {
		l.f.mu.Lock()
		l.f.origins[c.RemoteAddr().String()] = dst
		l.f.mu.Unlock()
		return &originConn{Conn: c, f: l.f}, nil
	} else {
		l.f.cfg.Log.Debug("forwarder: no original destination", "client", c.RemoteAddr(), "err", err)
	}
	return c, nil
}

type originConn struct {
	net.Conn
	f    *Forwarder
	once sync.Once
}

func (c *originConn) Close() error {
	c.once.Do(func() {
		c.f.mu.Lock()
		delete(c.f.origins, c.RemoteAddr().String())
		c.f.mu.Unlock()
	})
	return c.Conn.Close()
}

// channel for a call from client: the xDS channel of its front, or (fail
// open) a direct one to its original destination.
func (f *Forwarder) channel(client net.Addr) (*grpc.ClientConn, error) {
	f.mu.Lock()
	dst, known := f.origins[client.String()]
	f.mu.Unlock()
	front, routed := "", false
	if known {
		front, routed = f.cfg.Front(dst)
	}
	var target string
	switch {
	case routed:
		target = "xds:///" + front
		f.calls.Add(1)
	case f.cfg.FailOpen && known:
		target = "passthrough:///" + dst.String()
		f.direct.Add(1)
	default:
		f.refused.Add(1)
		if !known {
			return nil, status.Errorf(codes.Unavailable, "sextant forwarder: original destination of %s unknown (fail-closed)", client)
		}
		return nil, status.Errorf(codes.Unavailable, "sextant forwarder: no route for %s (fail-closed)", dst)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if cc, ok := f.channels[target]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(f.resolver),
		grpc.WithContextDialer(f.dial),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})),
	)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "sextant forwarder: channel %s: %v", target, err)
	}
	f.channels[target] = cc
	return cc, nil
}

// dial marks upstream sockets so that the redirect lets them through.
func (f *Forwarder) dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		if f.cfg.Mark == 0 {
			return nil
		}
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(f.cfg.Mark)) }); err != nil {
			return err
		}
		return serr
	}}
	return d.DialContext(ctx, "tcp", addr)
}

// hopHeaders are set by the upstream channel itself.
var hopHeaders = []string{":authority", "content-type", "user-agent", "grpc-timeout", "te"}

// handle forwards one call of any method: headers, every message each
// way, trailers and status. The deadline travels in ctx.
func (f *Forwarder) handle(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "sextant forwarder: no method")
	}
	ctx := ss.Context()
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.Internal, "sextant forwarder: no peer")
	}
	cc, err := f.channel(p.Addr)
	if err != nil {
		return err
	}
	md, _ := metadata.FromIncomingContext(ctx)
	md = md.Copy()
	for _, h := range hopHeaders {
		delete(md, h)
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, md))
	defer cancel()
	cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
	if err != nil {
		return err
	}
	// Client → upstream.
	upErr := make(chan error, 1)
	go func() {
		for {
			var m []byte
			if err := ss.RecvMsg(&m); err != nil {
				if errors.Is(err, io.EOF) {
					upErr <- cs.CloseSend()
					return
				}
				cancel()
				upErr <- err
				return
			}
			if err := cs.SendMsg(&m); err != nil {
				upErr <- nil // the upstream's status comes from RecvMsg below
				return
			}
		}
	}()
	// Upstream → client.
	headerSent := false
	for {
		var m []byte
		err := cs.RecvMsg(&m)
		if !headerSent {
			if h, herr := cs.Header(); herr == nil && len(h) > 0 {
				_ = ss.SendHeader(h)
			}
			headerSent = true
		}
		if err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err // the upstream's status, passed through
		}
		if err := ss.SendMsg(&m); err != nil {
			return err
		}
	}
}

// rawCodec moves messages as bytes: the forwarder never decodes them.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" } // what clients send: application/grpc(+proto)

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*b = data.Materialize()
	return nil
}
