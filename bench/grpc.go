package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// childGRPCArg makes the bench binary run as the gRPC interop TestService
// server: a process of its own, so the agent observes client and server
// apart, as it would two services.
const childGRPCArg = "__sextant_bench_grpc_server"

// streamMessages is how many messages a server-streaming call receives.
const streamMessages = 4

// runChildGRPCServer serves the interop TestService on a loopback port and
// prints "PORT <n>" once it listens; SIGTERM or EOF on stdin ends it.
func runChildGRPCServer() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, interop.NewTestServer())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	fmt.Printf("PORT %d\n", l.Addr().(*net.TCPAddr).Port)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, os.Interrupt)
	eof := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(eof) }()
	select {
	case <-term:
	case <-eof:
	case err := <-done:
		return err
	}
	srv.Stop()
	return nil
}

// grpcServer is the running interop server child.
type grpcServer struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	port  int
}

func startGRPCServer(ctx context.Context, pol *benchPolicy) (*grpcServer, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, childGRPCArg)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pol.inCgroup(cmd.SysProcAttr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start gRPC server: %w", err)
	}
	s := &grpcServer{cmd: cmd, stdin: stdin}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err == nil {
		_, err = fmt.Sscanf(line, "PORT %d", &s.port)
	}
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("gRPC server child said %q: %w", line, err)
	}
	return s, nil
}

func (s *grpcServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	s.stdin.Close()
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// grpcRun is the load of a gRPC workload: open-loop calls at a fixed rate
// (or, at rate 0, as fast as clients×streams concurrent callers go) spread
// over `clients` connections made for this run, so that the agent sees
// their prefaces.
type grpcRun struct {
	addr             string
	call             string // "unary" or "stream"
	rate             int    // calls/s; 0: saturation
	bodyBytes        int    // response payload per message
	clients, streams int
}

// run makes n calls and returns each call's latency (from sending to the
// end of the response, trailers included) and the wall time of the run.
func (g grpcRun) run(ctx context.Context, n int) (latencies, time.Duration, error) {
	var conns []testgrpc.TestServiceClient
	for range max(g.clients, 1) {
		cc, err := grpc.NewClient(g.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, 0, err
		}
		defer cc.Close()
		cc.Connect()
		conns = append(conns, testgrpc.NewTestServiceClient(cc))
	}
	lat := make(latencies, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	one := func(i int) {
		defer wg.Done()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		start := time.Now()
		errs[i] = g.call1(cctx, conns[i%len(conns)])
		lat[i] = time.Since(start)
	}
	start := time.Now()
	if g.rate > 0 {
		// Open loop: call i starts at start + i/rate whatever the earlier
		// calls do, as h2load --rps does.
		for i := range n {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(g.rate))); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					wg.Wait()
					return nil, 0, ctx.Err()
				}
			}
			wg.Add(1)
			go one(i)
		}
	} else {
		next := make(chan int)
		for range max(g.clients*g.streams, 1) {
			go func() {
				for i := range next {
					one(i)
				}
			}()
		}
		for i := range n {
			wg.Add(1)
			next <- i
		}
		close(next)
	}
	wg.Wait()
	wall := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return nil, 0, fmt.Errorf("gRPC %s calls to %s: %w", g.call, g.addr, err)
	}
	lat.sort()
	return lat, wall, nil
}

func (g grpcRun) call1(ctx context.Context, c testgrpc.TestServiceClient) error {
	if g.call == "unary" {
		_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{
			ResponseSize: int32(g.bodyBytes),
			Payload:      &testgrpc.Payload{Body: make([]byte, 64)},
		})
		return err
	}
	params := make([]*testgrpc.ResponseParameters, streamMessages)
	for i := range params {
		params[i] = &testgrpc.ResponseParameters{Size: int32(g.bodyBytes)}
	}
	stream, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		return err
	}
	got := 0
	for {
		if _, err := stream.Recv(); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		got++
	}
	if got != streamMessages {
		return fmt.Errorf("stream: %d messages, want %d", got, streamMessages)
	}
	return nil
}
