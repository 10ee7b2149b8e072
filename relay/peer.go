package relay

import (
	"context"
	"fmt"
	"sync"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sextant/sextant/observer"
	"github.com/sextant/sextant/observer/hubble"
	"github.com/sextant/sextant/observer/link"
	"github.com/sextant/sextant/observer/ring"
	"github.com/sextant/sextant/serve"
)

// callTimeout bounds the unary calls a session starts with.
const callTimeout = 5 * time.Second

// statusInterval is how often a connected agent's ServerStatus is polled
// for GetNodes.
const statusInterval = 5 * time.Second

// peerKey identifies one address of one --agent target.
type peerKey struct{ target, addr string }

// peer is the client of one agent address: it keeps a GetFlows stream open,
// redialing with exponential backoff when it breaks.
type peer struct {
	r          *Relay
	key        peerKey
	serverName string
	cancel     context.CancelFunc
	done       chan struct{}

	// named (guarded by r.mu): the agent told its node name at least once,
	// so GetNodes lists the node rather than this address.
	named bool

	settleOnce sync.Once
}

func (r *Relay) addPeer(ctx context.Context, k peerKey, serverName string) *peer {
	ctx, cancel := context.WithCancel(ctx)
	p := &peer{r: r, key: k, serverName: serverName, cancel: cancel, done: make(chan struct{})}
	r.mu.Lock()
	r.peers[k] = p
	r.mu.Unlock()
	// Registered before the goroutine starts so that the merger knows of
	// every peer of the initial set before any event arrives.
	r.in <- arrival{peer: p, pending: true}
	go func() {
		defer close(p.done)
		defer p.settle()
		p.run(ctx)
	}()
	return p
}

// removePeer stops p; the node it spoke for leaves GetNodes unless another
// address of it took over.
func (r *Relay) removePeer(p *peer) {
	p.cancel()
	<-p.done
	r.mu.Lock()
	delete(r.peers, p.key)
	for _, n := range r.nodes {
		if n.lastPeer == p && n.holder == nil {
			n.gone = true
		}
	}
	r.mu.Unlock()
}

func (p *peer) wait() { <-p.done }

// settle tells the merger, once, that p connected or failed.
func (p *peer) settle() {
	p.settleOnce.Do(func() { p.r.in <- arrival{peer: p, pending: false} })
}

func (p *peer) run(ctx context.Context) {
	log := p.r.log.With("agent", p.key.target, "addr", p.key.addr)
	// A unix socket is secured by its mode, TCP by mTLS.
	creds := insecure.NewCredentials()
	if tc := p.r.opts.AgentTLS; tc != nil && !isSocket(p.key.addr) {
		tc = tc.Clone()
		if tc.ServerName == "" {
			tc.ServerName = p.serverName
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(p.key.addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: p.r.opts.BackoffMin, Multiplier: 2, Jitter: 0.2, MaxDelay: p.r.opts.BackoffMax},
			MinConnectTimeout: callTimeout,
		}))
	if err != nil {
		// Only a malformed target gets here; New validated it.
		log.Error("agent client", "err", err)
		return
	}
	defer conn.Close()
	client := observerpb.NewObserverClient(conn)

	delay := p.r.opts.BackoffMin
	var lastErr string
	for {
		began := time.Now()
		err := p.session(ctx, conn, client)
		p.settle()
		if ctx.Err() != nil {
			return
		}
		// Say it once per outage (and when the reason changes), not on
		// every retry.
		if msg := err.Error(); msg != lastErr || time.Since(began) > p.r.opts.BackoffMax {
			log.Warn("agent unavailable", "err", err, "retry_in", delay)
			lastErr = msg
		} else {
			log.Debug("agent still unavailable", "err", err, "retry_in", delay)
		}
		// A session that lasted proves the agent healthy: start the
		// backoff over rather than punish the next failure.
		if time.Since(began) > p.r.opts.BackoffMax {
			delay = p.r.opts.BackoffMin
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, p.r.opts.BackoffMax)
	}
}

// session asks the agent who it is, claims its node and follows its flows
// until the stream breaks.
func (p *peer) session(ctx context.Context, conn *grpc.ClientConn, client observerpb.ObserverClient) error {
	if err := serve.CheckDial(p.key.addr, p.r.opts.AgentTLS != nil, p.r.opts.AllowInsecure); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	nodes, err := client.GetNodes(cctx, &observerpb.GetNodesRequest{})
	cancel()
	if err != nil {
		return fmt.Errorf("get nodes: %w", err)
	}
	// An agent speaks for exactly one node; anything else (a relay behind a
	// relay) is named by its address.
	name := p.key.addr
	if ns := nodes.GetNodes(); len(ns) == 1 && ns[0].GetName() != "" {
		name = ns[0].GetName()
	}
	n, err := p.r.claim(name, p)
	if err != nil {
		return err
	}
	defer p.r.release(n, p)
	p.refreshStatus(ctx, client, n)

	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	since := n.resumeFrom(p.r.opts.Since)
	stream, err := link.Follow(sctx, conn, link.FollowRequest{Cursor: n.cursor, Since: since})
	if err != nil {
		return fmt.Errorf("follow flows: %w", err)
	}
	p.r.setConnected(n, p, true)
	p.settle()
	defer p.r.setConnected(n, p, false)

	var wg sync.WaitGroup
	defer wg.Wait()
	defer scancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(statusInterval)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
				p.refreshStatus(sctx, client, n)
			}
		}
	}()

	var entries []observer.Entry
	first := true
	for {
		var next ring.Cursor
		entries, next, err = stream.Recv(entries[:0])
		if err != nil {
			return fmt.Errorf("receive flows: %w", err)
		}
		if first && n.cursor.Instance != 0 && next.Instance == n.cursor.Instance {
			p.r.resumed.Add(1)
		}
		first = false
		items := splitHalves(entries, n)
		clear(entries)
		// The cursor moves only once the merger has the batch: a stream
		// that breaks before resumes with it.
		if err := p.hand(ctx, n, items); err != nil {
			return err
		}
		n.cursor = next
	}
}

// hand gives the merger a node's items, waiting for credit (the node's
// share of the sort window) in pieces of at most MaxHeld.
func (p *peer) hand(ctx context.Context, n *node, items []item) error {
	for len(items) > 0 {
		k := min(len(items), n.maxHeld)
		if err := n.credit.Acquire(ctx, int64(k)); err != nil {
			return err
		}
		select {
		case p.r.in <- arrival{node: n, items: items[:k:k]}:
		case <-ctx.Done():
			n.credit.Release(int64(k))
			return ctx.Err()
		}
		items = items[k:]
	}
	return nil
}

// splitHalves turns the entries of a batch into the events to merge: a
// whole flow (an agent's entry) into its request and, when a response was
// seen, its response half; halves (another relay's entries) and lost-event
// notices as they are. It also advances n.latest.
func splitHalves(entries []observer.Entry, n *node) []item {
	items := make([]item, 0, 2*len(entries))
	for _, e := range entries {
		switch {
		case e.Flow == nil:
			if e.Lost.Node == "" {
				e.Lost.Node = n.name
			}
			items = append(items, item{entry: e, time: e.Lost.Time.UnixNano()})
			continue
		case e.Half == observer.Whole:
			req := e
			req.Half = observer.RequestHalf
			items = append(items, item{entry: req, time: e.Flow.Time.UnixNano()})
			if hubble.ResponseSeen(e.Flow) {
				e.Half = observer.ResponseHalf
				items = append(items, item{entry: e, time: hubble.ResponseTime(e.Flow).UnixNano()})
			}
		case e.Half == observer.RequestHalf:
			items = append(items, item{entry: e, time: e.Flow.Time.UnixNano()})
		default:
			items = append(items, item{entry: e, time: hubble.ResponseTime(e.Flow).UnixNano()})
		}
		n.latest = max(n.latest, items[len(items)-1].time)
	}
	return items
}

func (p *peer) refreshStatus(ctx context.Context, client observerpb.ObserverClient, n *node) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	st, err := client.ServerStatus(cctx, &observerpb.ServerStatusRequest{})
	cancel()
	if err != nil {
		return // the stream tells about availability; figures just get older
	}
	p.r.mu.Lock()
	n.status, n.statusAt = st, time.Now()
	p.r.mu.Unlock()
}

// claim makes p the one peer that streams node name. Two addresses of one
// agent (a dual-stack DNS name) would otherwise deliver every event twice.
func (r *Relay) claim(name string, p *peer) (*node, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p.named = true
	n := r.nodes[name]
	if n == nil {
		n = newNode(name, r.opts.DedupeHorizon, r.opts.MaxHeld)
		r.nodes[name] = n
	}
	if n.holder != nil && n.holder != p {
		return nil, fmt.Errorf("node %s is already followed through %s", name, n.holder.key.addr)
	}
	n.holder, n.lastPeer, n.gone = p, p, false
	n.address = p.key.addr
	n.tls = &observerpb.TLS{Enabled: r.opts.AgentTLS != nil, ServerName: p.serverName}
	return n, nil
}

func (r *Relay) release(n *node, p *peer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n.holder == p {
		n.holder = nil
	}
}

// setConnected records n's availability and tells the merger, which waits
// for connected nodes only.
func (r *Relay) setConnected(n *node, p *peer, up bool) {
	r.mu.Lock()
	state := relaypb.NodeState_NODE_UNAVAILABLE
	if up {
		state = relaypb.NodeState_NODE_CONNECTED
	}
	n.state, n.stateSince = state, time.Now()
	r.mu.Unlock()
	r.log.Info("agent state", "node", n.name, "addr", p.key.addr, "state", state)
	// The merger must hear of it even when the relay is stopping, or it
	// could wait for a node that is gone; it drains r.in until then.
	r.in <- arrival{node: n, state: state}
}
