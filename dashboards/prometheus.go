package dashboards

import "strings"

// The Prometheus dashboards read the metrics of docs/metrics.md. The
// agent's node is the scrape target: its `instance` label (relabel it to
// the node name in the scrape config to see names instead of addresses).

const (
	nodeSel  = `instance=~"$node"`
	agentSel = `component="agent", instance=~"$node"`
	relaySel = `component="relay"`
	httpSel  = `instance=~"$node", service=~"$service", http_route=~"$route"`
	rpcSel   = `instance=~"$node", service=~"$service", rpc_service=~"$rpc_service", rpc_method=~"$rpc_method"`
	httpName = `http_${observer}_request_duration_seconds`
	rpcName  = `rpc_${observer}_call_duration_seconds`
)

// sel fills {…} of a selector with extra matchers.
func sel(base string, extra ...string) string {
	return "{" + strings.Join(append([]string{base}, extra...), ", ") + "}"
}

func rate(metric, selector string) string {
	return "rate(" + metric + selector + "[$__rate_interval])"
}

// ratio is errors/all per group; groups without errors show 0, not nothing.
func ratio(by, metric, all, errs string) string {
	return "(sum by (" + by + ") (" + rate(metric, errs) + ") or sum by (" + by + ") (" + rate(metric, all) + ") * 0)\n  / sum by (" +
		by + ") (" + rate(metric, all) + ")"
}

// grpcFailures is the rate of gRPC calls that completed with a status other
// than OK, as http_route series (/package.Service/Method) limited to the
// selected routes. The http_* metrics count such a call as a success (its
// HTTP status is 200); rpc_* carry the status in error_type. Calls that did
// not complete are already errors in http_* and are not counted again.
func grpcFailures(by string) string {
	rpc := "sum by (instance, service, rpc_service, rpc_method, error_type) (" +
		rate(rpcName+"_count", sel(`instance=~"$node", service=~"$service", error_type=~"[0-9]+"`)) + ")"
	// label_join of a label that no series has ("none") and the two gives
	// "" + "/" + service + "/" + method.
	asRoute := `label_join(` + rpc + `, "http_route", "/", "none", "rpc_service", "rpc_method")`
	return "sum by (" + by + ") (" + asRoute + "\n    and on (instance, service, http_route) group by (instance, service, http_route) (" + httpName + "_count" + sel(httpSel) + "))"
}

// errorRatio: HTTP errors (5xx, incomplete) plus gRPC non-OK, over all
// requests, per group; 0 for groups without errors.
func errorRatio(by string) string {
	all := "sum by (" + by + ") (" + rate(httpName+"_count", sel(httpSel)) + ")"
	httpErrs := "sum by (" + by + ") (" + rate(httpName+"_count", sel(httpSel, `error_type!=""`)) + ")"
	return "((" + httpErrs + " or " + all + " * 0)\n  + (" + grpcFailures(by) + " or " + all + " * 0))\n  / " + all
}

func quantiles(metric, selector, by, legend string) []*Target {
	var ts []*Target
	for i, q := range []string{"0.5", "0.95", "0.99"} {
		ts = append(ts, promTarget(string(rune('A'+i)),
			"histogram_quantile("+q+", sum by (le"+by+") ("+rate(metric+"_bucket", selector)+"))",
			"p"+strings.TrimPrefix(q, "0.")+legend))
	}
	ts[0].LegendFormat = "p50" + legend
	return ts
}

func nodeVar() *Variable {
	return promVar("node", "node", "the agents (scrape targets) to include", "label_values(sextant_collector_connections, instance)")
}

func serviceVar(metric string) *Variable {
	return promVar("service", "service", "the observed workloads (container id, else executable name)",
		"label_values("+metric+"_count{"+nodeSel+"}, service)")
}

var linkGolden = DataLink{Title: "Golden signals of ${__field.labels.service}", URL: "/d/" + uidGolden + "/?${datasource:queryparam}&${node:queryparam}&var-service=${__field.labels.service}&${observer:queryparam}&${__url_time_range}"}

// GoldenSignals: rate, errors, latency and saturation per service and route.
func GoldenSignals() *Dashboard {
	d := newDashboard(uidGolden, "sextant / Golden signals",
		"Request rate, error ratio, latency and saturation of every HTTP and gRPC exchange the sextant agents observe, per service and route.",
		"golden-signals.json", Prometheus,
		datasourceVar(Prometheus, "Prometheus"), nodeVar(), serviceVar(httpName),
		promVar("route", "route", "templated request paths (http_route)",
			"label_values("+httpName+"_count{"+nodeSel+`, service=~"$service"}, http_route)`),
		observerVar())
	all := sel(httpSel)
	errs := sel(httpSel, `error_type!=""`)
	cnt := httpName + "_count"
	d.add(6, 4,
		stat("Requests/s", "Requests per second over the selection (all services and routes selected).", "reqps", nil,
			promTarget("A", "sum("+rate(cnt, all)+")", "requests/s")),
		stat("Error ratio", "Share of exchanges that failed: HTTP 5xx (≥ 400 on the client side), gRPC status ≠ OK, or not completed (reset, refused, closed, evicted).", "percentunit",
			thresholds(0.01, 0.05), promTarget("A", errorRatio(""), "error ratio")),
		stat("p95 latency", "95th percentile of request start → end of response, from the duration histogram.", "s",
			thresholds(0.5, 1), promTarget("A", "histogram_quantile(0.95, sum by (le) ("+rate(httpName+"_bucket", all)+"))", "p95")),
		stat("Active streams", "Exchanges in flight on the selected agents (open HTTP/2 streams, HTTP/1 requests awaiting their response).", "short",
			nil, promTarget("A", "sum(sextant_collector_streams"+sel(nodeSel)+")", "streams")),
	)
	rateP := timeseries("Request rate by route", "Requests per second per service and route.", "reqps", nil,
		promTarget("A", "sum by (service, http_route) ("+rate(cnt, all)+")", "{{service}} {{http_route}}"))
	rateP.FieldConfig.Defaults.Links = []DataLink{{Title: "gRPC view of ${__field.labels.service}", URL: "/d/" + uidGRPC + "/?${datasource:queryparam}&${node:queryparam}&var-service=${__field.labels.service}&${observer:queryparam}&${__url_time_range}"}}
	d.add(12, 8,
		rateP,
		timeseries("Error ratio by service", "Share of failed exchanges per service (5xx, gRPC non-OK, incomplete).", "percentunit", thresholds(0.01, 0.05),
			promTarget("A", errorRatio("service"), "{{service}}")),
		timeseries("Errors by type", "Failed exchanges per second: HTTP by error_type (the status code, or reset/refused/closed/evicted), gRPC by non-OK status.", "reqps", nil,
			promTarget("A", "sum by (error_type) ("+rate(cnt, errs)+")", "HTTP {{error_type}}"),
			promTarget("B", grpcFailures("error_type"), "gRPC status {{error_type}}")),
		timeseries("Latency p50 / p95 / p99", "Quantiles of the request duration histogram (buckets 5 ms … 10 s): accurate to the bucket the value falls in.", "s", thresholds(0.5, 1),
			quantiles(httpName, all, "", "")...),
		timeseries("p95 latency by route", "95th percentile latency per service and route.", "s", thresholds(0.5, 1),
			promTarget("A", "histogram_quantile(0.95, sum by (le, service, http_route) ("+rate(httpName+"_bucket", all)+"))", "{{service}} {{http_route}}")),
		timeseries("Saturation: streams and connections", "Exchanges in flight and connections the agents track now, per node.", "short", nil,
			promTarget("A", "sum by (instance) (sextant_collector_streams"+sel(nodeSel)+")", "streams {{instance}}"),
			promTarget("B", "sum by (instance) (sextant_collector_connections"+sel(nodeSel)+")", "connections {{instance}}")),
	)
	return d
}

// GRPC: per service/method rate, status codes and latency.
func GRPC() *Dashboard {
	d := newDashboard(uidGRPC, "sextant / gRPC",
		"gRPC calls the sextant agents observe, per service and method: rate, status codes, latency. Streaming message counts are not exported as metrics (see the Flow history dashboard).",
		"grpc.json", Prometheus,
		datasourceVar(Prometheus, "Prometheus"), nodeVar(), serviceVar(rpcName),
		promVar("rpc_service", "gRPC service", "the gRPC services (package.Service)",
			"label_values("+rpcName+"_count{"+nodeSel+`, service=~"$service"}, rpc_service)`),
		promVar("rpc_method", "method", "the gRPC methods",
			"label_values("+rpcName+"_count{"+nodeSel+`, service=~"$service", rpc_service=~"$rpc_service"}, rpc_method)`),
		observerVar())
	all := sel(rpcSel)
	errs := sel(rpcSel, `rpc_grpc_status_code!="0"`)
	cnt := rpcName + "_count"
	d.add(8, 4,
		stat("Calls/s", "gRPC calls per second over the selection.", "reqps", nil, promTarget("A", "sum("+rate(cnt, all)+")", "calls/s")),
		stat("Non-OK ratio", "Share of calls whose grpc-status was not OK (0), or which ended without a status.", "percentunit", thresholds(0.01, 0.05),
			promTarget("A", ratio("", cnt, all, errs), "non-OK")),
		stat("p99 latency", "99th percentile call duration.", "s", thresholds(0.5, 1),
			promTarget("A", "histogram_quantile(0.99, sum by (le) ("+rate(rpcName+"_bucket", all)+"))", "p99")),
	)
	d.add(12, 8,
		timeseries("Call rate by method", "Calls per second per gRPC service and method.", "reqps", nil,
			promTarget("A", "sum by (rpc_service, rpc_method) ("+rate(cnt, all)+")", "{{rpc_service}}/{{rpc_method}}")),
		timeseries("Status codes", "Calls per second by numeric grpc-status (0 OK, 5 NOT_FOUND, 14 UNAVAILABLE, … ; empty: none seen).", "reqps", nil,
			promTarget("A", "sum by (rpc_grpc_status_code) ("+rate(cnt, all)+")", "status {{rpc_grpc_status_code}}")),
		timeseries("Non-OK ratio by method", "Share of calls per method whose status was not OK.", "percentunit", thresholds(0.01, 0.05),
			promTarget("A", ratio("rpc_service, rpc_method", cnt, all, errs), "{{rpc_service}}/{{rpc_method}}")),
		timeseries("Latency p50 / p95 / p99 by method", "Call duration quantiles per method, from the histogram (accurate to its bucket).", "s", thresholds(0.5, 1),
			quantiles(rpcName, all, ", rpc_service, rpc_method", " {{rpc_service}}/{{rpc_method}}")...),
	)
	return d
}

// Health: the agent itself.
func Health() *Dashboard {
	d := newDashboard(uidHealth, "sextant / Health",
		"The sextant agents and relays themselves: records read from the kernel, losses, decode problems, tracked state, exporter queues, CPU and memory; then the relays: merge, agents, sinks.",
		"health.json", Prometheus, datasourceVar(Prometheus, "Prometheus"), nodeVar())
	ns := sel(agentSel)
	d.add(6, 4,
		stat("Events/s", "Records read from the kernel per second, all selected agents.", "ops", nil,
			promTarget("A", "sum("+rate("sextant_probe_records_total", ns)+")", "events/s")),
		stat("Kernel drops/s", "Traffic the kernel saw but could not deliver (ring buffer, connection or stream table full). Non-zero means flows are missing. Input the probes stopped parsing is a decode error, not a drop.", "ops", thresholds(0.001, 1),
			promTarget("A", "sum("+rate("sextant_probe_drops_total", ns)+")", "drops/s")),
		stat("Tracked connections", "Connections the agents track now.", "short", nil,
			promTarget("A", "sum(sextant_collector_connections"+ns+")", "connections")),
		stat("Agent memory", "Resident memory of the agent processes.", "bytes", thresholds(512<<20, 1<<30),
			promTarget("A", "sum(process_resident_memory_bytes"+ns+")", "RSS")),
	)
	d.add(12, 8,
		timeseries("Events/s", "Records read from the kernel per second, per agent.", "ops", nil,
			promTarget("A", "sum by (instance) ("+rate("sextant_probe_records_total", ns)+")", "{{instance}}")),
		timeseries("Kernel and ring losses", "Traffic the kernel could not deliver, by reason; events slow followers of the Observer API lost (lapped by the ring); record losses seen as sequence gaps.", "ops", thresholds(0.001, 1),
			promTarget("A", "sum by (reason) ("+rate("sextant_probe_drops_total", ns)+")", "kernel {{reason}}"),
			promTarget("B", "sum("+rate("sextant_ring_follower_lost_total", ns)+")", "ring: followers lost"),
			promTarget("C", "sum("+rate("sextant_collector_sequence_gaps_total", ns)+")", "sequence gaps")),
		timeseries("Decode errors and HPACK unknowns", "Frames or blocks user space could not decode, by protocol and kind, and header fields that referenced HPACK state never seen (fields reported as unknown, never guessed).", "ops", thresholds(0.001, 1),
			promTarget("A", "sum by (protocol, kind) ("+rate("sextant_decode_errors_total", ns)+")", "{{protocol}} {{kind}}"),
			promTarget("B", "sum("+rate("sextant_hpack_unknown_fields_total", ns)+")", "HPACK unknown fields"),
			promTarget("C", "sum("+rate("sextant_probe_invalid_records_total", ns)+")", "invalid records")),
		timeseries("Tracked connections and streams", "State the collector holds, per agent.", "short", nil,
			promTarget("A", "sum by (instance) (sextant_collector_connections"+ns+")", "connections {{instance}}"),
			promTarget("B", "sum by (instance) (sextant_collector_streams"+ns+")", "streams {{instance}}")),
		timeseries("Exporter queue", "Flows waiting in each agent-side exporter's queue, relative to its capacity; drops when it is full.", "percentunit", thresholds(0.5, 0.9),
			promTarget("A", "max by (instance, exporter) (sextant_exporter_queue_length"+ns+" / sextant_exporter_queue_capacity"+ns+")", "{{exporter}} queue {{instance}}")),
		timeseries("Exporter drops/s", "Flows dropped because an exporter's queue was full.", "ops", thresholds(0.001, 1),
			promTarget("A", "sum by (exporter) ("+rate("sextant_exporter_dropped_flows_total", ns)+")", "{{exporter}}")),
		timeseries("Agent CPU", "CPU time the agent process uses (1 = one core).", "percentunit", thresholds(0.5, 1),
			promTarget("A", "sum by (instance) ("+rate("process_cpu_seconds_total", ns)+")", "{{instance}}")),
		timeseries("Agent memory", "Resident memory and Go heap of the agent process.", "bytes", nil,
			promTarget("A", "sum by (instance) (process_resident_memory_bytes"+ns+")", "RSS {{instance}}"),
			promTarget("B", "sum by (instance) (go_memstats_heap_inuse_bytes"+ns+")", "heap {{instance}}")),
	)
	// The relays: loss is never silent there either.
	rs := sel(relaySel)
	d.add(6, 4,
		stat("Relay merged events/s", "Events the relays merged from their agents per second.", "ops", nil,
			promTarget("A", "sum("+rate("sextant_relay_events_merged_total", rs)+")", "events/s")),
		stat("Agents unavailable", "Agents the relays cannot reach now (see GetNodes / `hubble list nodes`).", "short", thresholds(1, 1),
			promTarget("A", "sum(sextant_relay_nodes"+sel(relaySel, `state="unavailable"`)+")", "unavailable")),
		stat("Relay sink drops/s", "Flows lost between the merge and the sinks: subscription full, or an exporter's queue full.", "ops", thresholds(0.001, 1),
			promTarget("A", "sum("+rate("sextant_exporter_dropped_flows_total", rs)+") + sum("+rate("sextant_relay_subscription_dropped_events_total", rs)+")", "drops/s")),
		stat("Relay memory", "Resident memory of the relay processes (the embedded store lives in them).", "bytes", thresholds(2<<30, 4<<30),
			promTarget("A", "sum(process_resident_memory_bytes"+rs+")", "RSS")),
	)
	d.add(12, 8,
		timeseries("Relay merge", "Events merged per second; of them, released late (after the sort window); agent streams resumed exactly where they stopped; events held in the sort window now.", "ops", nil,
			promTarget("A", "sum by (instance) ("+rate("sextant_relay_events_merged_total", rs)+")", "merged {{instance}}"),
			promTarget("B", "sum by (instance) ("+rate("sextant_relay_events_late_total", rs)+")", "late {{instance}}"),
			promTarget("C", "sum by (instance) ("+rate("sextant_relay_streams_resumed_total", rs)+")", "resumed {{instance}}"),
			promTarget("D", "sum by (instance) (sextant_relay_events_held"+rs+")", "held {{instance}}")),
		timeseries("Agents by state", "Agents each relay follows, connected or unavailable.", "short", nil,
			promTarget("A", "sum by (instance, state) (sextant_relay_nodes"+rs+")", "{{state}} {{instance}}")),
		timeseries("Relay sinks", "Flows each relay-side exporter received per second, and dropped (queue full); events the exporters' subscription lost.", "ops", thresholds(0.001, 1),
			promTarget("A", "sum by (instance, exporter) ("+rate("sextant_exporter_flows_total", rs)+")", "{{exporter}} {{instance}}"),
			promTarget("B", "sum by (instance, exporter) ("+rate("sextant_exporter_dropped_flows_total", rs)+")", "{{exporter}} dropped {{instance}}"),
			promTarget("C", "sum by (instance) ("+rate("sextant_relay_subscription_dropped_events_total", rs)+")", "subscription lost {{instance}}")),
		timeseries("Flow history", "Flows written to the history store per second, and the disk spool holding batches while the store is away (bytes).", "short", nil,
			promTarget("A", "sum by (instance) ("+rate("sextant_clickhouse_written_flows_total", rs)+")", "written/s {{instance}}"),
			promTarget("B", "sum by (instance) (sextant_clickhouse_spool_bytes"+rs+")", "spool bytes {{instance}}")),
		timeseries("Relay CPU", "CPU time the relay process uses (1 = one core).", "percentunit", thresholds(0.5, 1),
			promTarget("A", "sum by (instance) ("+rate("process_cpu_seconds_total", rs)+")", "{{instance}}")),
	)
	return d
}
