// Package api is the agent's local flow API: HTTP/1.1 on a unix socket (and
// optionally on a loopback TCP port) serving the flows held in the ring.
//
// It is deliberately small and temporary: it stands in until the agent
// speaks the Hubble Observer API, and only carries what `sextant observe`
// needs.
//
//	GET /v1/flows?last=N&follow=true  NDJSON stream of flow.Flow, oldest first
//	GET /v1/status                    JSON Status
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/sextant/sextant/collector/ring"
)

// DefaultLast is how many recent flows GET /v1/flows returns when the
// request names neither last nor follow.
const DefaultLast = 20

// DefaultFollowBuffer is how many flows a follower may fall behind before it
// starts losing them.
const DefaultFollowBuffer = 4096

// Status is the body of GET /v1/status.
type Status struct {
	Node    string    `json:"node"`
	Started time.Time `json:"started"`
	Uptime  string    `json:"uptime"`
	// FlowsSeen counts every flow the collector produced since start.
	FlowsSeen uint64     `json:"flows_seen"`
	Ring      ring.Stats `json:"ring"`
	// ProbeEvents counts records read from the kernel; ProbeDrops counts
	// records the kernel could not emit, by reason.
	ProbeEvents uint64            `json:"probe_events"`
	ProbeDrops  map[string]uint64 `json:"probe_drops"`
	// ProbeInvalid counts records user space could not decode.
	ProbeInvalid uint64 `json:"probe_invalid"`
	// Collector holds the collector's own statistics (decode errors, HPACK
	// unknowns, evictions, tracked connections and streams).
	Collector any `json:"collector,omitempty"`
}

// Server answers the local API from a ring.
type Server struct {
	ring   *ring.Ring
	status func() Status
	log    *slog.Logger
	// FollowBuffer is the subscription buffer of each follower
	// (DefaultFollowBuffer when 0).
	FollowBuffer int
}

// NewServer returns a server of the flows in r. status is called for every
// GET /v1/status; a nil status reports the ring alone.
func NewServer(r *ring.Ring, status func() Status, log *slog.Logger) *Server {
	if status == nil {
		status = func() Status {
			st := r.Stats()
			return Status{FlowsSeen: st.Written, Ring: st}
		}
	}
	if log == nil {
		log = slog.Default()
	}
	return &Server{ring: r, status: status, log: log}
}

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/flows", s.flows)
	mux.HandleFunc("GET /v1/status", s.statusHandler)
	return mux
}

// Serve answers on every listener until ctx is done, then shuts down: open
// follow streams end (their request contexts derive from ctx) and the
// listeners are closed, which removes a unix socket file.
func (s *Server) Serve(ctx context.Context, listeners ...net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errs := make(chan error, len(listeners))
	var wg sync.WaitGroup
	for _, ln := range listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("serve %s: %w", ln.Addr(), err)
			}
		}()
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if shutdownErr := srv.Shutdown(shutdownCtx); shutdownErr != nil && err == nil {
		err = fmt.Errorf("shut down API server: %w", shutdownErr)
	}
	wg.Wait()
	return err
}

func (s *Server) flows(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	follow := false
	if v := q.Get("follow"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			http.Error(w, fmt.Sprintf("follow=%q: want true or false", v), http.StatusBadRequest)
			return
		}
		follow = b
	}
	last := DefaultLast
	if follow {
		last = 0
	}
	if v := q.Get("last"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			http.Error(w, fmt.Sprintf("last=%q: want a number >= 0", v), http.StatusBadRequest)
			return
		}
		last = n
	}

	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	rc := http.NewResponseController(w)

	if !follow {
		for _, f := range s.ring.Last(last) {
			if err := enc.Encode(f); err != nil {
				return
			}
		}
		return
	}

	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	buffer := s.FollowBuffer
	if buffer <= 0 {
		buffer = DefaultFollowBuffer
	}
	history, sub := s.ring.LastAndSubscribe(ctx, last, buffer)
	defer func() {
		s.log.Debug("follower left", "remote", req.RemoteAddr, "lost", sub.Lost())
	}()
	for _, f := range history {
		if err := enc.Encode(f); err != nil {
			return
		}
	}
	// Send the headers (and history) now so the client knows it is connected
	// even when no flow arrives for a while.
	if err := rc.Flush(); err != nil {
		return
	}
	for f := range sub.Flows() {
		if err := enc.Encode(f); err != nil {
			return
		}
		// Flush once the backlog is drained: one syscall per burst, not per flow.
		if len(sub.Flows()) == 0 {
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

func (s *Server) statusHandler(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s.status())
}
