package diagnostics

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// namespaceNameLabel is set on every namespace by the API server.
const namespaceNameLabel = "kubernetes.io/metadata.name"

// podShape is what policy evaluation needs from a pod or a pod template.
type podShape struct {
	name   string
	labels map[string]string
	spec   *corev1.PodSpec
}

// ServicePort is a Service port resolved to the pod's port it reaches.
type ServicePort struct {
	Port     int32
	Protocol corev1.Protocol
	// Target is the container port number; 0 when a named targetPort resolves to no
	// container port, in which case TargetName still lets named policy ports match.
	Target     int32
	TargetName string
}

func (p ServicePort) String() string {
	if p.Target != 0 && p.Target != p.Port {
		return fmt.Sprintf("%d/%s (target port %d)", p.Port, p.Protocol, p.Target)
	}
	return fmt.Sprintf("%d/%s", p.Port, p.Protocol)
}

// PolicyFacts are the outcome of evaluating the namespace's ingress policies for the
// caller.
type PolicyFacts struct {
	// Evaluated is false when there was nothing to evaluate against (Reason says why):
	// no pods or pod template, or the policies were not read.
	Evaluated bool
	Reason    string
	// Selecting are the ingress policies that select at least one target pod, sorted.
	Selecting []string
	// Blocked are the Service ports no target pod admits the caller on; Partial are
	// ports some pods admit and others do not; Checked are all ports judged.
	Blocked, Partial, Checked []ServicePort
	// CallerUnknown is set when admission depended on who the caller is and no caller
	// was given.
	CallerUnknown bool
}

// AllBlocked reports whether the caller is admitted on none of the checked ports: the
// caller cannot reach the Service at all.
func (v PolicyFacts) AllBlocked() bool {
	return v.Evaluated && len(v.Checked) > 0 && len(v.Blocked) == len(v.Checked)
}

func targetShapes(s *Snapshot) []podShape {
	var out []podShape
	seen := map[string]bool{}
	for i := range s.Pods {
		p := &s.Pods[i]
		if isTerminal(p) {
			continue
		}
		key := labels.Set(p.Labels).String()
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, podShape{name: "pod " + p.Name, labels: p.Labels, spec: &p.Spec})
	}
	if len(out) > 0 {
		return out
	}
	switch {
	case s.Deployment != nil:
		t := &s.Deployment.Spec.Template
		return []podShape{{name: "deployment " + s.Deployment.Name + " pod template", labels: t.Labels, spec: &t.Spec}}
	case s.StatefulSet != nil:
		t := &s.StatefulSet.Spec.Template
		return []podShape{{name: "statefulset " + s.StatefulSet.Name + " pod template", labels: t.Labels, spec: &t.Spec}}
	}
	return nil
}

func resolvePorts(svc *corev1.Service, callerPort int32, pod podShape) []ServicePort {
	var out []ServicePort
	for _, sp := range svc.Spec.Ports {
		if callerPort != 0 && sp.Port != callerPort {
			continue
		}
		proto := sp.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		r := ServicePort{Port: sp.Port, Protocol: proto}
		switch {
		case sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "":
			r.TargetName = sp.TargetPort.StrVal
			r.Target = namedContainerPort(pod.spec, sp.TargetPort.StrVal, proto)
		case sp.TargetPort.IntVal != 0:
			r.Target = sp.TargetPort.IntVal
		default:
			r.Target = sp.Port
		}
		out = append(out, r)
	}
	if len(out) == 0 && callerPort != 0 {
		// The caller's port is not a Service port: judge every port instead.
		return resolvePorts(svc, 0, pod)
	}
	return out
}

func namedContainerPort(spec *corev1.PodSpec, name string, proto corev1.Protocol) int32 {
	if spec == nil {
		return 0
	}
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			pp := p.Protocol
			if pp == "" {
				pp = corev1.ProtocolTCP
			}
			if p.Name == name && pp == proto {
				return p.ContainerPort
			}
		}
	}
	return 0
}

// isIngressPolicy reports whether the policy isolates ingress. Without policyTypes,
// every policy isolates ingress (the API server defaults it so).
func isIngressPolicy(np *networkingv1.NetworkPolicy) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return true
	}
	for _, t := range np.Spec.PolicyTypes {
		if t == networkingv1.PolicyTypeIngress {
			return true
		}
	}
	return false
}

func selectorMatches(sel *metav1.LabelSelector, set map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		// An invalid selector selects nothing, as the API server would never admit it.
		return false
	}
	return s.Matches(labels.Set(set))
}

// admission is the result of one rule for one caller: admits, does not, or cannot
// tell because the caller is unknown.
type admission int

const (
	denies admission = iota
	admits
	unknown
)

func peerAdmits(peer networkingv1.NetworkPolicyPeer, policyNS string, c Caller) admission {
	if peer.IPBlock != nil {
		// An ipBlock names addresses; it cannot admit a pod by who it is.
		return denies
	}
	if c.Namespace == "" {
		return unknown
	}
	if peer.NamespaceSelector == nil {
		if c.Namespace != policyNS {
			return denies
		}
	} else {
		nsLabels := map[string]string{namespaceNameLabel: c.Namespace}
		for k, v := range c.NamespaceLabels {
			nsLabels[k] = v
		}
		if !selectorMatches(peer.NamespaceSelector, nsLabels) {
			return denies
		}
	}
	if peer.PodSelector != nil && !selectorMatches(peer.PodSelector, c.Labels) {
		return denies
	}
	return admits
}

func portAdmits(ports []networkingv1.NetworkPolicyPort, target ServicePort, pod podShape) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if proto != target.Protocol {
			continue
		}
		if p.Port == nil {
			return true
		}
		if p.Port.Type == intstr.Int {
			end := p.Port.IntVal
			if p.EndPort != nil && *p.EndPort > end {
				end = *p.EndPort
			}
			if target.Target >= p.Port.IntVal && target.Target <= end {
				return true
			}
			continue
		}
		if target.TargetName != "" && p.Port.StrVal == target.TargetName {
			return true
		}
		if n := namedContainerPort(pod.spec, p.Port.StrVal, proto); n != 0 && n == target.Target {
			return true
		}
	}
	return false
}

// ruleAdmits evaluates one ingress rule for the caller on one port.
func ruleAdmits(rule networkingv1.NetworkPolicyIngressRule, policyNS string, c Caller, port ServicePort, pod podShape) admission {
	if !portAdmits(rule.Ports, port, pod) {
		return denies
	}
	if len(rule.From) == 0 {
		return admits
	}
	result := denies
	for _, peer := range rule.From {
		switch peerAdmits(peer, policyNS, c) {
		case admits:
			return admits
		case unknown:
			result = unknown
		}
	}
	return result
}

func evaluateNetworkPolicies(s *Snapshot) PolicyFacts {
	v := PolicyFacts{}
	if s.Service == nil {
		return v
	}
	if s.Observation {
		v.Reason = "network policies are not read by an observation"
		return v
	}
	shapes := targetShapes(s)
	if len(shapes) == 0 {
		v.Reason = "no pods or pod template to evaluate policies against"
		return v
	}
	v.Evaluated = true
	selecting := map[string]bool{}
	type portKey struct {
		port  int32
		proto corev1.Protocol
	}
	admittedBy := map[portKey]int{}
	var ports []ServicePort
	for _, shape := range shapes {
		var policies []*networkingv1.NetworkPolicy
		for i := range s.NetworkPolicies {
			np := &s.NetworkPolicies[i]
			if isIngressPolicy(np) && selectorMatches(&np.Spec.PodSelector, shape.labels) {
				policies = append(policies, np)
				selecting[np.Name] = true
			}
		}
		shapePorts := resolvePorts(s.Service, s.Caller.Port, shape)
		if ports == nil {
			ports = shapePorts
		}
		for _, port := range shapePorts {
			key := portKey{port.Port, port.Protocol}
			if len(policies) == 0 {
				admittedBy[key]++
				continue
			}
			result := denies
			for _, np := range policies {
				for _, rule := range np.Spec.Ingress {
					switch ruleAdmits(rule, np.Namespace, s.Caller, port, shape) {
					case admits:
						result = admits
					case unknown:
						if result == denies {
							result = unknown
						}
					}
				}
			}
			switch result {
			case admits:
				admittedBy[key]++
			case unknown:
				v.CallerUnknown = true
				admittedBy[key]++ // benefit of the doubt; reported as a warning
			}
		}
	}
	for name := range selecting {
		v.Selecting = append(v.Selecting, name)
	}
	sort.Strings(v.Selecting)
	v.Checked = ports
	for _, port := range ports {
		switch n := admittedBy[portKey{port.Port, port.Protocol}]; {
		case n == 0:
			v.Blocked = append(v.Blocked, port)
		case n < len(shapes):
			v.Partial = append(v.Partial, port)
		}
	}
	return v
}

func callerString(c Caller) string {
	if c.Namespace == "" {
		return "an unknown caller"
	}
	s := "namespace " + c.Namespace
	if len(c.Labels) > 0 {
		s += " labels " + labels.Set(c.Labels).String()
	}
	return s
}

func portsString(ports []ServicePort) string {
	parts := make([]string, len(ports))
	for i, p := range ports {
		parts[i] = p.String()
	}
	return strings.Join(parts, ", ")
}

// NetworkPolicyCheck says whether the ingress policies that select the target pods
// admit the caller on the Service port, and names the policies that block it.
func NetworkPolicyCheck(s *Snapshot, f *Facts) selfhealv1alpha1.Finding {
	const check = selfhealv1alpha1.CheckNetworkPolicy
	if f, ok := noService(check, s); ok {
		return f
	}
	v := f.Policies
	if !v.Evaluated {
		return finding(check, skipped, nil, "skipped: %s", v.Reason)
	}
	ev := &evidence{}
	for _, name := range v.Selecting {
		ev.add("networkpolicy %s selects the target pods for ingress", name)
	}
	caller := callerString(s.Caller)
	switch {
	case len(v.Selecting) == 0:
		return finding(check, pass, ev, "No ingress NetworkPolicy selects the pods of service %s, so all traffic is admitted.", s.Service.Name)
	case len(v.Checked) == 0:
		return finding(check, skipped, ev, "skipped: service %s has no ports to evaluate", s.Service.Name)
	case v.AllBlocked() && len(v.Selecting) == 1:
		return finding(check, fail, ev, "NetworkPolicy %s selects the pods of service %s and does not admit %s on port %s.",
			v.Selecting[0], s.Service.Name, caller, portsString(v.Blocked))
	case v.AllBlocked():
		return finding(check, fail, ev, "NetworkPolicies %s select the pods of service %s and none admits %s on port %s.",
			strings.Join(v.Selecting, ","), s.Service.Name, caller, portsString(v.Blocked))
	case len(v.Blocked) > 0:
		return finding(check, warn, ev, "NetworkPolicies %s select the pods of service %s and admit %s on some ports but not on %s.",
			strings.Join(v.Selecting, ","), s.Service.Name, caller, portsString(v.Blocked))
	case len(v.Partial) > 0:
		return finding(check, warn, ev, "NetworkPolicies %s admit %s on port %s to some pods of service %s but not others.",
			strings.Join(v.Selecting, ","), caller, portsString(v.Partial), s.Service.Name)
	case v.CallerUnknown:
		return finding(check, warn, ev, "NetworkPolicies %s select the pods of service %s; whether they admit the caller is unknown because no caller was given.",
			strings.Join(v.Selecting, ","), s.Service.Name)
	}
	return finding(check, pass, ev, "NetworkPolicies %s select the pods of service %s and admit %s on port %s.",
		strings.Join(v.Selecting, ","), s.Service.Name, caller, portsString(v.Checked))
}
