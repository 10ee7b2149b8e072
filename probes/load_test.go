package probes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sextant/sextant/testbed"
)

// bpfFDs counts this process's fds of BPF objects and perf events: what
// Close must bring back to where Load found it.
func bpfFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue
		}
		if strings.Contains(target, "bpf") || strings.Contains(target, "perf_event") {
			n++
		}
	}
	return n
}

func TestLoadAttachClose(t *testing.T) {
	forEachCapture(t, func(t *testing.T, capture Capture) {
		testbed.RequireRoot(t)
		before := bpfFDs(t)
		p, err := Load(Options{KernelStats: true, Capture: capture})
		if err != nil {
			t.Fatal(err)
		}
		if p.Capture() != capture {
			t.Errorf("capture %s, want %s", p.Capture(), capture)
		}
		if got, want := len(p.links), len(attachPoints[capture]); got != want {
			t.Errorf("%d links, want %d", got, want)
		}
		if bpfFDs(t) <= before {
			t.Errorf("no bpf/perf fds while loaded")
		}
		t.Logf("load time %v", p.LoadTime())
		progs := p.Stats().Programs
		if len(progs) != len(attachPoints[capture]) {
			t.Errorf("programs %v, want only %v", progs, attachPoints[capture])
		}
		for _, ps := range progs {
			t.Logf("%-16s verified insns %d", ps.Name, ps.Instructions)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if after := bpfFDs(t); after != before {
			t.Errorf("bpf/perf fds: %d before Load, %d after Close", before, after)
		}
		if err := p.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

// Auto picks socket capture on a kernel that has the socket tracepoints.
func TestCaptureAuto(t *testing.T) {
	got, err := chooseCapture(CaptureAuto, false)
	if err != nil {
		t.Fatal(err)
	}
	k, err := kernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	want := CaptureSocket
	if missing(k, socketTracepoints) != nil {
		want = CaptureSyscall
	}
	if got != want {
		t.Errorf("auto chose %s, want %s", got, want)
	}
}
