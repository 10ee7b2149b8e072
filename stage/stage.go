// Package stage runs the stages of a sextant daemon (the agent, the relay)
// in the order data flows through them: stages start in order and stop in
// reverse, so a stage never outlives what it feeds on nor starts before
// what it feeds. A composition root (agent.Run, relay.Run) lists its
// stages; adding one is one entry in that list.
//
// The first stage error, or the end of the context, stops every stage that
// started, last first; each stop is bounded by StopTimeout.
package stage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"
)

// StopTimeout bounds one stage's Stop.
const StopTimeout = 30 * time.Second

// Stage is one step of a pipeline. Every function is optional.
type Stage struct {
	Name string
	// Start prepares the stage and returns once it can take work (bind a
	// listener, load programs, open a store). An error stops the stages
	// started before it.
	Start func(ctx context.Context) error
	// Run is the stage's loop, from after Start until its context ends,
	// which happens when this stage's turn to stop comes. Returning early,
	// with or without an error, stops every stage.
	Run func(ctx context.Context) error
	// Stop ends the stage after every later stage has stopped and its own
	// Run has returned: flush, drain, close.
	Stop func(ctx context.Context) error
}

// Run starts stages in order, calls ready (when not nil) once all have
// started, and waits for ctx to end or a stage to fail; then it stops the
// started stages in reverse order. It returns the first failure: a start
// error, a Run error, or a Stop error.
func Run(ctx context.Context, log *slog.Logger, ready func(), stages ...Stage) error {
	g, failed := errgroup.WithContext(context.Background())
	type running struct {
		Stage
		cancel context.CancelFunc
		done   chan struct{}
	}
	var started []running
	stopAll := func() error {
		var errs []error
		for i := len(started) - 1; i >= 0; i-- {
			s := started[i]
			s.cancel()
			<-s.done
			if s.Stop == nil {
				continue
			}
			sctx, cancel := context.WithTimeout(context.Background(), StopTimeout)
			err := s.Stop(sctx)
			cancel()
			if err != nil {
				log.Warn("stage stop", "stage", s.Name, "err", err)
				errs = append(errs, fmt.Errorf("stop %s: %w", s.Name, err))
			}
		}
		return errors.Join(errs...)
	}

	for _, s := range stages {
		if s.Start != nil {
			if err := s.Start(ctx); err != nil {
				stopErr := stopAll()
				g.Wait()
				return errors.Join(fmt.Errorf("%s: %w", s.Name, err), stopErr)
			}
		}
		rctx, cancel := context.WithCancel(context.Background())
		r := running{Stage: s, cancel: cancel, done: make(chan struct{})}
		if s.Run == nil {
			close(r.done)
		} else {
			g.Go(func() error {
				defer close(r.done)
				err := s.Run(rctx)
				switch {
				case rctx.Err() != nil:
					return nil // its turn to stop came
				case err != nil:
					return fmt.Errorf("%s: %w", s.Name, err)
				}
				return fmt.Errorf("%s stopped unexpectedly", s.Name)
			})
		}
		started = append(started, r)
		log.Debug("stage started", "stage", s.Name)
	}
	if ready != nil {
		ready()
	}
	select {
	case <-ctx.Done():
	case <-failed.Done():
	}
	stopErr := stopAll()
	return errors.Join(g.Wait(), stopErr)
}
