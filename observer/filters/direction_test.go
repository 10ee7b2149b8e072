package filters

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/flow"
)

func TestTrafficDirection(t *testing.T) {
	serverReq, _ := exchange(t, "GET", "/", 200, flow.SideServer)
	clientReq, _ := exchange(t, "GET", "/", 200, flow.SideClient)
	ingress := &flowpb.FlowFilter{TrafficDirection: []flowpb.TrafficDirection{flowpb.TrafficDirection_INGRESS}}
	if !match(t, ingress, serverReq) || match(t, ingress, clientReq) {
		t.Error("ingress must match the server's view only")
	}
	egress := &flowpb.FlowFilter{TrafficDirection: []flowpb.TrafficDirection{flowpb.TrafficDirection_EGRESS}}
	if match(t, egress, serverReq) || !match(t, egress, clientReq) {
		t.Error("egress must match the client's view only")
	}
}

func TestReply(t *testing.T) {
	req, resp := exchange(t, "GET", "/", 200, flow.SideServer)
	replies := &flowpb.FlowFilter{Reply: []bool{true}}
	requests := &flowpb.FlowFilter{Reply: []bool{false}}
	if match(t, replies, req) || !match(t, replies, resp) || !match(t, requests, req) || match(t, requests, resp) {
		t.Error("reply filter mismatched request/response")
	}
	unknown := &flowpb.Flow{}
	if match(t, requests, unknown) || match(t, replies, unknown) {
		t.Error("unknown is_reply matched")
	}
	dropped := &flowpb.Flow{Verdict: flowpb.Verdict_DROPPED}
	if !match(t, requests, dropped) {
		t.Error("dropped event with unknown is_reply must count as non-reply")
	}
	if !match(t, replies, &flowpb.Flow{IsReply: wrapperspb.Bool(true)}) {
		t.Error("is_reply true did not match")
	}
}
