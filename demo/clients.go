package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const userAgent = "sextant-demo/1"

// demoSecret is sent as Authorization on some calls so that users can see
// sextant drop it.
const demoSecret = "Bearer demo-secret-token"

// clients hold one connection pool per protocol.
type clients struct {
	httpBase string
	h2c      *http.Client // HTTP/2 with prior knowledge over plain TCP
	h1       *http.Client // HTTP/1.1 to the same service
	grpcConn *grpc.ClientConn
	grpc     testgrpc.TestServiceClient
	log      *lineWriter
}

func newClients(httpAddr, grpcAddr string, log *lineWriter) (*clients, error) {
	var h2c, h1 http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	h1.SetHTTP1(true)
	conn, err := grpc.NewClient(grpcAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent(userAgent))
	if err != nil {
		return nil, fmt.Errorf("grpc client for %s: %w", grpcAddr, err)
	}
	return &clients{
		httpBase: "http://" + httpAddr,
		h2c:      &http.Client{Transport: &http.Transport{Protocols: &h2c}, Timeout: 5 * time.Second},
		h1:       &http.Client{Transport: &http.Transport{Protocols: &h1}, Timeout: 5 * time.Second},
		grpcConn: conn,
		grpc:     testgrpc.NewTestServiceClient(conn),
		log:      log,
	}, nil
}

func (c *clients) close() {
	c.h2c.CloseIdleConnections()
	c.h1.CloseIdleConnections()
	c.grpcConn.Close()
}

// loop makes one of its calls per tick, in turn.
type loop struct {
	every time.Duration
	calls []func(context.Context)
}

func (l loop) run(ctx context.Context) {
	tick := time.NewTicker(l.every)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		l.calls[i%len(l.calls)](ctx)
	}
}

// loops are the three clients: h2c and gRPC at rate, HTTP/1.1 now and then.
func (c *clients) loops(rate float64) []loop {
	every := time.Duration(float64(time.Second) / rate)
	users := func(client *http.Client, name string, header http.Header) func(context.Context) {
		return func(ctx context.Context) {
			c.http(ctx, client, name, http.MethodGet, fmt.Sprintf("/api/users/%d", 1+rand.IntN(100)), "", header)
		}
	}
	get := func(client *http.Client, name, path string) func(context.Context) {
		return func(ctx context.Context) { c.http(ctx, client, name, http.MethodGet, path, "", nil) }
	}
	order := func(client *http.Client, name string) func(context.Context) {
		return func(ctx context.Context) {
			c.http(ctx, client, name, http.MethodPost, "/api/orders", `{"item":"compass","qty":1}`,
				http.Header{"Content-Type": {"application/json"}})
		}
	}
	secret := http.Header{"Authorization": {demoSecret}, "Cookie": {"session=demo-secret-cookie"}}
	return []loop{
		{every: every, calls: []func(context.Context){
			users(c.h2c, "h2c", nil),
			order(c.h2c, "h2c"),
			get(c.h2c, "h2c", "/api/slow"),
			users(c.h2c, "h2c", secret),
			get(c.h2c, "h2c", "/api/fail"),
			get(c.h2c, "h2c", "/api/missing"),
		}},
		{every: 4 * every, calls: []func(context.Context){
			users(c.h1, "http1", nil),
			order(c.h1, "http1"),
			get(c.h1, "http1", "/api/missing"),
		}},
		{every: every, calls: []func(context.Context){
			c.unary, c.serverStream, c.bidi, c.notFound, c.deadline,
		}},
	}
}

// http makes one HTTP call and logs its outcome.
func (c *clients) http(ctx context.Context, client *http.Client, name, method, path, body string, header http.Header) {
	req, err := http.NewRequestWithContext(ctx, method, c.httpBase+path, strings.NewReader(body))
	if err != nil {
		c.log.printf("client=%s method=%s path=%s error=%q", name, method, path, err)
		return
	}
	if body == "" {
		req.Body = nil
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", userAgent)
	if tp, ok := maybeTraceParent(); ok {
		req.Header.Set("Traceparent", tp)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if ctx.Err() != nil {
		return // Run is stopping
	}
	if err != nil {
		c.log.printf("client=%s method=%s path=%s error=%q", name, method, path, err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.log.printf("client=%s proto=%s method=%s path=%s status=%d took=%s",
		name, resp.Proto, method, path, resp.StatusCode, time.Since(start).Round(time.Microsecond))
}

// grpcCall makes one gRPC call with a deadline and logs its status.
func (c *clients) grpcCall(ctx context.Context, method string, timeout time.Duration, call func(context.Context) error) {
	callCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if tp, ok := maybeTraceParent(); ok {
		callCtx = metadata.AppendToOutgoingContext(callCtx, "traceparent", tp)
	}
	start := time.Now()
	err := call(callCtx)
	if ctx.Err() != nil {
		return // Run is stopping
	}
	c.log.printf("client=grpc proto=grpc method=%s status=%s took=%s",
		method, status.Code(err), time.Since(start).Round(time.Microsecond))
}

func (c *clients) unary(ctx context.Context) {
	c.grpcCall(ctx, testgrpc.TestService_UnaryCall_FullMethodName, 2*time.Second, func(ctx context.Context) error {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", demoSecret)
		_, err := c.grpc.UnaryCall(ctx, &testgrpc.SimpleRequest{
			ResponseType: testgrpc.PayloadType_COMPRESSABLE,
			ResponseSize: 128,
			Payload:      &testgrpc.Payload{Body: make([]byte, 64)},
		})
		return err
	})
}

// notFound asks the interop server to fail with NOT_FOUND.
func (c *clients) notFound(ctx context.Context) {
	c.grpcCall(ctx, testgrpc.TestService_UnaryCall_FullMethodName, 2*time.Second, func(ctx context.Context) error {
		_, err := c.grpc.UnaryCall(ctx, &testgrpc.SimpleRequest{
			ResponseStatus: &testgrpc.EchoStatus{Code: 5, Message: "no such user"},
		})
		return err
	})
}

// serverStream receives three messages.
func (c *clients) serverStream(ctx context.Context) {
	c.grpcCall(ctx, testgrpc.TestService_StreamingOutputCall_FullMethodName, 2*time.Second, func(ctx context.Context) error {
		stream, err := c.grpc.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{
			ResponseParameters: []*testgrpc.ResponseParameters{{Size: 10}, {Size: 200}, {Size: 3000}},
		})
		if err != nil {
			return err
		}
		return drain(stream.Recv)
	})
}

// bidi plays two rounds of ping-pong.
func (c *clients) bidi(ctx context.Context) {
	c.grpcCall(ctx, testgrpc.TestService_FullDuplexCall_FullMethodName, 2*time.Second, func(ctx context.Context) error {
		stream, err := c.grpc.FullDuplexCall(ctx)
		if err != nil {
			return err
		}
		for _, size := range []int32{16, 512} {
			err := stream.Send(&testgrpc.StreamingOutputCallRequest{
				ResponseParameters: []*testgrpc.ResponseParameters{{Size: size}},
				Payload:            &testgrpc.Payload{Body: make([]byte, size)},
			})
			if err != nil {
				return err
			}
			if _, err := stream.Recv(); err != nil {
				return err
			}
		}
		if err := stream.CloseSend(); err != nil {
			return err
		}
		return drain(stream.Recv)
	})
}

// deadline asks for a message 300ms away with a 100ms deadline: the client
// gives up with DEADLINE_EXCEEDED (and resets the stream).
func (c *clients) deadline(ctx context.Context) {
	c.grpcCall(ctx, testgrpc.TestService_StreamingOutputCall_FullMethodName, 100*time.Millisecond, func(ctx context.Context) error {
		stream, err := c.grpc.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{
			ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1, IntervalUs: 300_000}},
		})
		if err != nil {
			return err
		}
		return drain(stream.Recv)
	})
}

// drain receives until the stream ends; io.EOF is a clean end.
func drain[T any](recv func() (T, error)) error {
	for {
		if _, err := recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// maybeTraceParent returns a fresh W3C traceparent for half of the calls.
func maybeTraceParent() (string, bool) {
	if rand.IntN(2) == 0 {
		return "", false
	}
	return fmt.Sprintf("00-%016x%016x-%016x-01", rand.Uint64(), rand.Uint64(), rand.Uint64()), true
}
