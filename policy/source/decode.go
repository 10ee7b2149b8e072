// Package source reads policy documents: CiliumNetworkPolicy and
// CiliumClusterwideNetworkPolicy (cilium.io/v2) and Kubernetes
// NetworkPolicy (networking.k8s.io/v1) YAML, several documents per file,
// decoded into Cilium's own rule type (pkg/policy/api.Rule) so that the
// same YAML means what it means to Cilium. Decoding is strict: a field
// unknown to the upstream schema, or known but not implemented by sextant,
// is rejected with file:line:column and its JSON path.
package source

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	slim_metav1 "github.com/cilium/cilium/pkg/k8s/slim/k8s/apis/meta/v1"
	"github.com/cilium/cilium/pkg/labels"
	"github.com/cilium/cilium/pkg/policy/api"
	"go.yaml.in/yaml/v3"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Kinds of documents.
const (
	KindCNP  = "CiliumNetworkPolicy"
	KindCCNP = "CiliumClusterwideNetworkPolicy"
	KindKNP  = "NetworkPolicy"
)

// DefaultNamespace is the namespace of a namespaced policy that names
// none, as kubectl would apply it.
const DefaultNamespace = "default"

// Label keys Cilium derives for every rule of a policy (pkg/k8s/apis/cilium.io).
const (
	LabelPolicyName        = "io.cilium.k8s.policy.name"
	LabelPolicyNamespace   = "io.cilium.k8s.policy.namespace"
	LabelPolicyDerivedFrom = "io.cilium.k8s.policy.derived-from"
	LabelPolicyUID         = "io.cilium.k8s.policy.uid"
	// LabelPodNamespace is the namespace label of an endpoint; namespaced
	// policies select only endpoints carrying theirs.
	LabelPodNamespace = "io.kubernetes.pod.namespace"
)

// Policy is one decoded document.
type Policy struct {
	Kind      string
	Name      string
	Namespace string // "" for clusterwide policies
	// Labels are Cilium's derived policy labels (name, namespace,
	// derived-from, uid): what Hubble shows in allowed_by/denied_by.
	Labels labels.LabelArray
	// Rules are sanitized Cilium rules; a namespaced policy's selectors are
	// already restricted to its namespace, as Cilium does.
	Rules api.Rules
	File  string
	Line  int // line of the document's first key
}

// ID names the policy for messages and metrics: kind/namespace/name.
func (p *Policy) ID() string {
	if p.Namespace == "" {
		return p.Kind + "/" + p.Name
	}
	return p.Kind + "/" + p.Namespace + "/" + p.Name
}

// ciliumPolicy mirrors the wire shape of cilium.io/v2 CiliumNetworkPolicy
// and CiliumClusterwideNetworkPolicy (pkg/k8s/apis/cilium.io/v2): that Go
// package pulls in IPAM, cloud and load-balancer types (≈650 packages,
// +30 MB of binary), the rule types it embeds are the same ones used here.
type ciliumPolicy struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            *api.Rule         `json:"spec,omitempty"`
	Specs           api.Rules         `json:"specs,omitempty"`
}

type k8sPolicy = networkingv1.NetworkPolicy

var (
	special = map[reflect.Type]reflect.Type{
		reflect.TypeFor[api.EndpointSelector](): reflect.TypeFor[slim_metav1.LabelSelector](),
	}
	// The fields sextant implements. Types not listed here are not reached
	// through a listed field, except leaves.
	supported = func() schema {
		s := schema{}
		add := func(t reflect.Type, m map[string]bool) { s[t] = m }
		add(fieldsOf[ciliumPolicy]("apiVersion", "kind", "metadata", "spec", "specs"))
		add(fieldsOf[k8sPolicy]("apiVersion", "kind", "metadata", "spec"))
		// Informational metadata from `kubectl get -o yaml` is accepted; none
		// of it changes what a policy means.
		add(fieldsOf[metav1.ObjectMeta]("name", "namespace", "labels", "annotations", "uid", "resourceVersion", "generation", "creationTimestamp"))
		add(fieldsOf[api.Rule]("endpointSelector", "ingress", "ingressDeny", "egress", "egressDeny", "labels", "enableDefaultDeny", "description"))
		add(fieldsOf[api.DefaultDenyConfig]("ingress", "egress"))
		add(fieldsOf[api.IngressRule]("fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities", "toPorts"))
		add(fieldsOf[api.IngressDenyRule]("fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities", "toPorts"))
		add(fieldsOf[api.EgressRule]("toEndpoints", "toCIDR", "toCIDRSet", "toEntities", "toPorts"))
		add(fieldsOf[api.EgressDenyRule]("toEndpoints", "toCIDR", "toCIDRSet", "toEntities", "toPorts"))
		add(fieldsOf[api.CIDRRule]("cidr", "except"))
		add(fieldsOf[api.PortRule]("ports", "rules"))
		add(fieldsOf[api.PortDenyRule]("ports"))
		add(fieldsOf[api.PortProtocol]("port", "endPort", "protocol"))
		add(fieldsOf[api.L7Rules]("http"))
		add(fieldsOf[api.PortRuleHTTP]("method", "path", "host", "headers", "headerMatches"))
		add(fieldsOf[api.HeaderMatch]("name", "value"))
		add(fieldsOf[slim_metav1.LabelSelector]("matchLabels", "matchExpressions"))
		add(fieldsOf[slim_metav1.LabelSelectorRequirement]("key", "operator", "values"))
		add(fieldsOf[labels.Label]("key", "value", "source"))
		add(fieldsOf[networkingv1.NetworkPolicySpec]("podSelector", "ingress", "egress", "policyTypes"))
		add(fieldsOf[networkingv1.NetworkPolicyIngressRule]("from", "ports"))
		add(fieldsOf[networkingv1.NetworkPolicyEgressRule]("to", "ports"))
		add(fieldsOf[networkingv1.NetworkPolicyPeer]("podSelector", "namespaceSelector", "ipBlock"))
		add(fieldsOf[networkingv1.IPBlock]("cidr", "except"))
		add(fieldsOf[networkingv1.NetworkPolicyPort]("protocol", "port", "endPort"))
		add(fieldsOf[metav1.LabelSelector]("matchLabels", "matchExpressions"))
		add(fieldsOf[metav1.LabelSelectorRequirement]("key", "operator", "values"))
		return s
	}()
)

// Entities sextant can tell apart on a host. The others name peers that do
// not exist here (remote nodes, the cluster's ingress, health endpoints).
var supportedEntities = map[api.Entity]bool{
	api.EntityAll: true, api.EntityWorld: true, api.EntityWorldIPv4: true, api.EntityWorldIPv6: true,
	api.EntityHost: true, api.EntityCluster: true,
}

// Parse decodes every document of one file. It returns the policies of
// the good documents and one error per rejected document (each a
// *FieldError or a list of them); callers that apply files atomically
// treat any error as a rejection of the whole file.
func Parse(file string, data []byte) ([]*Policy, []error) {
	chunks := splitDocuments(data)
	type result struct {
		ps   []*Policy
		errs []error
	}
	results := make([]result, len(chunks))
	// Documents are independent: decode them on every core (1,000 rules in
	// one file are 2,000 documents; decoding is most of a reload).
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range min(runtime.GOMAXPROCS(0), len(chunks)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(chunks) {
					return
				}
				results[i].ps, results[i].errs = parseChunk(file, chunks[i])
			}
		})
	}
	wg.Wait()
	var out []*Policy
	var errs []error
	for _, r := range results {
		out = append(out, r.ps...)
		errs = append(errs, r.errs...)
	}
	return out, errs
}

// chunk is the text of one document and the line it starts at.
type chunk struct {
	text []byte
	line int
}

// splitDocuments cuts a YAML stream at its document markers: a line
// starting with "---" at column 0 (which inside a document could only be
// indented, so it is always a marker).
func splitDocuments(data []byte) []chunk {
	var out []chunk
	start, startLine, line := 0, 1, 1
	for i := 0; i < len(data); {
		end := bytes.IndexByte(data[i:], '\n')
		next := len(data)
		if end >= 0 {
			next = i + end + 1
		}
		l := data[i:next]
		if i > start && bytes.HasPrefix(l, []byte("---")) && (len(l) == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\n' || l[3] == '\r') {
			out = append(out, chunk{data[start:i], startLine})
			start, startLine = i, line
		}
		i = next
		line++
	}
	return append(out, chunk{data[start:], startLine})
}

func parseChunk(file string, c chunk) ([]*Policy, []error) {
	dec := yaml.NewDecoder(bytes.NewReader(c.text))
	var out []*Policy
	var errs []error
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			line := yamlErrorLine(err)
			if line > 0 {
				line += c.line - 1
			}
			msg := yamlLine.ReplaceAllString(err.Error(), "line "+strconv.Itoa(line))
			errs = append(errs, &FieldError{File: file, Line: line, Reason: msg})
			break // the rest of this document cannot be resynchronised
		}
		shiftLines(&doc, c.line-1)
		if len(doc.Content) == 0 || (doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null") {
			continue // an empty document ("---" alone, or only comments)
		}
		p, err := parseDocument(file, doc.Content[0])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, p)
	}
	return out, errs
}

// shiftLines makes a chunk's node lines the file's.
func shiftLines(n *yaml.Node, by int) {
	n.Line += by
	for _, c := range n.Content {
		shiftLines(c, by)
	}
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

func yamlErrorLine(err error) int {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

func parseDocument(file string, root *yaml.Node) (*Policy, error) {
	if root.Kind != yaml.MappingNode {
		return nil, &FieldError{File: file, Line: root.Line, Column: root.Column, Reason: "a policy document must be an object"}
	}
	var apiVersion, kind string
	for i := 0; i+1 < len(root.Content); i += 2 {
		switch root.Content[i].Value {
		case "apiVersion":
			apiVersion = root.Content[i+1].Value
		case "kind":
			kind = root.Content[i+1].Value
		}
	}
	w := &walker{file: file, schema: supported, special: special, lines: map[string]*yaml.Node{}}
	at := func(reason string, args ...any) error {
		return &FieldError{File: file, Line: root.Line, Column: root.Column, Reason: fmt.Sprintf(reason, args...)}
	}
	var target any
	switch {
	case apiVersion == "cilium.io/v2" && (kind == KindCNP || kind == KindCCNP):
		target = &ciliumPolicy{}
	case apiVersion == "networking.k8s.io/v1" && kind == KindKNP:
		target = &k8sPolicy{}
	case apiVersion == "" || kind == "":
		return nil, at("apiVersion and kind are required")
	default:
		return nil, at("unsupported document %s %s (supported: cilium.io/v2 %s, %s; networking.k8s.io/v1 %s)", apiVersion, kind, KindCNP, KindCCNP, KindKNP)
	}
	w.walk(root, reflect.TypeOf(target).Elem(), "")
	if len(w.errs) > 0 {
		return nil, errors.Join(w.errs...)
	}
	var js bytes.Buffer
	if err := nodeJSON(root, &js); err != nil {
		return nil, at("decode: %v", err)
	}
	jd := json.NewDecoder(&js)
	jd.DisallowUnknownFields()
	if err := jd.Decode(target); err != nil {
		return nil, at("decode %s: %v", kind, err)
	}
	p := &Policy{Kind: kind, File: file, Line: root.Line}
	var err error
	switch t := target.(type) {
	case *ciliumPolicy:
		err = w.cilium(p, t)
	case *k8sPolicy:
		err = w.k8s(p, t)
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (w *walker) meta(p *Policy, m *metav1.ObjectMeta, namespaced bool) error {
	if m.Name == "" {
		return w.errorAt("metadata", "metadata.name is required")
	}
	p.Name = m.Name
	if namespaced {
		p.Namespace = m.Namespace
		if p.Namespace == "" {
			p.Namespace = DefaultNamespace
		}
	} else if m.Namespace != "" {
		return w.errorAt("metadata.namespace", "a %s is not namespaced", p.Kind)
	}
	p.Labels = labels.LabelArray{
		labels.NewLabel(LabelPolicyDerivedFrom, p.Kind, labels.LabelSourceK8s),
		labels.NewLabel(LabelPolicyName, p.Name, labels.LabelSourceK8s),
	}
	if p.Namespace != "" {
		p.Labels = append(p.Labels, labels.NewLabel(LabelPolicyNamespace, p.Namespace, labels.LabelSourceK8s))
	}
	if m.UID != "" {
		p.Labels = append(p.Labels, labels.NewLabel(LabelPolicyUID, string(m.UID), labels.LabelSourceK8s))
	}
	p.Labels = p.Labels.Sort()
	return nil
}

func (w *walker) cilium(p *Policy, cp *ciliumPolicy) error {
	if err := w.meta(p, &cp.Metadata, p.Kind == KindCNP); err != nil {
		return err
	}
	type located struct {
		rule *api.Rule
		path string
	}
	var rules []located
	if cp.Spec != nil {
		rules = append(rules, located{cp.Spec, "spec"})
	}
	for i, r := range cp.Specs {
		rules = append(rules, located{r, fmt.Sprintf("specs[%d]", i)})
	}
	if len(rules) == 0 {
		return w.errorAt("", "spec or specs is required")
	}
	var errs []error
	for _, lr := range rules {
		if err := w.checkRule(lr.rule, lr.path); err != nil {
			errs = append(errs, err)
			continue
		}
		if p.Namespace != "" {
			restrictToNamespace(lr.rule, p.Namespace)
		}
		lr.rule.Labels = append(lr.rule.Labels, p.Labels...).Sort()
		if err := lr.rule.Sanitize(); err != nil {
			errs = append(errs, w.errorAt(lr.path, "%v", err))
			continue
		}
		p.Rules = append(p.Rules, lr.rule)
	}
	return errors.Join(errs...)
}

// checkRule validates what Sanitize does not check, or checks without
// saying where: every selector, CIDR, entity, port and L7 rule, by path.
func (w *walker) checkRule(r *api.Rule, path string) error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if r.EndpointSelector.LabelSelector == nil {
		add(w.errorAt(path, "endpointSelector is required (nodeSelector is not supported)"))
	} else {
		add(w.selector(&r.EndpointSelector, path+".endpointSelector"))
	}
	for i := range r.Ingress {
		sub := fmt.Sprintf("%s.ingress[%d]", path, i)
		add(w.peers(r.Ingress[i].FromEndpoints, r.Ingress[i].FromCIDR, r.Ingress[i].FromCIDRSet, r.Ingress[i].FromEntities, sub, "from"))
		add(w.portRules(r.Ingress[i].ToPorts, sub))
	}
	for i := range r.IngressDeny {
		sub := fmt.Sprintf("%s.ingressDeny[%d]", path, i)
		add(w.peers(r.IngressDeny[i].FromEndpoints, r.IngressDeny[i].FromCIDR, r.IngressDeny[i].FromCIDRSet, r.IngressDeny[i].FromEntities, sub, "from"))
		add(w.denyPorts(r.IngressDeny[i].ToPorts, sub))
	}
	for i := range r.Egress {
		sub := fmt.Sprintf("%s.egress[%d]", path, i)
		add(w.peers(r.Egress[i].ToEndpoints, r.Egress[i].ToCIDR, r.Egress[i].ToCIDRSet, r.Egress[i].ToEntities, sub, "to"))
		add(w.portRules(r.Egress[i].ToPorts, sub))
	}
	for i := range r.EgressDeny {
		sub := fmt.Sprintf("%s.egressDeny[%d]", path, i)
		add(w.peers(r.EgressDeny[i].ToEndpoints, r.EgressDeny[i].ToCIDR, r.EgressDeny[i].ToCIDRSet, r.EgressDeny[i].ToEntities, sub, "to"))
		add(w.denyPorts(r.EgressDeny[i].ToPorts, sub))
	}
	return errors.Join(errs...)
}

func (w *walker) selector(es *api.EndpointSelector, path string) error {
	if es.LabelSelector == nil {
		return w.errorAt(path, "selector is empty (write {} to select all)")
	}
	cp := api.EndpointSelector{LabelSelector: es.LabelSelector.DeepCopy()}
	if err := cp.Sanitize(); err != nil {
		return w.errorAt(path, "%v", err)
	}
	return nil
}

func (w *walker) peers(eps []api.EndpointSelector, cidrs api.CIDRSlice, sets api.CIDRRuleSlice, ents api.EntitySlice, path, dir string) error {
	var errs []error
	for i := range eps {
		if err := w.selector(&eps[i], fmt.Sprintf("%s.%sEndpoints[%d]", path, dir, i)); err != nil {
			errs = append(errs, err)
		}
	}
	for i, c := range cidrs {
		if _, err := ParseCIDR(string(c)); err != nil {
			errs = append(errs, w.errorAt(fmt.Sprintf("%s.%sCIDR[%d]", path, dir, i), "%v", err))
		}
	}
	for i, s := range sets {
		sub := fmt.Sprintf("%s.%sCIDRSet[%d]", path, dir, i)
		base, err := ParseCIDR(string(s.Cidr))
		if err != nil {
			errs = append(errs, w.errorAt(sub+".cidr", "%v", err))
			continue
		}
		for j, e := range s.ExceptCIDRs {
			ex, err := ParseCIDR(string(e))
			switch {
			case err != nil:
				errs = append(errs, w.errorAt(fmt.Sprintf("%s.except[%d]", sub, j), "%v", err))
			case ex.Addr().Is4() != base.Addr().Is4() || ex.Bits() < base.Bits() || !base.Contains(ex.Addr()):
				errs = append(errs, w.errorAt(fmt.Sprintf("%s.except[%d]", sub, j), "%s is not inside %s", ex, base))
			}
		}
	}
	for i, e := range ents {
		if !supportedEntities[e] {
			errs = append(errs, w.errorAt(fmt.Sprintf("%s.%sEntities[%d]", path, dir, i), "entity %q is not supported by sextant (supported: all, world, world-ipv4, world-ipv6, host, cluster)", e))
		}
	}
	return errors.Join(errs...)
}

// ParseCIDR parses a CIDR as Cilium accepts it (a bare address is a
// host prefix), masked.
func ParseCIDR(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
		}
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

func (w *walker) portRules(prs api.PortRules, path string) error {
	var errs []error
	for i := range prs {
		sub := fmt.Sprintf("%s.toPorts[%d]", path, i)
		if err := w.ports(prs[i].Ports, sub); err != nil {
			errs = append(errs, err)
		}
		if prs[i].Rules != nil {
			if err := w.httpRules(prs[i].Rules.HTTP, prs[i].Ports, sub+".rules.http"); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (w *walker) denyPorts(prs api.PortDenyRules, path string) error {
	var errs []error
	for i := range prs {
		if err := w.ports(prs[i].Ports, fmt.Sprintf("%s.toPorts[%d]", path, i)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (w *walker) ports(pps []api.PortProtocol, path string) error {
	var errs []error
	for i, pp := range pps {
		sub := fmt.Sprintf("%s.ports[%d]", path, i)
		if _, err := ParsePortProtocol(pp); err != nil {
			errs = append(errs, w.errorAt(sub, "%v", err))
		}
	}
	return errors.Join(errs...)
}

// PortRange is a decoded port and protocol: Lo..Hi inclusive, 0..0 means
// every port; Proto is TCP, UDP or ANY.
type PortRange struct {
	Lo, Hi uint16
	Proto  api.L4Proto
}

// ParsePortProtocol checks and decodes one toPorts entry.
func ParsePortProtocol(pp api.PortProtocol) (PortRange, error) {
	var r PortRange
	switch p := api.L4Proto(strings.ToUpper(string(pp.Protocol))); p {
	case "", api.ProtoAny:
		r.Proto = api.ProtoAny
	case api.ProtoTCP, api.ProtoUDP:
		r.Proto = p
	default:
		return r, fmt.Errorf("protocol %q is not supported by sextant (TCP, UDP, ANY)", pp.Protocol)
	}
	if pp.Port == "" || pp.Port == "0" {
		if pp.EndPort != 0 {
			return r, fmt.Errorf("endPort %d needs a port", pp.EndPort)
		}
		return r, nil
	}
	n, err := strconv.ParseUint(pp.Port, 10, 16)
	if err != nil {
		return r, fmt.Errorf("port %q: named ports are not supported by sextant, and a port number is 1-65535", pp.Port)
	}
	r.Lo, r.Hi = uint16(n), uint16(n)
	if pp.EndPort != 0 {
		if pp.EndPort < int32(n) || pp.EndPort > 65535 {
			return r, fmt.Errorf("endPort %d must be between port %d and 65535", pp.EndPort, n)
		}
		r.Hi = uint16(pp.EndPort)
	}
	return r, nil
}

func (w *walker) httpRules(rules api.PortRulesHTTP, ports []api.PortProtocol, path string) error {
	var errs []error
	for _, pp := range ports {
		if r, err := ParsePortProtocol(pp); err == nil && r.Proto == api.ProtoUDP && len(rules) > 0 {
			errs = append(errs, w.errorAt(path, "HTTP rules need TCP ports"))
		}
	}
	for i := range rules {
		sub := fmt.Sprintf("%s[%d]", path, i)
		h := rules[i]
		for _, f := range []struct{ name, re string }{{"path", h.Path}, {"method", h.Method}, {"host", h.Host}} {
			if _, err := regexp.Compile(f.re); err != nil {
				errs = append(errs, w.errorAt(sub+"."+f.name, "invalid regular expression %q: %v", f.re, err))
			}
		}
		for j, hm := range h.HeaderMatches {
			if hm == nil || hm.Name == "" {
				errs = append(errs, w.errorAt(fmt.Sprintf("%s.headerMatches[%d]", sub, j), "name is required"))
			}
		}
		if err := h.Sanitize(); err != nil {
			errs = append(errs, w.errorAt(sub, "%v", err))
		}
	}
	return errors.Join(errs...)
}

// restrictToNamespace adds the namespace requirement Cilium adds to a
// namespaced policy: its subject selector, and every peer selector that
// names no namespace itself, select endpoints of that namespace only.
func restrictToNamespace(r *api.Rule, ns string) {
	nsKey := labels.LabelSourceK8sKeyPrefix + LabelPodNamespace
	restrict := func(es *api.EndpointSelector) {
		if es.LabelSelector == nil || es.HasKey(nsKey) || es.HasKey(labels.LabelSourceAnyKeyPrefix+LabelPodNamespace) || es.HasKey(LabelPodNamespace) {
			return
		}
		if es.MatchLabels == nil {
			es.MatchLabels = map[string]string{}
		}
		es.MatchLabels[nsKey] = ns
	}
	restrictAll := func(ess []api.EndpointSelector) {
		for i := range ess {
			restrict(&ess[i])
		}
	}
	restrict(&r.EndpointSelector)
	for i := range r.Ingress {
		restrictAll(r.Ingress[i].FromEndpoints)
	}
	for i := range r.IngressDeny {
		restrictAll(r.IngressDeny[i].FromEndpoints)
	}
	for i := range r.Egress {
		restrictAll(r.Egress[i].ToEndpoints)
	}
	for i := range r.EgressDeny {
		restrictAll(r.EgressDeny[i].ToEndpoints)
	}
}

// nodeJSON writes a (checked) YAML node as JSON, for the upstream types'
// JSON decoders: the node's own encoding, without an intermediate tree.
func nodeJSON(n *yaml.Node, b *bytes.Buffer) error {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			b.WriteString("null")
			return nil
		}
		return nodeJSON(n.Content[0], b)
	case yaml.MappingNode:
		b.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			k, _ := json.Marshal(n.Content[i].Value)
			b.Write(k)
			b.WriteByte(':')
			if err := nodeJSON(n.Content[i+1], b); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, e := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := nodeJSON(e, b); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case yaml.ScalarNode:
		var v any = n.Value
		if n.Tag != "!!str" {
			// numbers in YAML's forms (0x1F, 1_000), booleans, null, timestamps
			if err := n.Decode(&v); err != nil {
				return err
			}
		}
		j, err := json.Marshal(v)
		if err != nil {
			return err
		}
		b.Write(j)
	default:
		return fmt.Errorf("line %d: YAML aliases are not supported", n.Line)
	}
	return nil
}
