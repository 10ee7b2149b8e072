package dashboards

// The Flow history dashboard queries the flows table of docs/clickhouse.md
// with the grafana-clickhouse-datasource plugin. Its macros:
// $__timeFilter(time) limits to the dashboard's time range,
// $__interval_s is the panel's interval in seconds (time buckets are
// written with it, not with $__timeInterval: its toStartOfInterval does not
// exist on ClickHouse 18.16).

// flowsWhere selects the dashboard's time range and variables. The "All"
// value of service and route is '%' (LIKE matches anything).
const flowsWhere = `$__timeFilter(time)
  AND observer = '${observer}'
  AND service LIKE '${service}'
  AND route LIKE '${route}'`

const failed = `(status >= 500 OR ifNull(grpc_status, 0) != 0 OR outcome != 'complete')`

func chVar(name, label, desc, sql string) *Variable {
	return &Variable{Type: "query", Name: name, Label: label, Description: desc, Datasource: chDS,
		Query: sql, Definition: sql, Refresh: 2, IncludeAll: true, AllValue: "%", Sort: 1,
		Current: &Option{Text: "All", Value: "$__all", Selected: true}}
}

func unitOverride(regexp, unit string) any {
	return map[string]any{"matcher": map[string]any{"id": "byRegexp", "options": regexp},
		"properties": []any{map[string]any{"id": "unit", "value": unit}}}
}

var routeDrillDown = DataLink{Title: "Recent flows of ${__data.fields.route}",
	URL: "/d/" + uidFlows + "/?${datasource:queryparam}&${observer:queryparam}&var-service=${__data.fields.service}&var-route=${__data.fields.route}&${__url_time_range}#recent-flows"}

// FlowHistory: what happened, request by request, from the flow store.
func FlowHistory() *Dashboard {
	d := newDashboard(uidFlows, "sextant / Flow history",
		"Every exchange the relay stored in ClickHouse (or its embedded chDB engine): slowest routes, errors over time, failed requests, top talkers, and the recent flows of one route.",
		"flow-history.json", ClickHouse,
		datasourceVar(ClickHouse, "ClickHouse"),
		chVar("service", "service", "what was called: gRPC service, else authority, else destination address",
			"SELECT DISTINCT service FROM sextant.flows WHERE $__timeFilter(time) ORDER BY service"),
		chVar("route", "route", "templated request path; pick one from the Slowest routes table to drill down",
			"SELECT DISTINCT route FROM sextant.flows WHERE $__timeFilter(time) AND service LIKE '${service}' ORDER BY route"),
		observerVar())

	slowest := table("Slowest routes", "Routes by 95th percentile latency (quantile samples 8192 values per group). Click a route to see its recent flows.", "",
		sqlTarget("A", `SELECT
    service,
    route,
    count() AS requests,
    round(quantile(0.95)(latency_ns) / 1e6, 1) AS p95_ms,
    round(quantile(0.99)(latency_ns) / 1e6, 1) AS p99_ms,
    countIf(`+failed+`) AS errors
FROM sextant.flows
WHERE `+flowsWhere+`
GROUP BY service, route
ORDER BY p95_ms DESC, requests DESC
LIMIT 20`, formatTable), routeDrillDown)
	slowest.FieldConfig.Overrides = []any{unitOverride("p9._ms", "ms")}

	errorsOverTime := timeseries("Errors over time", "Failed exchanges per interval: HTTP 5xx, gRPC status ≠ OK, and exchanges that did not complete (reset, refused, closed, evicted). One exchange can count in two series (a 5xx that was also reset).", "short", nil,
		sqlTarget("A", `SELECT
    toDateTime(intDiv(toUInt32(time), $__interval_s) * $__interval_s) AS t,
    countIf(status >= 500) AS http_5xx,
    countIf(ifNull(grpc_status, 0) != 0) AS grpc_non_ok,
    countIf(outcome != 'complete') AS incomplete
FROM sextant.flows
WHERE `+flowsWhere+`
GROUP BY t
ORDER BY t`, formatTimeSeries))

	byStatus := table("Errors by status", "Failed exchanges grouped by HTTP status, gRPC status and outcome, with one example message.", "",
		sqlTarget("A", `SELECT
    service,
    status,
    grpc_status,
    outcome,
    count() AS requests,
    any(grpc_message) AS example_message
FROM sextant.flows
WHERE `+flowsWhere+`
  AND `+failed+`
GROUP BY service, status, grpc_status, outcome
ORDER BY requests DESC
LIMIT 20`, formatTable))

	recentFailed := table("Recent failed requests", "The latest exchanges that failed (5xx, gRPC non-OK, or incomplete), newest first.", "",
		sqlTarget("A", `SELECT
    time,
    node,
    service,
    method,
    path,
    status,
    grpc_status,
    grpc_message,
    outcome,
    round(latency_ns / 1e6, 1) AS latency_ms,
    trace_id
FROM sextant.flows
WHERE `+flowsWhere+`
  AND `+failed+`
ORDER BY time DESC
LIMIT 100`, formatTable))
	recentFailed.FieldConfig.Overrides = []any{unitOverride("latency_ms", "ms")}

	talkers := table("Top talkers", "Client → service pairs by body bytes moved (both directions).", "",
		sqlTarget("A", `SELECT
    replaceRegexpOne(toString(source_address), '^::ffff:', '') AS client,
    service,
    count() AS requests,
    sum(request_bytes + response_bytes) AS bytes
FROM sextant.flows
WHERE `+flowsWhere+`
GROUP BY client, service
ORDER BY bytes DESC, requests DESC
LIMIT 10`, formatTable))
	talkers.FieldConfig.Overrides = []any{unitOverride("^bytes$", "bytes")}

	grpcMessages := timeseries("gRPC messages per interval", "gRPC messages sent each way (5-byte message prefixes counted in the kernel), per interval: how busy streaming calls are.", "short", nil,
		sqlTarget("A", `SELECT
    toDateTime(intDiv(toUInt32(time), $__interval_s) * $__interval_s) AS t,
    sum(grpc_request_messages) AS request_messages,
    sum(grpc_response_messages) AS response_messages
FROM sextant.flows
WHERE `+flowsWhere+`
  AND grpc_service != ''
GROUP BY t
ORDER BY t`, formatTimeSeries))

	recent := table("Recent flows of the route", "The latest exchanges of the selected service and route (pick them in the variables, or click a route in Slowest routes).", "",
		sqlTarget("A", `SELECT
    time,
    node,
    service,
    method,
    path,
    status,
    grpc_status,
    outcome,
    round(latency_ns / 1e6, 1) AS latency_ms,
    request_bytes,
    response_bytes,
    trace_id
FROM sextant.flows
WHERE `+flowsWhere+`
ORDER BY time DESC
LIMIT 100`, formatTable))
	recent.FieldConfig.Overrides = []any{unitOverride("latency_ms", "ms"), unitOverride("_bytes$", "bytes")}

	d.add(12, 9, slowest, errorsOverTime, byStatus, recentFailed, talkers, grpcMessages)
	d.add(24, 10, recent)
	return d
}
