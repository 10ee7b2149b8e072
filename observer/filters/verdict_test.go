package filters

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func TestVerdict(t *testing.T) {
	fwd := &flowpb.Flow{Verdict: flowpb.Verdict_FORWARDED}
	if !match(t, &flowpb.FlowFilter{Verdict: []flowpb.Verdict{flowpb.Verdict_FORWARDED}}, fwd) {
		t.Error("FORWARDED did not match")
	}
	if match(t, &flowpb.FlowFilter{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED, flowpb.Verdict_ERROR}}, fwd) {
		t.Error("DROPPED/ERROR matched FORWARDED")
	}
}

func TestDropReasonDesc(t *testing.T) {
	denied := &flowpb.Flow{Verdict: flowpb.Verdict_DROPPED, DropReasonDesc: flowpb.DropReason_POLICY_DENIED}
	audited := &flowpb.Flow{Verdict: flowpb.Verdict_AUDIT, DropReasonDesc: flowpb.DropReason_POLICY_DENIED}
	for _, c := range []struct {
		name    string
		reasons []flowpb.DropReason
		f       *flowpb.Flow
		want    bool
	}{
		{"dropped, reason listed", []flowpb.DropReason{flowpb.DropReason_POLICY_DENY, flowpb.DropReason_POLICY_DENIED}, denied, true},
		{"dropped, other reason", []flowpb.DropReason{flowpb.DropReason_POLICY_DENY}, denied, false},
		{"not dropped", []flowpb.DropReason{flowpb.DropReason_POLICY_DENIED}, audited, false},
	} {
		if got := match(t, &flowpb.FlowFilter{DropReasonDesc: c.reasons}, c.f); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestIdentity(t *testing.T) {
	f := &flowpb.Flow{Source: &flowpb.Endpoint{Identity: 256}, Destination: &flowpb.Endpoint{Identity: 2}}
	noDst := &flowpb.Flow{Source: &flowpb.Endpoint{Identity: 256}}
	for _, c := range []struct {
		name string
		ff   *flowpb.FlowFilter
		f    *flowpb.Flow
		want bool
	}{
		{"source", &flowpb.FlowFilter{SourceIdentity: []uint32{1, 256}}, f, true},
		{"source, other", &flowpb.FlowFilter{SourceIdentity: []uint32{2}}, f, false},
		{"destination", &flowpb.FlowFilter{DestinationIdentity: []uint32{2}}, f, true},
		{"both must match", &flowpb.FlowFilter{SourceIdentity: []uint32{256}, DestinationIdentity: []uint32{3}}, f, false},
		{"no destination endpoint", &flowpb.FlowFilter{DestinationIdentity: []uint32{0}}, noDst, false},
	} {
		if got := match(t, c.ff, c.f); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
