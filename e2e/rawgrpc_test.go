package e2e

// grpc-go twins of the C-core peer (testdata/ccore_peer.py): the same
// sextant.e2e.Echo service and the same client workload, with raw bytes as
// messages (a codec that passes []byte through, no protobuf, no generated
// code), so that each implementation can play either end against the other.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// echoService is the service both implementations serve.
const echoService = "sextant.e2e.Echo"

func init() {
	peerRoles["rawgrpc-server"] = func([]byte) error { return serveRawGRPC() }
	peerRoles["rawgrpc-client"] = runRawGRPCClient
}

// rawCodec carries messages as they are: *[]byte in, []byte out.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case []byte:
		return m, nil
	case *[]byte:
		return *m, nil
	}
	return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*m = append((*m)[:0], data...)
	return nil
}

// Name is "proto" so that content-type stays application/grpc: C-core
// and grpc-go then see exactly what a generated client would send.
func (rawCodec) Name() string { return "proto" }

// numberAnd parses the "number|rest" requests of the Echo service; a bad
// one is the caller's InvalidArgument.
func numberAnd(req []byte) (int, string, error) {
	a, b, ok := strings.Cut(string(req), "|")
	n, err := strconv.Atoi(a)
	if !ok || err != nil {
		return 0, "", status.Errorf(codes.InvalidArgument, "request %q is not number|rest", req)
	}
	return n, b, nil
}

func unaryHandler(f func(ctx context.Context, req []byte) ([]byte, error)) grpc.MethodHandler {
	return func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		var req []byte
		if err := dec(&req); err != nil {
			return nil, err
		}
		return f(ctx, req)
	}
}

var echoDesc = grpc.ServiceDesc{
	ServiceName: echoService,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Unary", Handler: unaryHandler(func(_ context.Context, req []byte) ([]byte, error) {
			size, _, err := numberAnd(req)
			if err != nil {
				return nil, err
			}
			return bytes.Repeat([]byte{'r'}, size), nil
		})},
		{MethodName: "Fail", Handler: unaryHandler(func(_ context.Context, req []byte) ([]byte, error) {
			code, msg, err := numberAnd(req)
			if err != nil {
				return nil, err
			}
			return nil, status.Error(codes.Code(code), msg)
		})},
		// Slow sleeps without watching its context: had it returned
		// DEADLINE_EXCEEDED when the deadline passed, its trailers would
		// race the client's RST_STREAM. This way the client's reset always
		// ends the call, as with grpc-go's interop server.
		{MethodName: "Slow", Handler: unaryHandler(func(_ context.Context, req []byte) ([]byte, error) {
			ms, err := strconv.Atoi(string(req))
			if err != nil {
				return nil, status.Error(codes.InvalidArgument, err.Error())
			}
			time.Sleep(time.Duration(ms) * time.Millisecond)
			return []byte{}, nil
		})},
	},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		ServerStreams: true,
		Handler: func(_ any, st grpc.ServerStream) error {
			var req []byte
			if err := st.RecvMsg(&req); err != nil {
				return err
			}
			count, size, err := numberAnd(req)
			if err != nil {
				return err
			}
			each, err := strconv.Atoi(size)
			if err != nil {
				return status.Errorf(codes.InvalidArgument, "request %q: size: %v", req, err)
			}
			for i := range count {
				if err := st.SendMsg(bytes.Repeat([]byte{'s'}, each*(i+1))); err != nil {
					return err
				}
			}
			return nil
		},
	}},
}

func serveRawGRPC() error {
	l, err := listenLocal()
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(&echoDesc, nil)
	go func() { _ = srv.Serve(l) }()
	untilStdinCloses()
	srv.Stop()
	return nil
}

// rawGRPCArgs: the workload runs Rounds times on one connection.
type rawGRPCArgs struct {
	Addr   string
	Rounds int
}

// runRawGRPCClient is the workload of ccore_peer.py's client, call for call.
func runRawGRPCClient(raw []byte) error {
	var args rawGRPCArgs
	if err := json.Unmarshal(raw, &args); err != nil {
		return fmt.Errorf("decode args: %w", err)
	}
	cc, err := grpc.NewClient("passthrough:///"+args.Addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		return fmt.Errorf("dial %s: %w", args.Addr, err)
	}
	defer cc.Close()
	method := func(name string) string { return "/" + echoService + "/" + name }
	ctx := context.Background()
	framed := func(b []byte) int { return 5 + len(b) }
	var calls []grpcCall
	for r := range max(args.Rounds, 1) {
		for i := range 10 {
			req := fmt.Appendf(nil, "%d|%s", 10*i+r, bytes.Repeat([]byte{'p'}, 7*i))
			var resp []byte
			if err := cc.Invoke(ctx, method("Unary"), req, &resp); err != nil {
				return fmt.Errorf("unary %d: %w", i, err)
			}
			calls = append(calls, grpcCall{Method: "Unary", ReqBytes: framed(req), RespBytes: framed(resp), ReqMsgs: 1, RespMsgs: 1})
		}
		for _, f := range []struct {
			code codes.Code
			msg  string
		}{{codes.NotFound, "e2e: no such thing"}, {codes.InvalidArgument, fmt.Sprintf("e2e: bad argument %d", r)}, {codes.Internal, ""}} {
			req := fmt.Appendf(nil, "%d|%s", f.code, f.msg)
			var resp []byte
			err := cc.Invoke(ctx, method("Fail"), req, &resp)
			if st := status.Convert(err); st.Code() != f.code || st.Message() != f.msg {
				return fmt.Errorf("fail: got %v, want %v %q", err, f.code, f.msg)
			}
			calls = append(calls, grpcCall{Method: "Fail", ReqBytes: framed(req), ReqMsgs: 1, Code: uint32(f.code), Message: f.msg})
		}
		{
			req := fmt.Appendf(nil, "5|%d", 100+r)
			st, err := cc.NewStream(ctx, &echoDesc.Streams[0], method("Stream"))
			if err != nil {
				return fmt.Errorf("stream: %w", err)
			}
			if err := st.SendMsg(req); err != nil {
				return fmt.Errorf("stream send: %w", err)
			}
			if err := st.CloseSend(); err != nil {
				return fmt.Errorf("stream close: %w", err)
			}
			c := grpcCall{Method: "Stream", ReqBytes: framed(req), ReqMsgs: 1}
			for {
				var resp []byte
				if err := st.RecvMsg(&resp); err != nil {
					if !errors.Is(err, io.EOF) {
						return fmt.Errorf("stream recv: %w", err)
					}
					break
				}
				c.RespMsgs++
				c.RespBytes += framed(resp)
			}
			if c.RespMsgs != 5 {
				return fmt.Errorf("stream: %d messages, want 5", c.RespMsgs)
			}
			calls = append(calls, c)
		}
		{
			req := []byte("3000")
			dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			var resp []byte
			err := cc.Invoke(dctx, method("Slow"), req, &resp)
			cancel()
			if status.Code(err) != codes.DeadlineExceeded {
				return fmt.Errorf("slow: got %v, want DeadlineExceeded", err)
			}
			calls = append(calls, grpcCall{Method: "Slow", ReqBytes: framed(req), ReqMsgs: 1, Code: uint32(codes.DeadlineExceeded), Deadline: true})
		}
	}
	// One more call, so that the last deadline call's RST_STREAM is on the
	// wire before the connection closes.
	req := []byte("1|last")
	var resp []byte
	if err := cc.Invoke(ctx, method("Unary"), req, &resp); err != nil {
		return fmt.Errorf("last unary: %w", err)
	}
	calls = append(calls, grpcCall{Method: "Unary", ReqBytes: framed(req), RespBytes: framed(resp), ReqMsgs: 1, RespMsgs: 1})
	return sayJSON(calls)
}
