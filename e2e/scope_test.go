package e2e

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/sextant/sextant/collector"
	"github.com/sextant/sextant/probes"
	"github.com/sextant/sextant/testbed"
)

// scope is a test's own cgroup: its pipeline decodes only the connections
// of processes started in it, so tests running in parallel (each with its
// own probes, which see the whole host) never count each other's flows.
type scope struct {
	t  *testing.T
	cg *testbed.Cgroup
}

// newScope makes a cgroup named after the test (removed at the end) and a
// pipeline scoped to it.
func newScope(t *testing.T) (*scope, *pipeline) {
	t.Helper()
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	s := &scope{t: t, cg: testbed.NewCgroup(t, name)}
	return s, startPipelineWith(t, collector.Config{Node: "e2e", CgroupScope: s.cg.Path})
}

// peer starts a role of the test binary inside the scope.
func (s *scope) peer(role string, args any) *proc {
	s.t.Helper()
	return startInCgroup(s.t, s.cg, role, role, args)
}

// command starts an external program inside the scope, from its first
// instruction: its pid is the one started here and all of its
// connections are in scope from the first.
func (s *scope) command(name string, argv ...string) *proc {
	s.t.Helper()
	return startProc(s.t, name, s.cg.Command(argv[0], argv[1:]...))
}

// logConns logs, per connection of the given processes, what the kernel
// shipped: records per direction and kind, parse errors with their reason
// and the first records of each. It tells a connection the probes lost
// from one the collector decoded wrongly.
func (pl *pipeline) logConns(pids ...uint32) {
	pl.t.Helper()
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for id, recs := range pl.records {
		if len(recs) == 0 || recs[0].Kind != probes.KindConn || !slices.Contains(pids, recs[0].PID) {
			continue
		}
		var b strings.Builder
		c := recs[0].Conn
		fmt.Fprintf(&b, "conn %d pid %d (%s) %v %v->%v:", id, recs[0].PID, c.Comm, c.Proto, c.Local, c.Remote)
		counts := map[string]int{}
		for _, ev := range recs[1:] {
			counts[fmt.Sprintf("%v %v", ev.Dir, ev.Kind)]++
		}
		keys := slices.Sorted(maps.Keys(counts))
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%d", k, counts[k])
		}
		// the first and last records of it, and every parse error
		for i, ev := range recs {
			if ev.Kind == probes.KindParseError || i < 16 || i >= len(recs)-16 {
				fmt.Fprintf(&b, "\n  %s", describeRecord(ev))
			}
		}
		pl.t.Log(b.String())
	}
}
