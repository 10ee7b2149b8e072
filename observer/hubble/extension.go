package hubble

import (
	"encoding/json"
	"fmt"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/flow"
)

// A Hubble event cannot carry everything sextant knows about an exchange
// (body sizes, gRPC message counts, outcome, unknown fields, TTFB). The
// relay's exporters need all of it, so the last event of an exchange
// carries the whole flow in Flow.Extensions: a BytesValue holding the flow
// as JSON (a well-known type, so any Hubble client can still decode the
// event). Exactly one event per exchange carries it.

// AttachFlow puts f into ev's extensions.
func AttachFlow(ev *flowpb.Flow, f *flow.Flow) error {
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode flow extension: %w", err)
	}
	ext, err := anypb.New(wrapperspb.Bytes(b))
	if err != nil {
		return fmt.Errorf("pack flow extension: %w", err)
	}
	ev.Extensions = ext
	return nil
}

// FlowOf returns the flow an event carries, if it carries one.
func FlowOf(ev *flowpb.Flow) (*flow.Flow, error) {
	ext := ev.GetExtensions()
	if ext == nil {
		return nil, nil
	}
	var b wrapperspb.BytesValue
	if err := ext.UnmarshalTo(&b); err != nil {
		return nil, fmt.Errorf("flow extension %s: %w", ext.GetTypeUrl(), err)
	}
	f := new(flow.Flow)
	if err := json.Unmarshal(b.GetValue(), f); err != nil {
		return nil, fmt.Errorf("decode flow extension: %w", err)
	}
	return f, nil
}
