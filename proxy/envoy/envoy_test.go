package envoy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sextant/sextant/proxy/config"
	"github.com/sextant/sextant/proxy/xds"
)

// standInEnv makes the test binary play the Envoy binary's part the
// launcher sees (no Envoy binary exists on this machine): it reads the
// bootstrap with Envoy's own proto types, strictly, and serves the admin
// endpoints the launcher uses (/ready, /quitquitquit) on the admin
// socket. It proves the launcher's process handling, not Envoy.
const standInEnv = "SEXTANT_ENVOY_STAND_IN"

func TestMain(m *testing.M) {
	if os.Getenv(standInEnv) != "" {
		os.Exit(standIn())
	}
	os.Exit(m.Run())
}

func standIn() int {
	var file string
	for i, a := range os.Args {
		if a == "-c" && i+1 < len(os.Args) {
			file = os.Args[i+1]
		}
	}
	js, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stand-in:", err)
		return 1
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		fmt.Fprintln(os.Stderr, "stand-in: bootstrap:", err)
		return 1
	}
	if err := config.ValidateResource(&b); err != nil {
		fmt.Fprintln(os.Stderr, "stand-in: bootstrap:", err)
		return 1
	}
	l, err := net.Listen("unix", b.GetAdmin().GetAddress().GetPipe().GetPath())
	if err != nil {
		fmt.Fprintln(os.Stderr, "stand-in: admin:", err)
		return 1
	}
	quit := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "LIVE") })
	mux.HandleFunc("/quitquitquit", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "OK"); close(quit) })
	go http.Serve(l, mux)
	<-quit
	return 0
}

func sockets(dir string) BootstrapOptions {
	return BootstrapOptions{XDSSocket: filepath.Join(dir, "xds.sock"), ALSSocket: filepath.Join(dir, "als.sock"), AdminSocket: filepath.Join(dir, "admin.sock")}
}

func TestBootstrapValidates(t *testing.T) {
	o := sockets("/run/sextant")
	js, err := BootstrapJSON(o)
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		t.Fatal(err)
	}
	if err := config.ValidateResource(&b); err != nil {
		t.Fatal(err)
	}
	if xds.ProfileOf(b.GetNode()) != xds.Envoy {
		t.Error("the node does not classify as Envoy")
	}
	if b.GetAdmin().GetAddress().GetPipe().GetPath() != o.AdminSocket {
		t.Errorf("admin %v", b.GetAdmin())
	}
	clusters := map[string]string{}
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetPipe().GetPath()
	}
	if clusters["sextant-xds"] != o.XDSSocket || clusters[xds.ALSCluster] != o.ALSSocket {
		t.Errorf("static clusters %v", clusters)
	}
	if b.GetDynamicResources().GetAdsConfig().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "sextant-xds" ||
		b.GetDynamicResources().GetLdsConfig().GetAds() == nil || b.GetDynamicResources().GetCdsConfig().GetAds() == nil {
		t.Errorf("dynamic resources %v", b.GetDynamicResources())
	}
	o.ALSSocket = ""
	if _, err := Bootstrap(o); err == nil {
		t.Error("bootstrap without an ALS socket accepted")
	}
}

func TestNoBinaryIsAClearError(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, path := range []string{"", "/nonexistent/envoy", t.TempDir()} {
		_, err := New(Options{Binary: path, Dir: t.TempDir(), Bootstrap: sockets(t.TempDir())})
		if !errors.Is(err, ErrNoEnvoy) {
			t.Errorf("binary %q: %v, want ErrNoEnvoy", path, err)
		}
	}
	if st := MissingStatus(ErrNoEnvoy); st.State != StateMissing {
		t.Errorf("status %+v", st)
	}
}

func TestLauncherWaitsForReadyAndRestarts(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(standInEnv, "1")
	dir := t.TempDir()
	l, err := New(Options{Binary: exe, Dir: dir, Bootstrap: sockets(dir), MinBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	waitReady := func() {
		select {
		case <-l.Ready():
		case <-time.After(30 * time.Second):
			t.Fatalf("not ready: %+v", l.Status())
		}
	}
	waitReady()
	first := l.Status()
	if first.State != StateReady || first.PID == 0 {
		t.Fatalf("status %+v", first)
	}
	// Envoy exits (as /quitquitquit makes it): restarted, ready again.
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(dir, "admin.sock"))
	}}}
	resp, err := c.Post("http://envoy/quitquitquit", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	deadline := time.Now().Add(30 * time.Second)
	for l.Status().Restarts == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	waitReady()
	if st := l.Status(); st.Restarts != 1 || st.PID == first.PID || st.State != StateReady {
		t.Errorf("after an exit: %+v (first pid %d)", st, first.PID)
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
	if st := l.Status(); st.State != StateStopped {
		t.Errorf("after cancel: %+v", st)
	}
}
