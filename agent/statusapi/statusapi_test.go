package statusapi

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Without the stages, every question is answered Unavailable with what
// would run them (the policy and proxy answers with running stages are
// proven by e2e/policy_test.go and e2e/proxy_test.go).
func TestStagesNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	NewServer(func() Sources { return Sources{} }).Register(g)
	go g.Serve(l)
	defer g.Stop()
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := NewClient(cc)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"policy", func() error { _, err := c.Policy(ctx); return err }, "--policy-dir"},
		{"trace", func() error {
			_, err := c.PolicyTrace(ctx, TraceRequest{From: []string{"app=a"}, To: []string{"app=b"}, DPort: 80, Proto: 6})
			return err
		}, "--policy-dir"},
		{"proxy", func() error { _, err := c.Proxy(ctx); return err }, "--proxy-config"},
	} {
		err := tc.call()
		if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), tc.want) {
			t.Errorf("%s: %v, want Unavailable naming %s", tc.name, err, tc.want)
		}
	}
}
