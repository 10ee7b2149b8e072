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
	testbed.RequireRoot(t)
	before := bpfFDs(t)
	p, err := Load(Options{KernelStats: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(p.links); got != len(attachPoints) {
		t.Errorf("%d links, want %d", got, len(attachPoints))
	}
	if bpfFDs(t) <= before {
		t.Errorf("no bpf/perf fds while loaded")
	}
	t.Logf("load time %v", p.LoadTime())
	for _, ps := range p.Stats().Programs {
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
}
