// Package dashboards holds sextant's Grafana dashboards as Go values: the
// one source of the JSON files next to this file (`go generate
// ./dashboards` rewrites them; a test fails when they differ).
package dashboards

//go:generate go run ./gen

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// All returns every dashboard, in a fixed order.
func All() []*Dashboard {
	return []*Dashboard{GoldenSignals(), GRPC(), FlowHistory(), Health(), Policy()}
}

// Render is the committed JSON of d.
func Render(d *Dashboard) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("encode dashboard %s: %w", d.UID, err)
	}
	return b.Bytes(), nil
}

const (
	uidGolden = "sextant-golden-signals"
	uidGRPC   = "sextant-grpc"
	uidFlows  = "sextant-flow-history"
	uidHealth = "sextant-health"
	uidPolicy = "sextant-policy"
)

var (
	promDS = &Ref{Type: string(Prometheus), UID: "${datasource}"}
	chDS   = &Ref{Type: string(ClickHouse), UID: "${datasource}"}
)

func f(v float64) *float64 { return &v }
func fmtp(v int) *int      { return &v }

// thresholds: green below warn, orange from warn, red from crit.
func thresholds(warn, crit float64) *Thresholds {
	return &Thresholds{Mode: "absolute", Steps: []Step{{Color: "green"}, {Color: "orange", Value: f(warn)}, {Color: "red", Value: f(crit)}}}
}

func okThresholds() *Thresholds {
	return &Thresholds{Mode: "absolute", Steps: []Step{{Color: "green"}}}
}

func newDashboard(uid, title, desc, file string, kind DatasourceKind, vars ...*Variable) *Dashboard {
	d := &Dashboard{
		UID: uid, Title: title, Description: desc, Tags: []string{"sextant"},
		Timezone: "browser", Editable: true, GraphTooltip: 1,
		Time: TimeRange{From: "now-1h", To: "now"}, Refresh: "30s", SchemaVersion: 39,
		Annotations: Annotations{List: []any{}},
		Templating:  Templating{List: vars},
		Links: []DashLink{{Title: "sextant", Type: "dashboards", Icon: "external link", Tags: []string{"sextant"},
			AsDropdown: true, IncludeVars: false, KeepTime: true, Tooltip: "the other sextant dashboards"}},
		file: file, datasource: kind,
	}
	return d
}

// add appends panels in a 24-column grid, left to right, top to bottom.
func (d *Dashboard) add(w, h int, panels ...*Panel) {
	x, y := 0, 0
	if n := len(d.Panels); n > 0 {
		last := d.Panels[n-1].GridPos
		x, y = last.X+last.W, last.Y
		if x+w > 24 {
			x, y = 0, last.Y+last.H
		}
	}
	for _, p := range panels {
		if x+w > 24 {
			x, y = 0, y+h
		}
		p.ID = len(d.Panels) + 1
		p.GridPos = GridPos{H: h, W: w, X: x, Y: y}
		d.Panels = append(d.Panels, p)
		x += w
	}
}

func datasourceVar(kind DatasourceKind, label string) *Variable {
	return &Variable{Type: "datasource", Name: "datasource", Label: label, Query: string(kind),
		Description: "the " + label + " datasource the panels query", Refresh: 1}
}

func promVar(name, label, desc, query string) *Variable {
	return &Variable{Type: "query", Name: name, Label: label, Description: desc, Datasource: promDS,
		Query: query, Definition: query, Refresh: 2, IncludeAll: true, Multi: true, AllValue: ".*", Sort: 1,
		Current: &Option{Text: "All", Value: "$__all", Selected: true}}
}

func observerVar() *Variable {
	return &Variable{Type: "custom", Name: "observer", Label: "observer",
		Description: "which end of the exchange the observed process was: server (requests it received) or client (requests it sent)",
		Query:       "server,client",
		Current:     &Option{Text: "server", Value: "server", Selected: true},
		Options:     []*Option{{Text: "server", Value: "server", Selected: true}, {Text: "client", Value: "client"}}}
}

func promTarget(ref, expr, legend string) *Target {
	return &Target{RefID: ref, Datasource: promDS, Expr: expr, LegendFormat: legend, Range: true}
}

func timeseries(title, desc, unit string, th *Thresholds, targets ...*Target) *Panel {
	if th == nil {
		th = okThresholds()
	}
	return &Panel{Type: "timeseries", Title: title, Description: desc, Datasource: targets[0].Datasource, Targets: targets,
		FieldConfig: FieldConfigs{Defaults: FieldConfig{Unit: unit, Min: f(0), Color: &FieldColor{Mode: "palette-classic"}, Thresholds: th,
			Custom: map[string]any{"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": true,
				"thresholdsStyle": map[string]any{"mode": "off"}}}, Overrides: []any{}},
		Options: map[string]any{"legend": map[string]any{"displayMode": "table", "placement": "bottom", "showLegend": true, "calcs": []string{"mean", "max"}},
			"tooltip": map[string]any{"mode": "multi", "sort": "desc"}}}
}

func stat(title, desc, unit string, th *Thresholds, t *Target) *Panel {
	if th == nil {
		th = okThresholds()
	}
	t.Range, t.Instant = false, true
	return &Panel{Type: "stat", Title: title, Description: desc, Datasource: t.Datasource, Targets: []*Target{t},
		FieldConfig: FieldConfigs{Defaults: FieldConfig{Unit: unit, Color: &FieldColor{Mode: "thresholds"}, Thresholds: th}, Overrides: []any{}},
		Options: map[string]any{"colorMode": "value", "graphMode": "area", "justifyMode": "auto", "textMode": "auto",
			"orientation": "auto", "wideLayout": true, "showPercentChange": false, "percentChangeColorMode": "standard",
			"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false}}}
}

func table(title, desc, unit string, t *Target, links ...DataLink) *Panel {
	return &Panel{Type: "table", Title: title, Description: desc, Datasource: t.Datasource, Targets: []*Target{t},
		FieldConfig: FieldConfigs{Defaults: FieldConfig{Unit: unit, Thresholds: okThresholds(), Links: links,
			Custom: map[string]any{"align": "auto", "filterable": true, "inspect": false}}, Overrides: []any{}},
		Options: map[string]any{"showHeader": true, "cellHeight": "sm", "frameIndex": 0}}
}

func sqlTarget(ref, sql string, format int) *Target {
	return &Target{RefID: ref, Datasource: chDS, RawSQL: sql, Format: fmtp(format), QueryType: "sql", EditorType: "sql"}
}

// Grafana ClickHouse plugin formats.
const (
	formatTimeSeries = 0
	formatTable      = 1
)
