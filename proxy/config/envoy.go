package config

import (
	"errors"
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	// The typed configs a resource may carry in Any: registered so that
	// they decode and validate (an unregistered type is an error).
	_ "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// servable are the resource types a CiliumEnvoyConfig may hold.
var servable = map[protoreflect.FullName]bool{
	(&listenerv3.Listener{}).ProtoReflect().Descriptor().FullName():              true,
	(&routev3.RouteConfiguration{}).ProtoReflect().Descriptor().FullName():       true,
	(&clusterv3.Cluster{}).ProtoReflect().Descriptor().FullName():                true,
	(&endpointv3.ClusterLoadAssignment{}).ProtoReflect().Descriptor().FullName(): true,
}

func (s *Set) addEnvoyConfig(d rawDoc) error {
	var cec CiliumEnvoyConfig
	if err := d.decodeStrict(&cec); err != nil {
		return err
	}
	resNode := childNode(childNode(d.Node, "spec"), "resources")
	var errs []error
	for i := range cec.Spec.Resources {
		path := fmt.Sprintf("spec.resources[%d]", i)
		var n *yaml.Node
		if resNode != nil && i < len(resNode.Content) {
			n = resNode.Content[i]
		}
		msg, err := decodeResource(d, path, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.EnvoyResources = append(s.EnvoyResources, Doc[proto.Message]{Origin: d.Origin, Obj: msg})
	}
	return errors.Join(errs...)
}

// decodeResource decodes one resource: first a walk of its YAML against
// the proto descriptors, so that an unknown field is reported with its
// line and path (protojson names neither), then protojson, then the
// protoc-gen-validate rules of it and of every typed config inside it.
func decodeResource(d rawDoc, path string, n *yaml.Node) (proto.Message, error) {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, d.Errorf(path, "a resource is a mapping with \"@type\"")
	}
	typ := childNode(n, "@type")
	if typ == nil {
		return nil, d.Errorf(path, "\"@type\" is required")
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(typ.Value)
	if err != nil {
		return nil, d.Errorf(path+".@type", "unknown type %q", typ.Value)
	}
	if !servable[mt.Descriptor().FullName()] {
		return nil, d.Errorf(path+".@type", "%s cannot be served (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment)", mt.Descriptor().FullName())
	}
	if err := walkMessage(d, path, n, mt.Descriptor(), true); err != nil {
		return nil, err
	}
	// Re-encode the one resource to JSON (its part of the document).
	w := &jsonWriter{o: Origin{Lines: map[string]int{}}}
	if err := w.write(n, ""); err != nil {
		return nil, d.Errorf(path, "%v", err)
	}
	var a anypb.Any
	if err := protojson.Unmarshal(w.buf.Bytes(), &a); err != nil {
		return nil, d.Errorf(path, "%v", err)
	}
	msg, err := a.UnmarshalNew()
	if err != nil {
		return nil, d.Errorf(path, "%v", err)
	}
	if err := ValidateResource(msg); err != nil {
		return nil, d.Errorf(path, "%v", err)
	}
	return msg, nil
}

// walkMessage checks that every key of n is a field of md (by JSON or
// proto name), recursing into messages, lists, maps and Any.
func walkMessage(d rawDoc, path string, n *yaml.Node, md protoreflect.MessageDescriptor, isAny bool) error {
	switch md.FullName() {
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue":
		return nil // free-form
	case "google.protobuf.Any":
		typ := childNode(n, "@type")
		if typ == nil {
			return d.Errorf(path, "Any needs \"@type\"")
		}
		mt, err := protoregistry.GlobalTypes.FindMessageByURL(typ.Value)
		if err != nil {
			return d.Errorf(path+".@type", "unknown type %q", typ.Value)
		}
		if wellKnownJSON(mt.Descriptor().FullName()) {
			return nil // {"@type": …, "value": …}
		}
		return walkMessage(d, path, n, mt.Descriptor(), true)
	}
	if wellKnownJSON(md.FullName()) || n.Kind != yaml.MappingNode {
		return nil // scalars of well-known types and type errors: protojson reports them
	}
	fields := md.Fields()
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		kp := joinPath(path, k.Value)
		if isAny && k.Value == "@type" {
			continue
		}
		fd := fields.ByJSONName(k.Value)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(k.Value))
		}
		if fd == nil {
			return &Error{At: fmt.Sprintf("%s:%d", d.File, k.Line), Msg: fmt.Sprintf("%s: unknown field (in %s)", kp, md.FullName())}
		}
		if fd.Message() == nil {
			continue
		}
		switch {
		case fd.IsMap():
			if vd := fd.MapValue().Message(); vd != nil && v.Kind == yaml.MappingNode {
				for j := 0; j+1 < len(v.Content); j += 2 {
					if err := walkMessage(d, joinPath(kp, v.Content[j].Value), v.Content[j+1], vd, false); err != nil {
						return err
					}
				}
			}
		case fd.IsList():
			if v.Kind == yaml.SequenceNode {
				for j, c := range v.Content {
					if err := walkMessage(d, fmt.Sprintf("%s[%d]", kp, j), c, fd.Message(), false); err != nil {
						return err
					}
				}
			}
		default:
			if err := walkMessage(d, kp, v, fd.Message(), false); err != nil {
				return err
			}
		}
	}
	return nil
}

// wellKnownJSON: types whose JSON form is not an object of their fields.
func wellKnownJSON(n protoreflect.FullName) bool {
	switch n {
	case "google.protobuf.Duration", "google.protobuf.Timestamp", "google.protobuf.FieldMask",
		"google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue",
		"google.protobuf.Int32Value", "google.protobuf.Int64Value", "google.protobuf.UInt32Value",
		"google.protobuf.UInt64Value", "google.protobuf.FloatValue", "google.protobuf.DoubleValue",
		"google.protobuf.Empty":
		return true
	}
	return false
}

func childNode(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// ValidateResource runs the protoc-gen-validate rules of m and of every
// message packed in an Any anywhere inside it (ValidateAll does not look
// inside Any): an invalid typed filter config is caught here, not by the
// client that would NACK it.
func ValidateResource(m proto.Message) error {
	return validateDeep(m.ProtoReflect(), string(m.ProtoReflect().Descriptor().Name()))
}

type allValidator interface{ ValidateAll() error }

func validateDeep(m protoreflect.Message, path string) error {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("%s: %s: %w", path, a.GetTypeUrl(), err)
		}
		return validateDeep(inner.ProtoReflect(), path+"("+string(inner.ProtoReflect().Descriptor().Name())+")")
	}
	if v, ok := m.Interface().(allValidator); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil {
			return true
		}
		fp := path + "." + string(fd.Name())
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					err = validateDeep(mv.Message(), fp+"["+k.String()+"]")
					return err == nil
				})
			}
		case fd.IsList():
			for i := 0; i < v.List().Len() && err == nil; i++ {
				err = validateDeep(v.List().Get(i).Message(), fmt.Sprintf("%s[%d]", fp, i))
			}
		default:
			err = validateDeep(v.Message(), fp)
		}
		return err == nil
	})
	return err
}
