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
}

// Field indexes registered on the manager's cache.
const (
	// indexTargetService indexes HealingRequests by spec.target.service.
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
	hr := &HealingRequestReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Clock:     o.Clock,
		Diagnoser: engine,
		Executor: &remediation.Executor{
			Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: o.Clock,
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

// podTransform strips from cached pods what no check reads (environment, volumes,
// commands, managed fields), so the cache of a large namespace stays small.
func podTransform(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	pod.ManagedFields = nil
	pod.Spec.Volumes = nil
	strip := func(cs []corev1.Container) {
		for i := range cs {
			cs[i].Env, cs[i].EnvFrom, cs[i].VolumeMounts, cs[i].VolumeDevices = nil, nil, nil, nil
			cs[i].Command, cs[i].Args = nil, nil
			cs[i].LivenessProbe, cs[i].StartupProbe = nil, nil
		}
	}
	strip(pod.Spec.Containers)
	strip(pod.Spec.InitContainers)
	pod.Spec.EphemeralContainers = nil
	return pod, nil
}
