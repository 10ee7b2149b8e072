package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"

	"github.com/sextant/sextant/collector/flow"
)

// NoAgentError means nothing listens on the socket.
type NoAgentError struct{ Socket string }

func (e *NoAgentError) Error() string {
	return fmt.Sprintf("no agent running at %s (start one with `sextant agent`)", e.Socket)
}

// PermissionError means the socket exists but this user may not connect.
type PermissionError struct{ Socket string }

func (e *PermissionError) Error() string {
	return fmt.Sprintf("permission denied: %s belongs to the agent's user (run as root)", e.Socket)
}

// Client talks to an agent's local API over its unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the agent listening on socket.
func NewClient(socket string) *Client {
	dialer := &net.Dialer{}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, "unix", socket)
			switch {
			case err == nil:
				return conn, nil
			case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
				return nil, &NoAgentError{Socket: socket}
			case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
				return nil, &PermissionError{Socket: socket}
			}
			return nil, err
		},
		DisableCompression: true,
	}
	return &Client{socket: socket, http: &http.Client{Transport: transport}}
}

// Flows fetches the last flows (and, with follow, every later one) and calls
// fn for each, oldest first, until the stream ends, ctx is done or fn returns
// an error. A follow stream that the agent ends is reported as an error.
func (c *Client) Flows(ctx context.Context, last int, follow bool, fn func(*flow.Flow) error) error {
	q := url.Values{}
	q.Set("last", strconv.Itoa(last))
	if follow {
		q.Set("follow", "true")
	}
	body, err := c.get(ctx, "/v1/flows?"+q.Encode())
	if err != nil {
		return err
	}
	defer body.Close()

	dec := json.NewDecoder(body)
	for {
		var f flow.Flow
		err := dec.Decode(&f)
		if errors.Is(err, io.EOF) {
			if follow && ctx.Err() == nil {
				return fmt.Errorf("agent at %s ended the stream (stopped?)", c.socket)
			}
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read flows from %s: %w", c.socket, err)
		}
		if err := fn(&f); err != nil {
			return err
		}
	}
}

// Status fetches the agent's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	body, err := c.get(ctx, "/v1/status")
	if err != nil {
		return nil, err
	}
	defer body.Close()
	var st Status
	if err := json.NewDecoder(body).Decode(&st); err != nil {
		return nil, fmt.Errorf("read status from %s: %w", c.socket, err)
	}
	return &st, nil
}

func (c *Client) get(ctx context.Context, path string) (io.ReadCloser, error) {
	// The host is ignored by the unix dialer; it only has to be valid.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://sextant"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var noAgent *NoAgentError
		var perm *PermissionError
		switch {
		case errors.As(err, &noAgent):
			return nil, noAgent
		case errors.As(err, &perm):
			return nil, perm
		}
		return nil, fmt.Errorf("query agent at %s: %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("agent at %s: %s: %s", c.socket, resp.Status, strings.TrimSpace(string(msg)))
	}
	return resp.Body, nil
}
