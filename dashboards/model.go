package dashboards

// The JSON model of the dashboards: only the fields sextant sets, named as
// Grafana's dashboard schema names them (the tests decode the output
// strictly with the grafana-foundation-sdk dashboard type).

type Dashboard struct {
	UID           string         `json:"uid"`
	Title         string         `json:"title"`
	Description   string         `json:"description"`
	Tags          []string       `json:"tags"`
	Timezone      string         `json:"timezone"`
	Editable      bool           `json:"editable"`
	GraphTooltip  int            `json:"graphTooltip"`
	Time          TimeRange      `json:"time"`
	Refresh       string         `json:"refresh"`
	SchemaVersion int            `json:"schemaVersion"`
	Panels        []*Panel       `json:"panels"`
	Templating    Templating     `json:"templating"`
	Annotations   Annotations    `json:"annotations"`
	Links         []DashLink     `json:"links"`
	file          string         // dashboards/<file>
	datasource    DatasourceKind // which kind of datasource its panels query
}

type TimeRange struct {
	From string `json:"from"`
	To   string `json:"to"`
}

type Annotations struct {
	List []any `json:"list"`
}

type Templating struct {
	List []*Variable `json:"list"`
}

type Ref struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type Variable struct {
	Type        string    `json:"type"` // datasource, query, custom
	Name        string    `json:"name"`
	Label       string    `json:"label"`
	Description string    `json:"description,omitempty"`
	Query       string    `json:"query"`
	Datasource  *Ref      `json:"datasource,omitempty"`
	Definition  string    `json:"definition,omitempty"`
	Current     *Option   `json:"current,omitempty"`
	Options     []*Option `json:"options,omitempty"`
	Refresh     int       `json:"refresh,omitempty"` // 1 on load, 2 on time range change
	IncludeAll  bool      `json:"includeAll"`
	Multi       bool      `json:"multi"`
	AllValue    string    `json:"allValue,omitempty"`
	Sort        int       `json:"sort,omitempty"`
	Regex       string    `json:"regex,omitempty"`
}

type Option struct {
	Text     string `json:"text"`
	Value    string `json:"value"`
	Selected bool   `json:"selected"`
}

type DashLink struct {
	Title       string   `json:"title"`
	Type        string   `json:"type"` // dashboards, link
	Icon        string   `json:"icon"`
	Tooltip     string   `json:"tooltip"`
	URL         string   `json:"url,omitempty"`
	Tags        []string `json:"tags"`
	AsDropdown  bool     `json:"asDropdown"`
	TargetBlank bool     `json:"targetBlank"`
	IncludeVars bool     `json:"includeVars"`
	KeepTime    bool     `json:"keepTime"`
}

type GridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

type Panel struct {
	Type        string       `json:"type"`
	ID          int          `json:"id"`
	Title       string       `json:"title"`
	Description string       `json:"description"`
	Datasource  *Ref         `json:"datasource"`
	GridPos     GridPos      `json:"gridPos"`
	Targets     []*Target    `json:"targets"`
	FieldConfig FieldConfigs `json:"fieldConfig"`
	Options     any          `json:"options"`
}

type FieldConfigs struct {
	Defaults  FieldConfig `json:"defaults"`
	Overrides []any       `json:"overrides"`
}

type FieldConfig struct {
	Unit       string      `json:"unit,omitempty"`
	Decimals   *float64    `json:"decimals,omitempty"`
	Min        *float64    `json:"min,omitempty"`
	Max        *float64    `json:"max,omitempty"`
	Color      *FieldColor `json:"color,omitempty"`
	Thresholds *Thresholds `json:"thresholds,omitempty"`
	Links      []DataLink  `json:"links,omitempty"`
	Custom     any         `json:"custom,omitempty"`
}

type FieldColor struct {
	Mode string `json:"mode"`
}

type Thresholds struct {
	Mode  string `json:"mode"`
	Steps []Step `json:"steps"`
}

type Step struct {
	Color string   `json:"color"`
	Value *float64 `json:"value"` // null: the base step
}

type DataLink struct {
	Title       string `json:"title"`
	URL         string `json:"url"`
	TargetBlank bool   `json:"targetBlank"`
}

// Target is a Prometheus query (Expr) or a ClickHouse plugin SQL query (RawSQL).
type Target struct {
	RefID        string `json:"refId"`
	Datasource   *Ref   `json:"datasource,omitempty"`
	Expr         string `json:"expr,omitempty"`
	LegendFormat string `json:"legendFormat,omitempty"`
	Instant      bool   `json:"instant,omitempty"`
	Range        bool   `json:"range,omitempty"`
	RawSQL       string `json:"rawSql,omitempty"`
	// grafana-clickhouse-datasource: format 0 time series, 1 table.
	Format     *int   `json:"format,omitempty"`
	QueryType  string `json:"queryType,omitempty"`
	EditorType string `json:"editorType,omitempty"`
}

// DatasourceKind names the datasource plugin a dashboard's panels use.
type DatasourceKind string

const (
	Prometheus DatasourceKind = "prometheus"
	ClickHouse DatasourceKind = "grafana-clickhouse-datasource"
)

// File is the dashboard's JSON file name in dashboards/.
func (d *Dashboard) File() string { return d.file }

// Kind is the datasource plugin the dashboard's panels query.
func (d *Dashboard) Kind() DatasourceKind { return d.datasource }
