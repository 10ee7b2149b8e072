package envoy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ErrNoEnvoy: no Envoy binary to run. The agent then redirects nothing to
// Envoy (the gRPC forwarder still works).
var ErrNoEnvoy = errors.New("no Envoy binary: give --envoy PATH or put envoy on PATH; nothing is redirected to Envoy")

// Find resolves the binary: path when given, else envoy on PATH.
func Find(path string) (string, error) {
	if path == "" {
		p, err := exec.LookPath("envoy")
		if err != nil {
			return "", fmt.Errorf("%w (%v)", ErrNoEnvoy, err)
		}
		return p, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrNoEnvoy, path, err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%w: %s is not an executable file", ErrNoEnvoy, path)
	}
	return path, nil
}

// Options of the launcher.
type Options struct {
	Binary string // --envoy PATH; "" = envoy on PATH
	// Dir holds the bootstrap, and the admin socket unless Bootstrap
	// names one.
	Dir       string
	Bootstrap BootstrapOptions
	// ReadyTimeout bounds one start's wait for /ready (default 30s).
	ReadyTimeout time.Duration
	// Backoff between restarts: doubling from MinBackoff (default 250ms)
	// up to MaxBackoff (default 30s); a run that stayed up a minute
	// resets it.
	MinBackoff, MaxBackoff time.Duration
	Log                    *slog.Logger
	// Args are extra Envoy arguments.
	Args []string
}

// State names where the launcher is.
type State string

const (
	StateMissing    State = "missing" // no binary
	StateStarting   State = "starting"
	StateReady      State = "ready"
	StateRestarting State = "restarting" // exited, waiting out the backoff
	StateStopped    State = "stopped"
)

// Status is what `sextant proxy status` shows of Envoy.
type Status struct {
	State     State     `json:"state"`
	Binary    string    `json:"binary,omitempty"`
	PID       int       `json:"pid,omitempty"`
	Restarts  int       `json:"restarts"`
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since"`
}

// Launcher runs one Envoy.
type Launcher struct {
	opt       Options
	bootstrap string // file

	mu     sync.Mutex
	status Status
	ready  chan struct{} // closed at each readiness; replaced on exit
}

// New finds the binary and writes the bootstrap. ErrNoEnvoy when there
// is no binary.
func New(opt Options) (*Launcher, error) {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.ReadyTimeout <= 0 {
		opt.ReadyTimeout = 30 * time.Second
	}
	if opt.MinBackoff <= 0 {
		opt.MinBackoff = 250 * time.Millisecond
	}
	if opt.MaxBackoff <= 0 {
		opt.MaxBackoff = 30 * time.Second
	}
	bin, err := Find(opt.Binary)
	if err != nil {
		return nil, err
	}
	opt.Binary = bin
	if opt.Bootstrap.AdminSocket == "" {
		opt.Bootstrap.AdminSocket = filepath.Join(opt.Dir, "envoy-admin.sock")
	}
	js, err := BootstrapJSON(opt.Bootstrap)
	if err != nil {
		return nil, err
	}
	file := filepath.Join(opt.Dir, "envoy-bootstrap.json")
	if err := os.WriteFile(file, js, 0o600); err != nil {
		return nil, fmt.Errorf("write envoy bootstrap: %w", err)
	}
	return &Launcher{opt: opt, bootstrap: file, ready: make(chan struct{}),
		status: Status{State: StateStopped, Binary: bin, Since: time.Now()}}, nil
}

// Status now.
func (l *Launcher) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

// Ready is closed once the running Envoy answers /ready; redirect
// traffic to Envoy only after it (and stop on the next State change).
func (l *Launcher) Ready() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ready
}

func (l *Launcher) set(s State, pid int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status.State, l.status.PID, l.status.Since = s, pid, time.Now()
	if err != nil {
		l.status.LastError = err.Error()
	}
	switch s {
	case StateReady:
		close(l.ready)
	case StateRestarting, StateStopped:
		select {
		case <-l.ready:
			l.ready = make(chan struct{})
		default:
		}
	}
}

// Run keeps Envoy running until ctx ends.
func (l *Launcher) Run(ctx context.Context) error {
	backoff := l.opt.MinBackoff
	for {
		start := time.Now()
		err := l.runOnce(ctx)
		if ctx.Err() != nil {
			l.set(StateStopped, 0, nil)
			return nil
		}
		if time.Since(start) > time.Minute {
			backoff = l.opt.MinBackoff
		}
		l.mu.Lock()
		l.status.Restarts++
		l.mu.Unlock()
		l.set(StateRestarting, 0, err)
		l.opt.Log.Warn("envoy exited, restarting", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			l.set(StateStopped, 0, nil)
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, l.opt.MaxBackoff)
	}
}

func (l *Launcher) runOnce(ctx context.Context) error {
	os.Remove(l.opt.Bootstrap.AdminSocket)
	args := append([]string{"-c", l.bootstrap, "--use-dynamic-base-id"}, l.opt.Args...)
	cmd := exec.CommandContext(ctx, l.opt.Binary, args...)
	cmd.Stdout, cmd.Stderr = logWriter{l.opt.Log}, logWriter{l.opt.Log}
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", l.opt.Binary, err)
	}
	l.set(StateStarting, cmd.Process.Pid, nil)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	readyCtx, cancel := context.WithTimeout(ctx, l.opt.ReadyTimeout)
	defer cancel()
	readyErr := make(chan error, 1)
	go func() { readyErr <- waitReady(readyCtx, l.opt.Bootstrap.AdminSocket) }()
	select {
	case err := <-exited:
		return fmt.Errorf("envoy exited before ready: %v", err)
	case err := <-readyErr:
		if err != nil {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("envoy not ready within %v: %w", l.opt.ReadyTimeout, err)
		}
	}
	l.set(StateReady, cmd.Process.Pid, nil)
	l.opt.Log.Info("envoy ready", "pid", cmd.Process.Pid)
	err := <-exited
	return fmt.Errorf("envoy exited: %v", err)
}

// waitReady polls the admin /ready endpoint until it answers 200 LIVE.
func waitReady(ctx context.Context, sock string) error {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}, Timeout: time.Second}
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://envoy/ready", nil)
		resp, err := c.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "LIVE" {
				return nil
			}
			err = fmt.Errorf("/ready: %s %q", resp.Status, strings.TrimSpace(string(body)))
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.log.Info("envoy", "line", line)
	}
	return len(p), nil
}

// MissingStatus is the status to show when New failed (no binary).
func MissingStatus(err error) Status {
	return Status{State: StateMissing, LastError: err.Error(), Since: time.Now()}
}
