package dashboards

// `go test ./dashboards -preview` (root, Prometheus and chDB installed)
// writes preview/<uid>.html: every panel of every dashboard drawn from the
// results its queries returned in this run (inline SVG, no scripts), so a
// person sees what the dashboard shows without Grafana.

import (
	"flag"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

var previewFlag = flag.Bool("preview", false, "write preview/<uid>.html from the query results of this run")

var palette = []string{"#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0"}

type series struct {
	name string
	pts  [][2]float64 // unix seconds, value
}

func writePreviews() error {
	for _, d := range All() {
		var b strings.Builder
		fmt.Fprintf(&b, `<!doctype html><meta charset="utf-8"><title>%s — preview</title>
<style>body{background:#111217;color:#ccccdc;font:13px sans-serif;margin:16px}h1{font-size:18px}
.grid{display:grid;grid-template-columns:repeat(24,1fr);grid-auto-rows:34px;gap:6px}
.panel{background:#181b1f;border:1px solid #2a2d33;border-radius:3px;padding:6px;overflow:hidden}
.panel h2{font-size:13px;margin:0 0 4px}.desc{color:#8e8e9e;font-size:11px;margin-bottom:4px}
.stat{font-size:32px;font-weight:600}table{border-collapse:collapse;font-size:11px}td,th{border-bottom:1px solid #2a2d33;padding:2px 6px;text-align:left}
.legend span{margin-right:10px;font-size:11px}.vars{color:#8e8e9e}</style>
<h1>%s</h1><p class="vars">%s<br>Preview drawn from the results of this dashboard's queries in <code>go test ./dashboards -preview</code> (%s): real agent + Prometheus under test traffic, and the known flows in chDB.</p><div class="grid">`,
			html.EscapeString(d.Title), html.EscapeString(d.Title), html.EscapeString(d.Description), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
		for _, p := range d.Panels {
			g := p.GridPos
			fmt.Fprintf(&b, `<div class="panel" style="grid-column:%d/span %d;grid-row:%d/span %d"><h2>%s</h2><div class="desc">%s</div>`,
				g.X+1, g.W, g.Y+1, g.H, html.EscapeString(p.Title), html.EscapeString(p.Description))
			unit := p.FieldConfig.Defaults.Unit
			switch {
			case d.Kind() == Prometheus:
				res := promPanelResults[d.UID][p.Title]
				switch p.Type {
				case "stat":
					if len(res) > 0 {
						fmt.Fprintf(&b, `<div class="stat" style="color:%s">%s</div>`, statColor(p, res[0].Float()), formatValue(res[0].Float(), unit))
					}
				default:
					var ss []series
					for _, s := range res {
						var pts [][2]float64
						for _, v := range s.Values {
							ts, _ := v[0].(float64)
							str, _ := v[1].(string)
							f, err := strconv.ParseFloat(str, 64)
							if err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
								pts = append(pts, [2]float64{ts, f})
							}
						}
						ss = append(ss, series{name: s.Metric["__legend"], pts: pts})
					}
					b.WriteString(chart(ss, unit, g.W*40, g.H*40-60))
				}
			default:
				tb, ok := sqlPanelResults[p.Title]
				if !ok {
					break
				}
				if p.Type == "timeseries" {
					b.WriteString(chart(sqlSeries(tb), unit, g.W*40, g.H*40-60))
				} else {
					b.WriteString(htmlTable(tb, 12))
				}
			}
			b.WriteString("</div>")
		}
		b.WriteString("</div>\n")
		if err := os.WriteFile(filepath.Join("preview", strings.TrimSuffix(d.File(), ".json")+".html"), []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func statColor(p *Panel, v float64) string {
	c := "#73bf69"
	for _, s := range p.FieldConfig.Defaults.Thresholds.Steps {
		if s.Value != nil && v >= *s.Value {
			c = map[string]string{"orange": "#ff9830", "red": "#f2495c"}[s.Color]
		}
	}
	return c
}

func formatValue(v float64, unit string) string {
	switch unit {
	case "percentunit":
		return strconv.FormatFloat(v*100, 'f', 1, 64) + "%"
	case "s":
		if v < 1 {
			return strconv.FormatFloat(v*1000, 'f', 0, 64) + " ms"
		}
		return strconv.FormatFloat(v, 'f', 2, 64) + " s"
	case "bytes":
		return strconv.FormatFloat(v/(1<<20), 'f', 1, 64) + " MiB"
	case "reqps":
		return strconv.FormatFloat(v, 'f', 2, 64) + " req/s"
	case "ops":
		return strconv.FormatFloat(v, 'f', 2, 64) + " /s"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// sqlSeries turns a time series result (t, value columns…) into series.
func sqlSeries(tb result) []series {
	var ss []series
	for c := 1; c < len(tb.cols); c++ {
		s := series{name: tb.cols[c]}
		for _, r := range tb.rows {
			ts, err := time.Parse("2006-01-02 15:04:05", r[0])
			v, err2 := strconv.ParseFloat(r[c], 64)
			if err == nil && err2 == nil {
				s.pts = append(s.pts, [2]float64{float64(ts.Unix()), v})
			}
		}
		ss = append(ss, s)
	}
	return ss
}

func chart(ss []series, unit string, w, h int) string {
	if h < 60 {
		h = 60
	}
	minX, maxX, maxY := math.Inf(1), math.Inf(-1), 0.0
	for _, s := range ss {
		for _, p := range s.pts {
			minX, maxX, maxY = math.Min(minX, p[0]), math.Max(maxX, p[0]), math.Max(maxY, p[1])
		}
	}
	if math.IsInf(minX, 0) {
		return `<div class="desc">no data</div>`
	}
	if maxX == minX {
		maxX = minX + 1
	}
	if maxY == 0 {
		maxY = 1
	}
	const left, bottom = 70, 16
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="100%%" viewBox="0 0 %d %d" preserveAspectRatio="none">`, w, h)
	for i := 0; i <= 2; i++ {
		y := float64(h-bottom) - float64(i)/2*float64(h-bottom-6)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.0f" y2="%.0f" stroke="#2a2d33"/><text x="2" y="%.0f" fill="#8e8e9e" font-size="10">%s</text>`,
			left, w, y, y, y+3, html.EscapeString(formatValue(maxY*float64(i)/2, unit)))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#8e8e9e" font-size="10">%s</text><text x="%d" y="%d" fill="#8e8e9e" font-size="10" text-anchor="end">%s</text>`,
		left, h-2, time.Unix(int64(minX), 0).UTC().Format("15:04:05"), w, h-2, time.Unix(int64(maxX), 0).UTC().Format("15:04:05"))
	var legend strings.Builder
	for i, s := range ss {
		col := palette[i%len(palette)]
		var pts []string
		for _, p := range s.pts {
			x := left + (p[0]-minX)/(maxX-minX)*float64(w-left)
			y := float64(h-bottom) - p[1]/maxY*float64(h-bottom-6)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, col, strings.Join(pts, " "))
		fmt.Fprintf(&legend, `<span style="color:%s">■</span><span>%s</span>`, col, html.EscapeString(s.name))
	}
	b.WriteString("</svg>")
	return b.String() + `<div class="legend">` + legend.String() + "</div>"
}

func htmlTable(tb result, max int) string {
	var b strings.Builder
	b.WriteString("<table><tr>")
	for _, c := range tb.cols {
		fmt.Fprintf(&b, "<th>%s</th>", html.EscapeString(c))
	}
	b.WriteString("</tr>")
	rows := tb.rows
	if len(rows) > max {
		rows = rows[:max]
	}
	for _, r := range rows {
		b.WriteString("<tr>")
		for _, v := range r {
			fmt.Fprintf(&b, "<td>%s</td>", html.EscapeString(v))
		}
		b.WriteString("</tr>")
	}
	b.WriteString("</table>")
	if len(tb.rows) > max {
		fmt.Fprintf(&b, `<div class="desc">… %d rows</div>`, len(tb.rows))
	}
	return b.String()
}
