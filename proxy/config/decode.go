package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	kjson "sigs.k8s.io/json"

	"go.yaml.in/yaml/v3"
)

// Origin says where a document came from; Lines maps each field path of
// the document ("spec.rules[0].backendRefs[1].name", the form strict JSON
// errors use) to its line, so that every error found later — decoding,
// validation, translation — names file:line.
type Origin struct {
	File  string
	Line  int // the document's first line
	Lines map[string]int
}

// At is "file:line" of the field at path, or of the nearest enclosing
// field that has a line, or of the document.
func (o Origin) At(path string) string {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := o.Lines[p]; ok {
			return fmt.Sprintf("%s:%d", o.File, l)
		}
	}
	return fmt.Sprintf("%s:%d", o.File, o.Line)
}

func (o Origin) String() string { return fmt.Sprintf("%s:%d", o.File, o.Line) }

// Errorf is an error at path of the document: "file:line: path: message".
func (o Origin) Errorf(path, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	return &Error{At: o.At(path), Msg: msg}
}

// Error is one rejected input, located.
type Error struct {
	At  string // file:line
	Msg string
}

func (e *Error) Error() string { return e.At + ": " + e.Msg }

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// rawDoc is one YAML document converted to JSON, with its field lines.
type rawDoc struct {
	Origin
	JSON []byte
	Node *yaml.Node // the document's root mapping
	// keys are the field paths in the order their keys were written,
	// with the JSON offset after each key: a type error's offset names
	// its field through them.
	keys []keyOffset
}

type keyOffset struct {
	offset int
	path   string
}

// splitDocuments parses every YAML document of data. YAML syntax errors
// carry the line the parser reports.
func splitDocuments(file string, data []byte) ([]rawDoc, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []rawDoc
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, &Error{At: file + ":" + yamlErrLine(err), Msg: "yaml: " + strings.TrimPrefix(err.Error(), "yaml: ")}
		}
		if len(n.Content) == 0 || n.Content[0].Kind == 0 {
			continue // an empty document between two ---
		}
		root := n.Content[0]
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
			continue
		}
		o := Origin{File: file, Line: root.Line, Lines: map[string]int{}}
		w := &jsonWriter{o: o}
		if err := w.write(root, ""); err != nil {
			return nil, err
		}
		docs = append(docs, rawDoc{Origin: o, JSON: w.buf.Bytes(), Node: root, keys: w.keys})
	}
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

func yamlErrLine(err error) string {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		return m[1]
	}
	return "1"
}

// writeJSON writes n as JSON and records the line of every field path.
// Duplicate keys are an error: YAML forbids them and a silent "last one
// wins" would hide a typo.
type jsonWriter struct {
	buf  bytes.Buffer
	o    Origin
	keys []keyOffset
}

func (jw *jsonWriter) write(n *yaml.Node, path string) error {
	w, o := &jw.buf, jw.o
	if path != "" {
		o.Lines[path] = n.Line
	}
	switch n.Kind {
	case yaml.AliasNode:
		return jw.write(n.Alias, path)
	case yaml.MappingNode:
		w.WriteByte('{')
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return o.errAt(k.Line, path, "mapping keys must be strings")
			}
			if seen[k.Value] {
				return o.errAt(k.Line, joinPath(path, k.Value), "duplicate field")
			}
			seen[k.Value] = true
			if i > 0 {
				w.WriteByte(',')
			}
			key, _ := json.Marshal(k.Value)
			w.Write(key)
			w.WriteByte(':')
			kp := joinPath(path, k.Value)
			o.Lines[kp] = k.Line
			jw.keys = append(jw.keys, keyOffset{w.Len(), kp})
			if err := jw.write(v, kp); err != nil {
				return err
			}
			o.Lines[kp] = k.Line // the key's line, not its value's
		}
		w.WriteByte('}')
	case yaml.SequenceNode:
		w.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				w.WriteByte(',')
			}
			jw.keys = append(jw.keys, keyOffset{w.Len(), fmt.Sprintf("%s[%d]", path, i)})
			if err := jw.write(c, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		w.WriteByte(']')
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			return o.errAt(n.Line, path, "%v", err)
		}
		switch x := v.(type) {
		case nil, bool, string:
		case int, int64, uint64, float64:
			// Numbers go through as written, so that 1.0 and 10 keep
			// their form for the typed decoder.
			if n.Tag == "!!int" || n.Tag == "!!float" {
				w.WriteString(normalizeNumber(n.Value))
				return nil
			}
		default:
			v = fmt.Sprint(x) // timestamps and the like stay strings
		}
		b, err := json.Marshal(v)
		if err != nil {
			return o.errAt(n.Line, path, "%v", err)
		}
		w.Write(b)
	default:
		return o.errAt(n.Line, path, "unsupported YAML node")
	}
	return nil
}

// normalizeNumber turns YAML number spellings JSON lacks (0x10, 1_000,
// +5, .5) into JSON numbers.
func normalizeNumber(s string) string {
	s = strings.ReplaceAll(s, "_", "")
	if i, err := strconv.ParseInt(s, 0, 64); err == nil {
		return strconv.FormatInt(i, 10)
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return strconv.Quote(s)
}

func (o Origin) errAt(line int, path, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	return &Error{At: fmt.Sprintf("%s:%d", o.File, line), Msg: msg}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// decodeStrict decodes the document into v, rejecting unknown and
// duplicate fields with the field's path and line.
func (d rawDoc) decodeStrict(v any) error {
	strict, err := kjson.UnmarshalStrict(d.JSON, v, kjson.DisallowUnknownFields, kjson.DisallowDuplicateFields)
	if err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return d.Errorf(d.pathAt(int(te.Offset)), "cannot be a %s (want %s)", te.Value, te.Type)
		}
		if ok, off := kjson.SyntaxErrorOffset(err); ok {
			return d.Errorf(d.pathAt(int(off)), "%s", strings.TrimPrefix(err.Error(), "json: "))
		}
		return d.Errorf("", "%v", err)
	}
	var errs []error
	for _, e := range strict {
		var fe kjson.FieldError
		if errors.As(e, &fe) {
			// "unknown field \"spec.x\"": the path goes first, then what is wrong.
			kind, _, _ := strings.Cut(e.Error(), " \"")
			errs = append(errs, d.Errorf(fe.FieldPath(), "%s", kind))
			continue
		}
		errs = append(errs, d.Errorf("", "%v", e))
	}
	return errors.Join(errs...)
}

// pathAt is the field whose value the JSON offset falls in.
func (d rawDoc) pathAt(offset int) string {
	path := ""
	for _, k := range d.keys {
		if k.offset >= offset {
			break
		}
		path = k.path
	}
	return path
}
