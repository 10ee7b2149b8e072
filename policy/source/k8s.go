package source

import (
	"errors"
	"fmt"
	"strconv"

	slim_metav1 "github.com/cilium/cilium/pkg/k8s/slim/k8s/apis/meta/v1"
	"github.com/cilium/cilium/pkg/labels"
	"github.com/cilium/cilium/pkg/policy/api"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// namespaceNameLabel is the label every Kubernetes namespace carries with
// its own name; it is the one namespace label a sextant host knows.
const namespaceNameLabel = "kubernetes.io/metadata.name"

// k8s translates a NetworkPolicy into one Cilium rule the way Cilium does
// (pkg/k8s ParseNetworkPolicy): pod selectors are k8s: label selectors
// within the policy's namespace, an empty peer list allows every peer,
// ipBlock is a CIDR set, and policyTypes turns on default deny for a
// direction even without rules.
func (w *walker) k8s(p *Policy, np *k8sPolicy) error {
	if err := w.meta(p, &np.ObjectMeta, true); err != nil {
		return err
	}
	ns := p.Namespace
	var errs []error
	subject, err := w.k8sSelector(&np.Spec.PodSelector, "spec.podSelector", ns)
	if err != nil {
		errs = append(errs, err)
	}
	r := &api.Rule{EndpointSelector: subject}
	ingressType, egressType := true, len(np.Spec.Egress) > 0
	if len(np.Spec.PolicyTypes) > 0 {
		ingressType, egressType = false, false
		for i, t := range np.Spec.PolicyTypes {
			switch t {
			case networkingv1.PolicyTypeIngress:
				ingressType = true
			case networkingv1.PolicyTypeEgress:
				egressType = true
			default:
				errs = append(errs, w.errorAt(fmt.Sprintf("spec.policyTypes[%d]", i), "unknown policy type %q (Ingress, Egress)", t))
			}
		}
	}
	if ingressType {
		for i, in := range np.Spec.Ingress {
			eps, sets, ports, err := w.k8sSection(in.From, in.Ports, fmt.Sprintf("spec.ingress[%d]", i), "from", ns)
			errs = append(errs, err)
			// Cilium rules take one kind of peer each: pods and ipBlocks
			// become two rules with the same ports, as Cilium's parser does.
			if len(eps) > 0 {
				r.Ingress = append(r.Ingress, api.IngressRule{IngressCommonRule: api.IngressCommonRule{FromEndpoints: eps}, ToPorts: ports})
			}
			if len(sets) > 0 {
				r.Ingress = append(r.Ingress, api.IngressRule{IngressCommonRule: api.IngressCommonRule{FromCIDRSet: sets}, ToPorts: ports})
			}
		}
		if len(r.Ingress) == 0 {
			r.Ingress = []api.IngressRule{{}} // selected, nothing allowed: default deny
		}
	}
	if egressType {
		for i, eg := range np.Spec.Egress {
			eps, sets, ports, err := w.k8sSection(eg.To, eg.Ports, fmt.Sprintf("spec.egress[%d]", i), "to", ns)
			errs = append(errs, err)
			if len(eps) > 0 {
				r.Egress = append(r.Egress, api.EgressRule{EgressCommonRule: api.EgressCommonRule{ToEndpoints: eps}, ToPorts: ports})
			}
			if len(sets) > 0 {
				r.Egress = append(r.Egress, api.EgressRule{EgressCommonRule: api.EgressCommonRule{ToCIDRSet: sets}, ToPorts: ports})
			}
		}
		if len(r.Egress) == 0 {
			r.Egress = []api.EgressRule{{}}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	r.Labels = p.Labels
	if err := r.Sanitize(); err != nil {
		return w.errorAt("spec", "%v", err)
	}
	p.Rules = api.Rules{r}
	return nil
}

// k8sSection decodes one ingress or egress rule's peers and ports.
func (w *walker) k8sSection(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, path, peerField, ns string) ([]api.EndpointSelector, api.CIDRRuleSlice, api.PortRules, error) {
	eps, sets, perr := w.k8sPeers(peers, path+"."+peerField, ns)
	pr, err := w.k8sPorts(ports, path+".ports")
	return eps, sets, pr, errors.Join(perr, err)
}

// k8sSelector converts a Kubernetes label selector into a Cilium endpoint
// selector on k8s: labels, restricted to namespace ns unless ns is "".
func (w *walker) k8sSelector(ls *metav1.LabelSelector, path, ns string) (api.EndpointSelector, error) {
	sel := &slim_metav1.LabelSelector{MatchLabels: map[string]string{}}
	for k, v := range ls.MatchLabels {
		sel.MatchLabels[labels.LabelSourceK8sKeyPrefix+k] = v
	}
	for _, e := range ls.MatchExpressions {
		sel.MatchExpressions = append(sel.MatchExpressions, slim_metav1.LabelSelectorRequirement{
			Key:      labels.LabelSourceK8sKeyPrefix + e.Key,
			Operator: slim_metav1.LabelSelectorOperator(e.Operator),
			Values:   e.Values,
		})
	}
	if ns != "" {
		sel.MatchLabels[labels.LabelSourceK8sKeyPrefix+LabelPodNamespace] = ns
	}
	es := api.EndpointSelector{LabelSelector: sel}
	if err := w.selector(&es, path); err != nil {
		return es, err
	}
	return es, nil
}

func (w *walker) k8sPeers(peers []networkingv1.NetworkPolicyPeer, path, ns string) ([]api.EndpointSelector, api.CIDRRuleSlice, error) {
	if len(peers) == 0 {
		// No peers listed: every peer, in or out of the cluster.
		return []api.EndpointSelector{api.WildcardEndpointSelector}, nil, nil
	}
	var eps []api.EndpointSelector
	var sets api.CIDRRuleSlice
	var errs []error
	for i, peer := range peers {
		sub := fmt.Sprintf("%s[%d]", path, i)
		if peer.IPBlock != nil {
			if peer.PodSelector != nil || peer.NamespaceSelector != nil {
				errs = append(errs, w.errorAt(sub, "ipBlock cannot be combined with podSelector or namespaceSelector"))
				continue
			}
			set := api.CIDRRule{Cidr: api.CIDR(peer.IPBlock.CIDR)}
			for _, e := range peer.IPBlock.Except {
				set.ExceptCIDRs = append(set.ExceptCIDRs, api.CIDR(e))
			}
			if err := w.peers(nil, nil, api.CIDRRuleSlice{set}, nil, sub, "ipBlock"); err != nil {
				errs = append(errs, err)
				continue
			}
			sets = append(sets, set)
			continue
		}
		podSel := peer.PodSelector
		if podSel == nil {
			podSel = &metav1.LabelSelector{}
		}
		peerNS := ns
		if peer.NamespaceSelector != nil {
			name, all, err := w.namespaceSelector(peer.NamespaceSelector, sub+".namespaceSelector")
			if err != nil {
				errs = append(errs, err)
				continue
			}
			peerNS = name
			if all {
				peerNS = ""
			}
		}
		es, err := w.k8sSelector(podSel, sub+".podSelector", peerNS)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if peerNS == "" && len(es.MatchLabels) == 0 && len(es.MatchExpressions) == 0 {
			// Every pod of every namespace: Cilium's cluster, not the world.
			es = api.EndpointSelector{LabelSelector: &slim_metav1.LabelSelector{MatchExpressions: []slim_metav1.LabelSelectorRequirement{
				{Key: labels.LabelSourceK8sKeyPrefix + LabelPodNamespace, Operator: slim_metav1.LabelSelectorOpExists},
			}}}
		}
		eps = append(eps, es)
	}
	return eps, sets, errors.Join(errs...)
}

// namespaceSelector accepts what a host can evaluate: {} (every
// namespace) or the namespace name label.
func (w *walker) namespaceSelector(ls *metav1.LabelSelector, path string) (name string, all bool, err error) {
	if len(ls.MatchLabels) == 0 && len(ls.MatchExpressions) == 0 {
		return "", true, nil
	}
	if len(ls.MatchExpressions) > 0 {
		return "", false, w.errorAt(path+".matchExpressions", "namespace label expressions are not supported by sextant (use matchLabels %s)", namespaceNameLabel)
	}
	for k, v := range ls.MatchLabels {
		if k != namespaceNameLabel || len(ls.MatchLabels) != 1 {
			return "", false, w.errorAt(path+".matchLabels."+k, "namespace label %q is not supported by sextant (only %s)", k, namespaceNameLabel)
		}
		name = v
	}
	return name, false, nil
}

func (w *walker) k8sPorts(ports []networkingv1.NetworkPolicyPort, path string) (api.PortRules, error) {
	if len(ports) == 0 {
		return nil, nil
	}
	var pr api.PortRule
	var errs []error
	for i, p := range ports {
		sub := fmt.Sprintf("%s[%d]", path, i)
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		pp := api.PortProtocol{Protocol: api.L4Proto(proto)}
		if p.Port != nil {
			if p.Port.Type == intstr.String {
				if _, err := strconv.Atoi(p.Port.StrVal); err != nil {
					errs = append(errs, w.errorAt(sub+".port", "named port %q is not supported by sextant", p.Port.StrVal))
					continue
				}
				pp.Port = p.Port.StrVal
			} else {
				pp.Port = strconv.Itoa(int(p.Port.IntVal))
			}
		}
		if p.EndPort != nil {
			pp.EndPort = *p.EndPort
		}
		if _, err := ParsePortProtocol(pp); err != nil {
			errs = append(errs, w.errorAt(sub, "%v", err))
			continue
		}
		pr.Ports = append(pr.Ports, pp)
	}
	return api.PortRules{pr}, errors.Join(errs...)
}
