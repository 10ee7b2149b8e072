package serve

import (
	"net"
	"sync"
	"sync/atomic"
)

// DefaultMaxConns bounds the connections one listener serves at once. The
// agent's and relay's clients are a handful (a relay, a CLI, a
// Prometheus); hundreds of connections are a flood.
const DefaultMaxConns = 256

// LimitConns serves at most n connections of ln at once. A connection
// beyond the limit is accepted and closed at once, so that its client gets
// an error instead of waiting in the backlog, and the daemon keeps its file
// descriptors and memory for the work it is there for. Refused counts them.
func LimitConns(ln net.Listener, n int) *Limited {
	if n <= 0 {
		n = DefaultMaxConns
	}
	return &Limited{Listener: ln, slots: make(chan struct{}, n)}
}

// Limited is a listener with a connection limit.
type Limited struct {
	net.Listener
	slots   chan struct{}
	refused atomic.Uint64
}

// Refused is how many connections were closed for being over the limit.
func (l *Limited) Refused() uint64 { return l.refused.Load() }

func (l *Limited) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			l.refused.Add(1)
			c.Close()
		}
	}
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
