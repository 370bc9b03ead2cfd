// Package controller reconciles HealingRequests through persisted phases (diagnose,
// remediate within policy, verify) and keeps HealingPolicy status current. The engines
// it drives live in internal/diagnostics and internal/remediation; this package only
// orchestrates them and records what happened.
package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
	"github.com/selfheal-dev/selfheal/internal/remediation"
)

// Caller identifies the callers of healed services (the gateway), so network policies
// can be checked for whether they admit it.
type Caller = diagnostics.Caller

// Options configure the controllers.
type Options struct {
	MaxConcurrentReconciles int
	Caller                  Caller
	// Clock is injected so deadlines, cooldowns and retention are tested exactly.
	// Defaults to the real clock.
	Clock clock.PassiveClock
	// Diagnoser replaces the default diagnostics engine (tests).
	Diagnoser diagnostics.Engine
	// Client and APIReader replace the manager's cached client and uncached reader in
	// the HealingRequest controller and its executor (tests: a cache that lags, reads
	// or writes that fail).
	Client    client.Client
	APIReader client.Reader
}

// restartedAtAnnotation is the one pod annotation the cache keeps: verification tells
// the pods of a restart by it.
const restartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

// Field indexes registered on the manager's cache.
const (
	// indexTargetService indexes HealingRequests by spec.target.service in the cache;
	// it is also the CRD's selectable field, so uncached lists select by it the same way.
	indexTargetService = "spec.target.service"
	// indexStatusPolicy indexes HealingRequests by status.policy.
	indexStatusPolicy = "status.policy"
)

// Setup registers indexes and both controllers with the manager.
func Setup(mgr ctrl.Manager, o Options) error {
	ctx := context.Background()
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.MaxConcurrentReconciles < 1 {
		o.MaxConcurrentReconciles = 1
	}
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &selfhealv1alpha1.HealingRequest{}, indexTargetService, func(o client.Object) []string {
		return []string{o.(*selfhealv1alpha1.HealingRequest).Spec.Target.Service}
	}); err != nil {
		return fmt.Errorf("indexing HealingRequests by target: %w", err)
	}
	if err := idx.IndexField(ctx, &selfhealv1alpha1.HealingRequest{}, indexStatusPolicy, func(o client.Object) []string {
		if p := o.(*selfhealv1alpha1.HealingRequest).Status.Policy; p != "" {
			return []string{p}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing HealingRequests by policy: %w", err)
	}
	if err := diagnostics.IndexEvents(ctx, idx); err != nil {
		return fmt.Errorf("indexing events: %w", err)
	}

	engine := o.Diagnoser
	if engine == nil {
		kube, err := kubernetes.NewForConfig(mgr.GetConfig())
		if err != nil {
			return err
		}
		g := diagnostics.NewGatherer(mgr.GetClient(), kube, o.Clock, diagnostics.Options{UseEventIndex: true})
		engine = diagnostics.NewEngine(g, diagnostics.DefaultChecks()...)
	}
	if o.Client == nil {
		o.Client = mgr.GetClient()
	}
	if o.APIReader == nil {
		o.APIReader = mgr.GetAPIReader()
	}
	hr := &HealingRequestReconciler{
		Client:    o.Client,
		APIReader: o.APIReader,
		Clock:     o.Clock,
		Diagnoser: engine,
		Executor: &remediation.Executor{
			Client: o.Client, APIReader: o.APIReader, Clock: o.Clock,
		},
		Recorder: mgr.GetEventRecorder("selfheal-controller"),
		Caller:   o.Caller,
	}
	if err := hr.SetupWithManager(mgr, o.MaxConcurrentReconciles); err != nil {
		return err
	}
	hp := &HealingPolicyReconciler{Client: mgr.GetClient(), Clock: o.Clock}
	return hp.SetupWithManager(mgr)
}

// podTransform strips from cached pods what no check reads, so the cache of a large
// cluster stays small (measured by BenchmarkManagerHeapPerPod and BenchmarkScale).
// Kept: identity, labels, owners, the restart stamp annotation, the node, each
// container's name, image, ports and limits, and the status the checks read (phase,
// reason, message, pod IP, the Ready, ContainersReady and PodScheduled conditions, and
// the container states). A check that starts reading another field must keep it here.
func podTransform(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	pod.ManagedFields, pod.GenerateName, pod.Finalizers = nil, "", nil
	if stamp, ok := pod.Annotations[restartedAtAnnotation]; ok {
		pod.Annotations = map[string]string{restartedAtAnnotation: stamp}
	} else {
		pod.Annotations = nil
	}
	pod.Spec = corev1.PodSpec{
		Containers: trimContainers(pod.Spec.Containers), InitContainers: trimContainers(pod.Spec.InitContainers),
		NodeName: pod.Spec.NodeName,
	}
	st := &pod.Status
	var conditions []corev1.PodCondition
	for _, c := range st.Conditions {
		if c.Type == corev1.PodReady || c.Type == corev1.ContainersReady || c.Type == corev1.PodScheduled {
			conditions = append(conditions, c)
		}
	}
	pod.Status = corev1.PodStatus{
		Phase: st.Phase, Reason: st.Reason, Message: st.Message, PodIP: st.PodIP, Conditions: conditions,
		ContainerStatuses: trimStatuses(st.ContainerStatuses), InitContainerStatuses: trimStatuses(st.InitContainerStatuses),
	}
	return pod, nil
}

func trimContainers(cs []corev1.Container) []corev1.Container {
	out := make([]corev1.Container, len(cs))
	for i, c := range cs {
		// Limits only: the OOM and usage checks compare with limits; nothing reads requests.
		out[i] = corev1.Container{Name: c.Name, Image: c.Image, Ports: c.Ports,
			Resources: corev1.ResourceRequirements{Limits: c.Resources.Limits}}
	}
	return out
}

func trimStatuses(ss []corev1.ContainerStatus) []corev1.ContainerStatus {
	out := make([]corev1.ContainerStatus, len(ss))
	for i, s := range ss {
		out[i] = corev1.ContainerStatus{Name: s.Name, State: s.State, LastTerminationState: s.LastTerminationState,
			Ready: s.Ready, RestartCount: s.RestartCount, Started: s.Started}
	}
	return out
}
