// Package demo runs a small workload for sextant to observe: an HTTP
// service that speaks HTTP/1.1 and h2c on one port, the gRPC interop test
// service, and clients that call both at a steady rate.
package demo

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// Options configures Run. Zero values take the defaults.
type Options struct {
	HTTPAddr string  // HTTP/1.1 + h2c service; default a free loopback port
	GRPCAddr string  // gRPC service; default a free loopback port
	Rate     float64 // calls per second per client; default 5
	// Log receives one line per call the clients make:
	// "client=h2c proto=HTTP/2.0 method=GET path=/api/users/3 status=200 took=1.2ms".
	// nil discards them.
	Log io.Writer
	// Listening, when set, is told where the services listen once they
	// do (the ports are free ones unless named).
	Listening func(httpAddr, grpcAddr string)
}

func (o *Options) setDefaults() {
	if o.HTTPAddr == "" {
		o.HTTPAddr = "127.0.0.1:0"
	}
	if o.GRPCAddr == "" {
		o.GRPCAddr = "127.0.0.1:0"
	}
	if o.Rate <= 0 {
		o.Rate = 5
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// Run serves and calls the demo services until ctx is done. It returns an
// error when a service cannot listen or stops serving on its own.
func Run(ctx context.Context, opts Options) error {
	opts.setDefaults()

	httpLis, err := net.Listen("tcp", opts.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen http %s: %w", opts.HTTPAddr, err)
	}
	grpcLis, err := net.Listen("tcp", opts.GRPCAddr)
	if err != nil {
		httpLis.Close()
		return fmt.Errorf("listen grpc %s: %w", opts.GRPCAddr, err)
	}

	if opts.Listening != nil {
		opts.Listening(httpLis.Addr().String(), grpcLis.Addr().String())
	}

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	httpSrv := &http.Server{Handler: apiHandler(), Protocols: &protocols, ReadHeaderTimeout: 5 * time.Second}
	grpcSrv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(grpcSrv, interop.NewTestServer())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	serveErr := make(chan error, 2)
	go func() { serveErr <- fmt.Errorf("serve http: %w", httpSrv.Serve(httpLis)) }()
	go func() { serveErr <- fmt.Errorf("serve grpc: %w", grpcSrv.Serve(grpcLis)) }()

	log := &lineWriter{w: opts.Log}
	clients, err := newClients(httpLis.Addr().String(), grpcLis.Addr().String(), log)
	if err != nil {
		httpSrv.Close()
		grpcSrv.Stop()
		return err
	}
	var wg sync.WaitGroup
	for _, c := range clients.loops(opts.Rate) {
		wg.Go(func() { c.run(ctx) })
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serveErr:
		cancel()
	}
	wg.Wait()
	clients.close()
	httpSrv.Close()
	grpcSrv.Stop()
	return runErr
}

// apiHandler is the HTTP service. The same handler serves HTTP/1.1 and h2c.
func apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil {
			http.Error(w, "bad user id", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":%d,"name":"user-%d"}`, id, id)
	})
	mux.HandleFunc("POST /api/orders", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"order":%d,"received_bytes":%d}`, rand.IntN(1_000_000), len(body))
	})
	mux.HandleFunc("GET /api/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(time.Duration(200+rand.IntN(200)) * time.Millisecond):
			io.WriteString(w, "finally\n")
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("GET /api/fail", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "something broke", http.StatusInternalServerError)
	})
	return mux // anything else: 404
}

// lineWriter serialises the clients' log lines.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format+"\n", args...)
}
