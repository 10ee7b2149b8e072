package filters

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func TestNodeName(t *testing.T) {
	tests := []struct {
		pattern, node string
		want          bool
	}{
		{"node-1", "node-1", true},
		{"node-1", "node-10", false},
		{"node-*", "node-10", true},
		{"*", "node-1", true},
		{"default/node-1", "node-1", true}, // bare names are in the default cluster
		{"prod/node-1", "node-1", false},
		{"prod/", "prod/node-1", true},
		{"/node-1", "prod/node-1", true},
		{"*.example.com", "a.example.com", true},
		{"node-1", "", false},
	}
	for _, tt := range tests {
		if got := match(t, &flowpb.FlowFilter{NodeName: []string{tt.pattern}}, &flowpb.Flow{NodeName: tt.node}); got != tt.want {
			t.Errorf("%q on %q: got %v, want %v", tt.pattern, tt.node, got, tt.want)
		}
	}
	if !match(t, &flowpb.FlowFilter{NodeName: []string{"a", "node-*"}}, &flowpb.Flow{NodeName: "node-3"}) {
		t.Error("patterns must OR")
	}
	for _, bad := range []string{"", "a/b/c", "node_$", "a.."} {
		if _, err := Build([]*flowpb.FlowFilter{{NodeName: []string{bad}}}, nil); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}
