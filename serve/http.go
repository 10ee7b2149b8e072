package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Limits of every HTTP server (/metrics, the query endpoint).
const (
	MaxHTTPHeaderBytes = 16 << 10
	// MaxHTTPBody bounds a request body (a SQL statement and its options);
	// handlers wrap their bodies with http.MaxBytesReader.
	MaxHTTPBody = 1 << 20
)

// HTTP serves handler on ln with timeouts and header limits: the body of a
// stage. WriteTimeout must cover the slowest answer (a query).
type HTTP struct {
	Listener     net.Listener
	Handler      http.Handler
	WriteTimeout time.Duration
	srv          *http.Server
}

// Run serves until ctx ends, then shuts down, letting requests in flight
// finish for GracePeriod.
func (h *HTTP) Run(ctx context.Context) error {
	wt := h.WriteTimeout
	if wt <= 0 {
		wt = time.Minute
	}
	h.srv = &http.Server{
		Handler:           h.Handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      wt,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    MaxHTTPHeaderBytes,
	}
	served := make(chan error, 1)
	go func() { served <- h.srv.Serve(h.Listener) }()
	select {
	case err := <-served:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve %s: %w", h.Listener.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), GracePeriod)
	defer cancel()
	if err := h.srv.Shutdown(sctx); err != nil {
		h.srv.Close()
	}
	<-served
	return nil
}

// Stop closes the listener in case Run never ran.
func (h *HTTP) Stop(context.Context) error {
	h.Listener.Close()
	return nil
}
