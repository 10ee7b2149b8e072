package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sextant/sextant/cmd/sextant/printer"
)

// defaultLast is how many flows observe prints without --last, --first,
// --since or --follow (as hubble observe).
const defaultLast = 20

// observeFlags are observe's options; the filter flags build one FlowFilter
// whose fields must all match, as `hubble observe` does.
type observeFlags struct {
	serverFlags
	last, first  int
	follow       bool
	since, until string
	output       string

	httpStatus, httpMethod, httpPath, httpURL []string
	protocol, fromIP, toIP, fromPort, toPort  []string
	fromLabel, toLabel, node                  []string
}

func newObserveCmd() *cobra.Command { return observeCmd(&observeFlags{}) }

func observeCmd(o *observeFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "observe",
		Short: "Print flows from a running agent or relay",
		Long: `Print flows from the Observer API of an agent or a relay (the API of Cilium
Hubble: the hubble CLI works too): the last 20 by default, with --follow every
new one as it happens.

An exchange is two events: the request (at request start) and the response
(at its end, with status and latency). Compact output, one event per line:

  TIME [NODE]: SOURCE -> DESTINATION TYPE VERDICT (SUMMARY)

The observed process is written next to its address as (comm:pid).

Filters: each flag may be repeated (any value matches); different flags must
all match.`,
		Example: `  sextant observe                         # the last 20 events
  sextant observe --last 100 -o json
  sextant observe -f --http-status 5+     # follow server errors
  sextant observe --since 5m --http-path '^/api/' -o table
  sextant observe --server 127.0.0.1:4245 # a relay`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := o.request(cmd, time.Now())
			if err != nil {
				return err
			}
			format, err := printer.ParseFormat(o.output)
			if err != nil {
				return usageErrorf("-o: %v", err)
			}
			return o.run(cmd.Context(), req, cmd.OutOrStdout(), format)
		},
	}
	f := cmd.Flags()
	o.serverFlags.register(f)
	f.IntVar(&o.last, "last", 0, fmt.Sprintf("print the last N matching flows (default %d unless --follow, --first or --since)", defaultLast))
	f.IntVar(&o.first, "first", 0, "print the oldest N matching flows held")
	f.BoolVarP(&o.follow, "follow", "f", false, "keep printing new flows until interrupted")
	f.StringVar(&o.since, "since", "", "only flows since this time: a duration back from now (5m) or RFC 3339")
	f.StringVar(&o.until, "until", "", "only flows until this time: a duration back from now (1m) or RFC 3339")
	f.StringVarP(&o.output, "output", "o", string(printer.Compact), "output format: compact, table or json")
	f.StringSliceVar(&o.httpStatus, "http-status", nil, `HTTP status: "200", "5+" (5xx), "40+" (400-409)`)
	f.StringSliceVar(&o.httpMethod, "http-method", nil, "HTTP method, e.g. GET")
	f.StringSliceVar(&o.httpPath, "http-path", nil, "HTTP path (regular expression)")
	f.StringSliceVar(&o.httpURL, "http-url", nil, "HTTP URL (regular expression)")
	f.StringSliceVar(&o.protocol, "protocol", nil, "protocol, e.g. http, tcp")
	f.StringSliceVar(&o.fromIP, "from-ip", nil, "source IP or CIDR")
	f.StringSliceVar(&o.toIP, "to-ip", nil, "destination IP or CIDR")
	f.StringSliceVar(&o.fromPort, "from-port", nil, "source port")
	f.StringSliceVar(&o.toPort, "to-port", nil, "destination port")
	f.StringSliceVar(&o.fromLabel, "from-label", nil, `source label selector, e.g. "sextant.io/comm=curl"`)
	f.StringSliceVar(&o.toLabel, "to-label", nil, "destination label selector")
	f.StringSliceVar(&o.node, "node-name", nil, "node name (relay)")
	return cmd
}

// request builds the GetFlows request as the hubble CLI would.
func (o *observeFlags) request(cmd *cobra.Command, now time.Time) (*observerpb.GetFlowsRequest, error) {
	req := &observerpb.GetFlowsRequest{Follow: o.follow}
	switch {
	case o.last < 0:
		return nil, usageErrorf("--last %d: want a number >= 0", o.last)
	case o.first < 0:
		return nil, usageErrorf("--first %d: want a number >= 0", o.first)
	case cmd.Flags().Changed("first") && cmd.Flags().Changed("last"):
		return nil, usageErrorf("--first and --last exclude each other")
	case cmd.Flags().Changed("first") && o.follow:
		return nil, usageErrorf("--first and --follow exclude each other")
	case cmd.Flags().Changed("first"):
		req.First, req.Number = true, uint64(o.first)
	case cmd.Flags().Changed("last"):
		req.Number = uint64(o.last)
	case !o.follow && o.since == "":
		req.Number = defaultLast
	}
	var err error
	if req.Since, err = parseTime("--since", o.since, now); err != nil {
		return nil, err
	}
	if req.Until, err = parseTime("--until", o.until, now); err != nil {
		return nil, err
	}

	ff := &flowpb.FlowFilter{
		HttpStatusCode:   o.httpStatus,
		HttpMethod:       o.httpMethod,
		HttpPath:         o.httpPath,
		HttpUrl:          o.httpURL,
		Protocol:         o.protocol,
		SourceIp:         o.fromIP,
		DestinationIp:    o.toIP,
		SourcePort:       o.fromPort,
		DestinationPort:  o.toPort,
		SourceLabel:      o.fromLabel,
		DestinationLabel: o.toLabel,
		NodeName:         o.node,
	}
	for _, p := range append(append([]string{}, o.fromPort...), o.toPort...) {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return nil, usageErrorf("port %q: want a number from 1 to 65535", p)
		}
	}
	if !isEmpty(ff) {
		req.Whitelist = []*flowpb.FlowFilter{ff}
	}
	return req, nil
}

func isEmpty(ff *flowpb.FlowFilter) bool {
	return len(ff.HttpStatusCode)+len(ff.HttpMethod)+len(ff.HttpPath)+len(ff.HttpUrl)+len(ff.Protocol)+
		len(ff.SourceIp)+len(ff.DestinationIp)+len(ff.SourcePort)+len(ff.DestinationPort)+
		len(ff.SourceLabel)+len(ff.DestinationLabel)+len(ff.NodeName) == 0
}

// parseTime reads "5m" (that long ago) or an RFC 3339 time.
func parseTime(flag, v string, now time.Time) (*timestamppb.Timestamp, error) {
	if v == "" {
		return nil, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return nil, usageErrorf("%s %s: want a positive duration (how long ago)", flag, v)
		}
		return timestamppb.New(now.Add(-d)), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.Local); err == nil {
			return timestamppb.New(t), nil
		}
	}
	return nil, usageErrorf("%s %q: want a duration (5m) or an RFC 3339 time (2006-01-02T15:04:05Z)", flag, v)
}

func (o *observeFlags) run(ctx context.Context, req *observerpb.GetFlowsRequest, w io.Writer, format printer.Format) error {
	conn, err := o.dial()
	if err != nil {
		return err
	}
	defer conn.Close()

	out := bufio.NewWriter(w)
	defer out.Flush()
	p := printer.New(out, format)
	defer p.Flush()

	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, req)
	if err != nil {
		return o.explain(err)
	}
	for {
		e, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if req.Follow && req.Until == nil {
				return fmt.Errorf("%s ended the stream (stopped?)", o.server)
			}
			return nil
		}
		if err != nil {
			if ctx.Err() != nil || status.Code(err) == codes.Canceled {
				return nil // interrupted
			}
			return o.explain(err)
		}
		if err := p.Print(e); err != nil {
			return err
		}
		// Following is interactive: show each event as it arrives.
		if req.Follow {
			if err := p.Flush(); err != nil {
				return err
			}
			if err := out.Flush(); err != nil {
				return err
			}
		}
	}
}
