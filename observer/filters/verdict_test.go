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
