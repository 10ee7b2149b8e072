package dashboards

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	sdk "github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"gopkg.in/yaml.v3"
)

// The committed JSON is what the generator writes.
func TestCommittedJSONIsGenerated(t *testing.T) {
	for _, d := range All() {
		want, err := Render(d)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(d.File())
		if err != nil {
			t.Fatalf("%v (run go generate ./dashboards)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the generator's output: run go generate ./dashboards", d.File())
		}
	}
}

// Every file decodes strictly as a Grafana dashboard (the
// grafana-foundation-sdk types: unknown fields, wrong types and unknown
// enum values are errors).
func TestStrictGrafanaSchema(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	for _, d := range All() {
		raw, err := os.ReadFile(d.File())
		if err != nil {
			t.Fatal(err)
		}
		var g sdk.Dashboard
		if err := g.UnmarshalJSONStrict(raw); err != nil && !reflect.ValueOf(err).IsNil() {
			t.Errorf("%s: %v", d.File(), err)
			continue
		}
		if g.Uid == nil || *g.Uid != d.UID || g.Title == nil || len(g.Panels) != len(d.Panels) {
			t.Errorf("%s: decoded uid %v title %v with %d panels, want %s with %d", d.File(), g.Uid, g.Title, len(g.Panels), d.UID, len(d.Panels))
		}
	}
}

// Datasources are template variables, every panel says what it shows and
// in which unit, and links point at dashboards that exist.
func TestPanelsConventions(t *testing.T) {
	uids := map[string]bool{}
	for _, d := range All() {
		uids[d.UID] = true
	}
	for _, d := range All() {
		if d.Templating.List[0].Type != "datasource" || d.Templating.List[0].Query != string(d.Kind()) {
			t.Errorf("%s: first variable %+v, want a %s datasource variable", d.File(), d.Templating.List[0], d.Kind())
		}
		raw, _ := Render(d)
		for _, s := range []string{`"uid": "`} {
			for _, line := range strings.Split(string(raw), "\n") {
				if strings.Contains(line, s) && !strings.Contains(line, "${datasource}") && !strings.Contains(line, d.UID) {
					t.Errorf("%s: hard-coded uid: %s", d.File(), strings.TrimSpace(line))
				}
			}
		}
		for _, p := range d.Panels {
			if p.Description == "" || p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
				t.Errorf("%s %q: description, datasource variable and targets required", d.File(), p.Title)
			}
			if p.Type != "table" && p.FieldConfig.Defaults.Unit == "" {
				t.Errorf("%s %q: no unit", d.File(), p.Title)
			}
			if p.FieldConfig.Defaults.Thresholds == nil {
				t.Errorf("%s %q: no thresholds", d.File(), p.Title)
			}
			for _, l := range p.FieldConfig.Defaults.Links {
				if uid := strings.Split(strings.TrimPrefix(l.URL, "/d/"), "/")[0]; !uids[uid] {
					t.Errorf("%s %q: link to unknown dashboard %s", d.File(), p.Title, l.URL)
				}
			}
			for _, tg := range p.Targets {
				if (d.Kind() == Prometheus) != (tg.Expr != "") || (d.Kind() == ClickHouse) != (tg.RawSQL != "") {
					t.Errorf("%s %q: target %s does not match the %s datasource", d.File(), p.Title, tg.RefID, d.Kind())
				}
			}
		}
	}
}

// The JSON is deterministic: rendering twice gives the same bytes, and it
// is valid JSON.
func TestRenderDeterministic(t *testing.T) {
	for _, d := range All() {
		a, _ := Render(d)
		b, _ := Render(All()[indexOf(d.UID)])
		if !bytes.Equal(a, b) || !json.Valid(a) {
			t.Errorf("%s: not deterministic valid JSON", d.File())
		}
	}
}

func indexOf(uid string) int {
	for i, d := range All() {
		if d.UID == uid {
			return i
		}
	}
	return -1
}

// The strict decoding is strict: an unknown panel field or a wrong type is
// an error (so the test above can fail).
func TestStrictGrafanaSchemaRejects(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	raw, err := os.ReadFile(GoldenSignals().File())
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][2]string{
		{`"type": "timeseries",`, `"type": "timeseries", "colour": "red",`},
		{`"graphTooltip": 1`, `"graphTooltip": "shared"`},
		{`"schemaVersion": 39,`, ``},
	} {
		mutated := strings.Replace(string(raw), bad[0], bad[1], 1)
		if mutated == string(raw) {
			t.Fatalf("%q not in the JSON", bad[0])
		}
		var g sdk.Dashboard
		if err := g.UnmarshalJSONStrict([]byte(mutated)); err == nil || reflect.ValueOf(err).IsNil() {
			t.Errorf("%q → %q accepted", bad[0], bad[1])
		}
	}
}

// The provisioning files are what Grafana reads: a file provider pointing
// at a directory, and datasources of the two types the dashboards select.
func TestProvisioning(t *testing.T) {
	var dash struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Type string `yaml:"type"`
		} `yaml:"datasources"`
	}
	for file, v := range map[string]any{"provisioning/dashboards.yaml": &dash, "provisioning/datasources.yaml": &ds} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(v); err != nil && !strings.Contains(err.Error(), "not found in type") {
			t.Fatalf("%s: %v", file, err)
		}
	}
	if dash.APIVersion != 1 || len(dash.Providers) != 1 || dash.Providers[0].Type != "file" || dash.Providers[0].Options.Path == "" {
		t.Errorf("dashboards.yaml: %+v", dash)
	}
	types := map[string]bool{}
	for _, d := range ds.Datasources {
		types[d.Type] = true
	}
	if ds.APIVersion != 1 || !types[string(Prometheus)] || !types[string(ClickHouse)] {
		t.Errorf("datasources.yaml: %+v", ds)
	}
}
