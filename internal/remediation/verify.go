package remediation

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
)

// Verification says whether the target serves again, and if not, what is awaited.
type Verification struct {
	Done    bool
	Message string
}

// Verify decides from a fresh snapshot whether the healing worked: the workload's
// rollout is complete and the Service has at least one ready endpoint backed by a
// ready pod. It is pure.
func Verify(snap *diagnostics.Snapshot) Verification {
	if snap == nil {
		return Verification{Message: "no observation yet"}
	}
	if snap.Service == nil {
		return Verification{Message: fmt.Sprintf("service %q not found", snap.Target.Service)}
	}
	if snap.Workload != nil {
		var awaited string
		switch snap.Workload.Kind {
		case selfhealv1alpha1.WorkloadDeployment:
			awaited = deploymentAwaited(snap.Deployment, snap.Workload.Name)
		case selfhealv1alpha1.WorkloadStatefulSet:
			awaited = statefulSetAwaited(snap.StatefulSet, snap.Workload.Name)
		default:
			awaited = fmt.Sprintf("workload kind %q cannot be verified", snap.Workload.Kind)
		}
		if awaited != "" {
			return Verification{Message: awaited}
		}
	}
	n := readyEndpoints(snap)
	if n == 0 {
		return Verification{Message: fmt.Sprintf("no ready endpoints yet for service %q", snap.Target.Service)}
	}
	return Verification{Done: true, Message: fmt.Sprintf("rollout complete; service %q has %d ready endpoints", snap.Target.Service, n)}
}

// deploymentAwaited is what the Deployment's rollout still waits for, as kubectl
// rollout status sees it; empty when complete. Old replicas still terminating are not
// waited for: they no longer receive traffic.
func deploymentAwaited(d *appsv1.Deployment, name string) string {
	if d == nil {
		return fmt.Sprintf("deployment %q not found", name)
	}
	if d.Status.ObservedGeneration < d.Generation {
		return fmt.Sprintf("deployment %q: waiting for the controller to observe generation %d", d.Name, d.Generation)
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return fmt.Sprintf("deployment %q exceeded its progress deadline", d.Name)
		}
	}
	want := replicasOrOne(d.Spec.Replicas)
	if want < 1 {
		return fmt.Sprintf("deployment %q is scaled to 0 replicas", d.Name)
	}
	if d.Status.UpdatedReplicas < want {
		return fmt.Sprintf("deployment %q: %d/%d pods updated", d.Name, d.Status.UpdatedReplicas, want)
	}
	if d.Status.AvailableReplicas < want {
		return fmt.Sprintf("deployment %q: %d/%d pods available", d.Name, d.Status.AvailableReplicas, want)
	}
	return ""
}

// statefulSetAwaited is the StatefulSet analog of deploymentAwaited.
func statefulSetAwaited(s *appsv1.StatefulSet, name string) string {
	if s == nil {
		return fmt.Sprintf("statefulset %q not found", name)
	}
	if s.Status.ObservedGeneration < s.Generation {
		return fmt.Sprintf("statefulset %q: waiting for the controller to observe generation %d", s.Name, s.Generation)
	}
	want := replicasOrOne(s.Spec.Replicas)
	if want < 1 {
		return fmt.Sprintf("statefulset %q is scaled to 0 replicas", s.Name)
	}
	if s.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType {
		partition := int32(0)
		if ru := s.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.Partition != nil {
			partition = *ru.Partition
		}
		if wantUpdated := want - partition; s.Status.UpdatedReplicas < wantUpdated {
			return fmt.Sprintf("statefulset %q: %d/%d pods updated", s.Name, s.Status.UpdatedReplicas, wantUpdated)
		}
		if partition == 0 && s.Status.UpdateRevision != "" && s.Status.CurrentRevision != s.Status.UpdateRevision {
			return fmt.Sprintf("statefulset %q: waiting for revision %s to become current", s.Name, s.Status.UpdateRevision)
		}
	}
	if s.Status.ReadyReplicas < want {
		return fmt.Sprintf("statefulset %q: %d/%d pods ready", s.Name, s.Status.ReadyReplicas, want)
	}
	if s.Status.AvailableReplicas < want {
		return fmt.Sprintf("statefulset %q: %d/%d pods available", s.Name, s.Status.AvailableReplicas, want)
	}
	return ""
}

// readyEndpoints counts ready endpoints of the Service that point at a ready pod of the
// snapshot. An endpoint without a pod reference cannot be tied to the workload and is
// not counted.
func readyEndpoints(snap *diagnostics.Snapshot) int {
	ready := make(map[string]bool, len(snap.Pods))
	for i := range snap.Pods {
		if podReady(&snap.Pods[i]) {
			ready[snap.Pods[i].Name] = true
		}
	}
	n := 0
	for i := range snap.EndpointSlices {
		for _, ep := range snap.EndpointSlices[i].Endpoints {
			if endpointReady(ep) && ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" && ready[ep.TargetRef.Name] {
				n++
			}
		}
	}
	return n
}

// endpointReady follows the EndpointSlice API: a nil ready condition means ready;
// a terminating endpoint is never counted.
func endpointReady(ep discoveryv1.Endpoint) bool {
	if t := ep.Conditions.Terminating; t != nil && *t {
		return false
	}
	return ep.Conditions.Ready == nil || *ep.Conditions.Ready
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func replicasOrOne(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}
