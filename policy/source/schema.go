package source

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// FieldError is a rejected document: where (file:line:column), which field
// (its JSON path, e.g. spec.egress[0].toFQDNs) and why.
type FieldError struct {
	File   string
	Line   int
	Column int
	Path   string
	Reason string
}

func (e *FieldError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d:%d", e.File, e.Line, e.Column)
	}
	if e.Path == "" {
		return fmt.Sprintf("%s: %s", loc, e.Reason)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Path, e.Reason)
}

// schema says which of a Go type's JSON fields sextant enforces. The Go
// types are the upstream API types (Cilium's pkg/policy/api, Kubernetes'
// networking/v1), so a field the type lacks is unknown to the schema, and
// a field the type has but the schema does not list is one sextant does
// not implement: both are rejected, never ignored.
type schema map[reflect.Type]map[string]bool

// walker checks one YAML document against a Go type and a schema and
// records the line of every JSON path, for errors found after decoding.
type walker struct {
	file    string
	schema  schema
	special map[reflect.Type]reflect.Type // types decoded as another (EndpointSelector → LabelSelector)
	lines   map[string]*yaml.Node
	errs    []error
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func (w *walker) fail(n *yaml.Node, path, format string, args ...any) {
	w.errs = append(w.errs, &FieldError{File: w.file, Line: n.Line, Column: n.Column, Path: path, Reason: fmt.Sprintf(format, args...)})
}

// errorAt is a FieldError at the node of path (or its closest recorded parent).
func (w *walker) errorAt(path, format string, args ...any) error {
	p := path
	for {
		if n, ok := w.lines[p]; ok {
			return &FieldError{File: w.file, Line: n.Line, Column: n.Column, Path: path, Reason: fmt.Sprintf(format, args...)}
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			return &FieldError{File: w.file, Path: path, Reason: fmt.Sprintf(format, args...)}
		}
		p = p[:i]
	}
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode {
		w.fail(n, path, "YAML aliases are not supported")
		return
	}
	w.lines[path] = n
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if alt, ok := w.special[t]; ok {
		t = alt
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an explicit null is an absent field, as in JSON
	}
	custom := hasCustomDecoder(t)
	if custom && t.Kind() != reflect.Struct {
		return // e.g. a string type with its own parser: its decoder checks it
	}
	switch t.Kind() {
	case reflect.Struct:
		if custom && n.Kind == yaml.ScalarNode {
			return // short forms: labels "k8s:a=b", intstr, timestamps
		}
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "must be an object, not %s", kindName(n))
			return
		}
		fields := jsonFields(t)
		allowed := w.schema[t]
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			sub := join(path, k.Value)
			f, ok := fields[k.Value]
			switch {
			case !ok:
				w.fail(k, sub, "unknown field %q", k.Value)
			case allowed != nil && !allowed[k.Value]:
				w.fail(k, sub, "field %q is not supported by sextant", k.Value)
			default:
				w.walk(v, f, sub)
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "must be an object, not %s", kindName(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			w.walk(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			w.scalar(n, path, "!!str", "!!binary")
			return
		}
		if n.Kind != yaml.SequenceNode {
			w.fail(n, path, "must be a list, not %s", kindName(n))
			return
		}
		for i, e := range n.Content {
			w.walk(e, t.Elem(), path+"["+strconv.Itoa(i)+"]")
		}
	case reflect.String:
		w.scalar(n, path, "!!str")
	case reflect.Bool:
		w.scalar(n, path, "!!bool")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		w.scalar(n, path, "!!int")
	case reflect.Float32, reflect.Float64:
		w.scalar(n, path, "!!int", "!!float")
	case reflect.Interface:
		// free-form (never in the supported schema)
	}
}

func (w *walker) scalar(n *yaml.Node, path string, tags ...string) {
	if n.Kind != yaml.ScalarNode {
		w.fail(n, path, "must be a %s, not %s", tagName(tags[0]), kindName(n))
		return
	}
	for _, t := range tags {
		if n.Tag == t {
			return
		}
	}
	if tags[0] == "!!str" {
		w.fail(n, path, "must be a string, not %s (quote it: %q)", kindName(n), n.Value)
		return
	}
	w.fail(n, path, "must be a %s, not %s", tagName(tags[0]), kindName(n))
}

func tagName(tag string) string {
	switch tag {
	case "!!str":
		return "string"
	case "!!int":
		return "number"
	case "!!bool":
		return "boolean"
	}
	return strings.TrimPrefix(tag, "!!")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "an object"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a " + tagName(n.Tag) + " (" + strconv.Quote(n.Value) + ")"
	}
	return "an alias"
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

var fieldCache sync.Map // reflect.Type → map[string]reflect.Type

// jsonFields maps a struct's JSON field names to their types, following
// encoding/json: embedded structs without a name are inlined.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := structFields(t)
	fieldCache.Store(t, m)
	return m
}

var customCache sync.Map // reflect.Type → bool

// hasCustomDecoder: the type decodes itself from JSON or text.
func hasCustomDecoder(t reflect.Type) bool {
	if v, ok := customCache.Load(t); ok {
		return v.(bool)
	}
	c := reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler)
	customCache.Store(t, c)
	return c
}

func structFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			for et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				for k, v := range jsonFields(et) {
					if _, ok := out[k]; !ok {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// fieldsOf builds a schema entry: the JSON names listed are the ones
// sextant implements for type T.
func fieldsOf[T any](names ...string) (reflect.Type, map[string]bool) {
	t := reflect.TypeFor[T]()
	known := jsonFields(t)
	m := make(map[string]bool, len(names))
	for _, n := range names {
		if _, ok := known[n]; !ok {
			panic(fmt.Sprintf("schema: %s has no JSON field %q", t, n))
		}
		m[n] = true
	}
	return t, m
}
