// Package diagnostics finds out, read-only, why an in-cluster Service is failing, and
// says what the cluster shows to everyone who judges it afterwards.
//
// The flow a healing follows, and where each step lives:
//
//  1. Snapshot (gather.go): one Gatherer reads the target's state once: the Service,
//     the workload behind it, its pods, EndpointSlices, events, NetworkPolicies,
//     bounded and redacted log tails, and usage where metrics.k8s.io is served.
//     Engine.Observe reads only the Service, the workload, its pods and the
//     EndpointSlices, for verification (Snapshot.Observation).
//  2. Facts (facts.go, podfacts.go, networkpolicy.go): Snapshot.Facts derives, once,
//     every fact the later steps need: pod states (ready, crashlooping, waiting for an
//     image or a config, OOMKilled with the limit, init containers included,
//     unschedulable, failed), desired replicas, the rollout (settled, complete, what it
//     awaits), ready and serving endpoints, and the ingress policies that select the
//     pods and whether they admit the caller. Nothing else re-derives these from the
//     raw objects.
//  3. Checks (checks.go): pure functions of the Snapshot and its Facts, one finding
//     each (DefaultChecks).
//  4. Classification (classify.go): the Facts decide the one issue, in a documented
//     rule order; the findings word its summary.
//  5. Plan and gates, action, verification: package remediation. Its planner decides
//     from the issue and the same Facts (and names the precise cause a person must
//     fix), its executor acts, and Verify judges an observation's Facts.
//
// Nothing here writes to the cluster.
package diagnostics

import (
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// Target is what is diagnosed: a Service, and optionally the workload behind it.
type Target struct {
	Namespace string
	Service   string
	// Workload, when set, is used instead of resolving it from the Service's pods.
	Workload *selfhealv1alpha1.WorkloadReference
	// FailureClass is what the caller saw. A target that looks healthy to Kubernetes
	// but times out or answers 5xx is Unresponsive, not Healthy.
	FailureClass selfhealv1alpha1.FailureClass
}

// Caller identifies who calls the target (the gateway), so network policies can be
// checked for whether they admit it.
type Caller struct {
	Namespace string
	Labels    map[string]string
	// NamespaceLabels are the labels of the caller's namespace, for namespaceSelector
	// peers. The automatic kubernetes.io/metadata.name label is implied from Namespace.
	NamespaceLabels map[string]string
	// Port is the Service port (number) the caller calls; 0 means every Service port.
	Port int32
}

// ContainerLog is a bounded, redacted tail of one container's log.
type ContainerLog struct {
	Pod       string
	Container string
	Previous  bool
	// Lines are the last lines read, secrets already redacted.
	Lines []string
	// Err says why the log could not be read (for example: no kubelet); empty on success.
	Err string
}

// ContainerUsage is one container's usage from metrics.k8s.io.
type ContainerUsage struct {
	Pod       string
	Container string
	CPU       resource.Quantity
	Memory    resource.Quantity
}

// Usage is resource usage where the metrics API is served.
type Usage struct {
	// Available is false when metrics.k8s.io is not served; the check is then skipped.
	Available  bool
	Containers []ContainerUsage
	// Err says why usage could not be read although the API is served; empty otherwise.
	Err string
}

// Snapshot is everything the checks look at, read once per diagnosis.
type Snapshot struct {
	Target Target
	Caller Caller
	// GatheredAt is the injected clock's time when the reads were made.
	GatheredAt time.Time

	// Service is nil when the Service does not exist.
	Service *corev1.Service
	// Workload is the resolved workload, nil when none could be resolved.
	Workload *selfhealv1alpha1.WorkloadReference
	// Deployment or StatefulSet is set according to Workload.Kind.
	Deployment  *appsv1.Deployment
	StatefulSet *appsv1.StatefulSet

	// Pods are the pods the Service selects (and, when a workload is known, that the
	// workload owns), including those in phase Failed.
	Pods []corev1.Pod
	// EndpointSlices are the Service's slices (label kubernetes.io/service-name).
	EndpointSlices []discoveryv1.EndpointSlice
	// Events are recent events about the pods (for causes such as image not found).
	Events []corev1.Event
	// Logs are tails of the current and previous containers of unhealthy pods.
	Logs []ContainerLog
	// NetworkPolicies are all policies in the target's namespace.
	NetworkPolicies []networkingv1.NetworkPolicy
	Usage           Usage

	// Observation is set on a Snapshot from Engine.Observe: only the Service, the
	// workload, its pods and the EndpointSlices were read; Events, Logs,
	// NetworkPolicies and Usage are empty because they were not read.
	Observation bool

	facts factsCache
}
