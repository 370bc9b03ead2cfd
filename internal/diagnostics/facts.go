package diagnostics

import (
	"fmt"
	"strings"
	"sync/atomic"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// RestartedAtAnnotation is the pod-template annotation `kubectl rollout restart` sets
// (and selfheal's restart with it); every pod the restart creates carries it too.
const RestartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

// Facts are what a Snapshot says about the target, each derived once and in one place:
// the checks, the classifier, the planner's messages and verification all read these
// instead of the raw objects, so they cannot disagree.
type Facts struct {
	Pods      PodFacts
	Workload  WorkloadFacts
	Endpoints EndpointFacts
	// Policies is the evaluation of the namespace's ingress NetworkPolicies for the
	// caller; not Evaluated when the policies were not read (an observation).
	Policies PolicyFacts
}

// Facts derives the Snapshot's facts on first use and returns the same ones after:
// a Snapshot must not be changed once its facts were asked for. A nil Snapshot has
// empty facts.
func (s *Snapshot) Facts() *Facts {
	if s == nil {
		return computeFacts(nil)
	}
	if f := s.facts.Load(); f != nil {
		return f
	}
	s.facts.CompareAndSwap(nil, computeFacts(s))
	return s.facts.Load()
}

// factsCache memoizes a Snapshot's facts; a Snapshot is never copied by value.
type factsCache = atomic.Pointer[Facts]

func computeFacts(s *Snapshot) *Facts {
	f := &Facts{}
	if s == nil {
		f.Workload = workloadFacts(&Snapshot{})
		return f
	}
	f.Workload = workloadFacts(s)
	// A workload that wants no pod is scaled to zero, whatever its leftover pods
	// (an old ReplicaSet's, not deleted yet) still show.
	f.Pods = analyzePods(s, f.Workload.ScaledToZero())
	f.Endpoints = endpointFacts(s, f.Pods.readyNames)
	f.Policies = evaluateNetworkPolicies(s)
	return f
}

// DesiredReplicas is spec.replicas of a Deployment or StatefulSet, with the API
// server's default (1) when unset; ok is false for any other object.
func DesiredReplicas(obj client.Object) (replicas int32, ok bool) {
	var r *int32
	switch w := obj.(type) {
	case *appsv1.Deployment:
		if w == nil {
			return 0, false
		}
		r = w.Spec.Replicas
	case *appsv1.StatefulSet:
		if w == nil {
			return 0, false
		}
		r = w.Spec.Replicas
	default:
		return 0, false
	}
	if r == nil {
		return 1, true
	}
	return *r, true
}

// PodReady reports the pod's Ready condition. Whether the pod serves also needs it
// to be active (PodFact.Ready is both).
func PodReady(p *corev1.Pod) bool {
	c := podCondition(p, corev1.PodReady)
	return c != nil && c.Status == corev1.ConditionTrue
}

// podActive: neither terminated (Succeeded, Failed) nor being deleted. A terminating
// pod is on its way out (scale-down, rollout): it serves nothing that can be relied
// on, and its problems are not the workload's.
func podActive(p *corev1.Pod) bool {
	return !isTerminal(p) && p.DeletionTimestamp == nil
}

// WorkloadFacts are the facts of the workload behind the Service.
type WorkloadFacts struct {
	// Found: the Deployment or StatefulSet was read.
	Found bool
	// DesiredReplicas is spec.replicas (DesiredReplicas); 1, the API server's default,
	// when no workload was read.
	DesiredReplicas int32
	// Paused: a Deployment with spec.paused; rollouts, restarts included, do not proceed.
	Paused bool
	// RestartedAt is the pod template's RestartedAtAnnotation; empty when unset.
	RestartedAt string
	// SelectorMismatch: the Service's selector does not match the workload's pod
	// template labels, so the Service can never select its pods.
	SelectorMismatch bool
	// ProgressDeadlineExceeded is a Deployment's Progressing=False condition with
	// reason ProgressDeadlineExceeded; nil otherwise.
	ProgressDeadlineExceeded *appsv1.DeploymentCondition
	Rollout                  Rollout
}

// ScaledToZero: the workload was read and wants no pod.
func (w WorkloadFacts) ScaledToZero() bool { return w.Found && w.DesiredReplicas == 0 }

// Rollout is where the workload's rollout stands, as its controller reports it.
type Rollout struct {
	// Settled: no pod will be replaced any more: the controller observed the latest
	// spec, and (Deployment) every pod runs the current template and no old pod is left
	// over, or (StatefulSet) the update revision is current. Settled says nothing about
	// whether the new pods work. Without a workload object there is nothing to wait
	// for, so it is Settled.
	Settled bool
	// Complete: the rollout is done and serving, as `kubectl rollout status` sees it:
	// observed, within its progress deadline, replicas > 0, every desired pod updated
	// and available. Old pods still terminating do not count against it. Without a
	// resolved workload it is Complete (there is no rollout to wait for).
	Complete bool
	// Awaited says what a rollout that is not Complete still waits for.
	Awaited string
}

func workloadFacts(s *Snapshot) WorkloadFacts {
	w := WorkloadFacts{DesiredReplicas: 1}
	var obj client.Object
	var tmpl *corev1.PodTemplateSpec
	switch {
	case s.Deployment != nil:
		obj, tmpl = s.Deployment, &s.Deployment.Spec.Template
		w.Paused = s.Deployment.Spec.Paused
		w.ProgressDeadlineExceeded = progressDeadlineExceeded(s.Deployment)
	case s.StatefulSet != nil:
		obj, tmpl = s.StatefulSet, &s.StatefulSet.Spec.Template
	}
	if obj != nil {
		w.Found = true
		w.DesiredReplicas, _ = DesiredReplicas(obj)
		w.RestartedAt = tmpl.Annotations[RestartedAtAnnotation]
		w.SelectorMismatch = s.Service != nil && len(s.Service.Spec.Selector) > 0 &&
			!labels.SelectorFromSet(s.Service.Spec.Selector).Matches(labels.Set(tmpl.Labels))
	}
	w.Rollout = rollout(s, w)
	return w
}

func rollout(s *Snapshot, w WorkloadFacts) Rollout {
	r := Rollout{Settled: true, Complete: true}
	want := w.DesiredReplicas
	switch d, st := s.Deployment, s.StatefulSet; {
	case d != nil:
		r.Settled = d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == want && d.Status.Replicas == want
	case st != nil:
		r.Settled = st.Status.ObservedGeneration >= st.Generation && st.Status.CurrentRevision == st.Status.UpdateRevision
	}
	if s.Workload == nil {
		return r
	}
	switch s.Workload.Kind {
	case selfhealv1alpha1.WorkloadDeployment:
		r.Awaited = deploymentAwaited(s.Deployment, s.Workload.Name, want, w.ProgressDeadlineExceeded != nil)
	case selfhealv1alpha1.WorkloadStatefulSet:
		r.Awaited = statefulSetAwaited(s.StatefulSet, s.Workload.Name, want)
	default:
		r.Awaited = fmt.Sprintf("workload kind %q cannot be verified", s.Workload.Kind)
	}
	r.Complete = r.Awaited == ""
	return r
}

// deploymentAwaited is what the Deployment's rollout still waits for; empty when
// complete.
func deploymentAwaited(d *appsv1.Deployment, name string, want int32, deadlineExceeded bool) string {
	switch {
	case d == nil:
		return fmt.Sprintf("deployment %q not found", name)
	case d.Status.ObservedGeneration < d.Generation:
		return fmt.Sprintf("deployment %q: waiting for the controller to observe generation %d", d.Name, d.Generation)
	case deadlineExceeded:
		return fmt.Sprintf("deployment %q exceeded its progress deadline", d.Name)
	case want < 1:
		return fmt.Sprintf("deployment %q is scaled to 0 replicas", d.Name)
	case d.Status.UpdatedReplicas < want:
		return fmt.Sprintf("deployment %q: %d/%d pods updated", d.Name, d.Status.UpdatedReplicas, want)
	case d.Status.AvailableReplicas < want:
		return fmt.Sprintf("deployment %q: %d/%d pods available", d.Name, d.Status.AvailableReplicas, want)
	}
	return ""
}

// statefulSetAwaited is the StatefulSet analog of deploymentAwaited; a partition
// lowers how many pods must be updated, and OnDelete updates none by itself.
func statefulSetAwaited(s *appsv1.StatefulSet, name string, want int32) string {
	if s == nil {
		return fmt.Sprintf("statefulset %q not found", name)
	}
	if s.Status.ObservedGeneration < s.Generation {
		return fmt.Sprintf("statefulset %q: waiting for the controller to observe generation %d", s.Name, s.Generation)
	}
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

// deploymentCondition returns the condition of that type, or nil.
func deploymentCondition(d *appsv1.Deployment, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == t {
			return &d.Status.Conditions[i]
		}
	}
	return nil
}

// progressDeadlineExceeded reports Progressing=False with reason
// ProgressDeadlineExceeded, as the deployment controller writes it.
func progressDeadlineExceeded(d *appsv1.Deployment) *appsv1.DeploymentCondition {
	c := deploymentCondition(d, appsv1.DeploymentProgressing)
	if c != nil && c.Status == corev1.ConditionFalse && c.Reason == "ProgressDeadlineExceeded" {
		return c
	}
	return nil
}

// EndpointFacts count the Service's endpoints over all its slices, each endpoint once
// (by its pod, else its addresses). An endpoint is ready as the EndpointSlice API says:
// its ready condition is true or unset, and it is not terminating.
type EndpointFacts struct {
	Ready, NotReady int
	// NotReadyNames name the endpoints that are not ready: "pod (addresses)".
	NotReadyNames []string
	// Serving counts the ready endpoints that point at a ready, active pod of the
	// snapshot: what verification waits for. An endpoint without a pod reference
	// cannot be tied to the workload and is not counted.
	Serving int
}

func endpointReady(ep discoveryv1.Endpoint) bool {
	if t := ep.Conditions.Terminating; t != nil && *t {
		return false
	}
	return ep.Conditions.Ready == nil || *ep.Conditions.Ready
}

func endpointFacts(s *Snapshot, readyPods map[string]bool) EndpointFacts {
	var c EndpointFacts
	seen := map[string]bool{}
	for _, slice := range s.EndpointSlices {
		for _, ep := range slice.Endpoints {
			key := strings.Join(ep.Addresses, ",")
			if ep.TargetRef != nil {
				key = ep.TargetRef.Kind + "/" + ep.TargetRef.Namespace + "/" + ep.TargetRef.Name
			}
			if seen[key] {
				continue
			}
			seen[key] = true
			if endpointReady(ep) {
				c.Ready++
				if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" && readyPods[ep.TargetRef.Name] {
					c.Serving++
				}
				continue
			}
			c.NotReady++
			name := strings.Join(ep.Addresses, ",")
			if ep.TargetRef != nil {
				name = ep.TargetRef.Name + " (" + name + ")"
			}
			c.NotReadyNames = append(c.NotReadyNames, name)
		}
	}
	return c
}
