// Package link carries whole flows from an Observer ring (an agent's, or a
// relay's) to a relay: a gRPC service of sextant's own, served next to
// Hubble's Observer service on the same sockets and listeners (so with the
// same mTLS and limits), that streams the ring's entries in batches in a
// compact protobuf form (codec.go). Hubble events cannot carry everything
// a flow has (body sizes, gRPC message counts, outcome, unknown fields),
// and building them for a relay that turns them back into flows would
// cost more than the flow itself: the relay gets the flow.
//
// A follower names where it resumes with a cursor (ring.Cursor): a
// reconnecting relay continues exactly after the last entry it received,
// so nothing is delivered twice and nothing is skipped unless the ring
// overwrote it, which the stream then reports as a lost-event notice
// (HUBBLE_RING_BUFFER) with the number of events. A follower that reads
// slower than the ring fills (backpressure: gRPC flow control holds the
// sender) loses the oldest entries the same way, counted on both sides.
package link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/observer"
	"github.com/sextant/sextant/observer/hubble"
	"github.com/sextant/sextant/observer/ring"
)

// Method is the full gRPC method name of Follow.
const (
	serviceName = "sextant.link.v1.Flows"
	Method      = "/" + serviceName + "/Follow"
)

// Batches are cut at batchEntries entries or batchBytes bytes, whichever
// comes first; a batch that is not full waits up to linger for more, so
// that a trickle of flows does not cost a gRPC message each.
const (
	batchEntries = 512
	batchBytes   = 1 << 20
	linger       = 5 * time.Millisecond
)

// Server serves a ring over the link. Register it on the gRPC server that
// serves the Observer API.
type Server struct {
	ring *ring.Ring[observer.Entry]
	node string
	// done ends every stream once it sent what the ring holds.
	done     chan struct{}
	shutdown sync.Once
}

// NewServer serves r; node names the lost-event notices it makes.
func NewServer(r *ring.Ring[observer.Entry], node string) *Server {
	return &Server{ring: r, node: node, done: make(chan struct{})}
}

// flowsServer is the service's handler type (grpc.ServiceDesc wants one).
type flowsServer interface {
	follow(req *wrapperspb.BytesValue, stream grpc.ServerStream) error
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*flowsServer)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Follow",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			req := new(wrapperspb.BytesValue)
			if err := stream.RecvMsg(req); err != nil {
				return err
			}
			return srv.(flowsServer).follow(req, stream)
		},
	}},
	Metadata: "observer/link/codec.go",
}

// Register adds the service to g.
func (s *Server) Register(g *grpc.Server) { g.RegisterService(&serviceDesc, s) }

// Shutdown ends every stream after it sent the entries written before.
func (s *Server) Shutdown() { s.shutdown.Do(func() { close(s.done) }) }

func (s *Server) follow(raw *wrapperspb.BytesValue, stream grpc.ServerStream) error {
	req, err := DecodeFollowRequest(raw.GetValue())
	if err != nil {
		return statusInvalid(err)
	}
	rd, resumed := s.ring.FollowFrom(req.Cursor)
	defer rd.Close()
	since := req.Since
	if resumed {
		since = time.Time{} // the cursor says exactly where
	}
	ctx := stream.Context()
	var (
		enc  Encoder
		buf  = make([]observer.Entry, batchEntries)
		out  = make([]observer.Entry, 0, batchEntries+1)
		msg  wrapperspb.BytesValue
		wait = time.NewTimer(time.Hour)
	)
	wait.Stop()
	draining := false
	for {
		n, lost := rd.Read(buf)
		out = out[:0]
		if lost > 0 {
			out = append(out, observer.Entry{Lost: &observer.Lost{Time: time.Now(), Node: s.node,
				Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, Count: lost, CPU: -1}})
		}
		for _, e := range buf[:n] {
			if since.IsZero() || lastEventTime(e).Compare(since) >= 0 {
				out = append(out, e)
			}
		}
		clear(buf[:n])
		if n > 0 || lost > 0 {
			msg.Value = enc.Batch(out, rd.Cursor())
			err := stream.SendMsg(&msg)
			clear(out)
			if err != nil {
				return err
			}
		}
		switch {
		case n == len(buf):
			continue // more is waiting
		case draining:
			if n == 0 {
				return nil
			}
			continue
		case n > 0:
			// A batch that was not full: let a few more flows come.
			wait.Reset(linger)
			select {
			case <-wait.C:
			case <-ctx.Done():
				return nil
			case <-s.done:
				draining = true
			}
			continue
		}
		if !rd.Wait(ctx, s.done) {
			if ctx.Err() != nil {
				return nil
			}
			draining = true
		}
	}
}

// lastEventTime is the time of the entry's last Hubble event: a flow
// whose response comes after since is sent whole.
func lastEventTime(e observer.Entry) time.Time {
	switch {
	case e.Flow == nil:
		return e.Lost.Time
	case e.Half == observer.RequestHalf:
		return e.Flow.Time
	}
	return hubble.ResponseTime(e.Flow)
}

func statusInvalid(err error) error { return status.Error(codes.InvalidArgument, err.Error()) }

// Stream is one follow stream of a client.
type Stream struct {
	cs  grpc.ClientStream
	dec Decoder
	msg wrapperspb.BytesValue
}

// Follow opens a stream on conn from req.
func Follow(ctx context.Context, conn grpc.ClientConnInterface, req FollowRequest) (*Stream, error) {
	cs, err := conn.NewStream(ctx, &serviceDesc.Streams[0], Method)
	if err != nil {
		return nil, err
	}
	if err := cs.SendMsg(&wrapperspb.BytesValue{Value: AppendFollowRequest(nil, req)}); err != nil {
		return nil, err
	}
	if err := cs.CloseSend(); err != nil {
		return nil, err
	}
	return &Stream{cs: cs}, nil
}

// ErrEnded is returned by Recv when the server ended the stream.
var ErrEnded = errors.New("the server ended the stream")

// Recv waits for the next batch and appends its entries to into; next is
// the cursor after them (where a new stream resumes).
func (s *Stream) Recv(into []observer.Entry) (entries []observer.Entry, next ring.Cursor, err error) {
	if err := s.cs.RecvMsg(&s.msg); err != nil {
		if errors.Is(err, io.EOF) {
			return into, next, ErrEnded
		}
		return into, next, err
	}
	entries, next, err = s.dec.Batch(s.msg.GetValue(), into)
	if err != nil {
		return into, next, fmt.Errorf("receive: %w", err)
	}
	return entries, next, nil
}
