package controller

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// HealingPolicyReconciler keeps a policy's status current: its effective mode, and the
// disruptive actions taken under it within the circuit breaker's window.
type HealingPolicyReconciler struct {
	Client client.Client
	Clock  clock.PassiveClock
}

func (r *HealingPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &v1.HealingPolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := p.DeepCopy()
	now := r.Clock.Now()

	var list v1.HealingRequestList
	if err := r.Client.List(ctx, &list, client.InNamespace(p.Namespace), client.MatchingFields{indexStatusPolicy: p.Name}); err != nil {
		return ctrl.Result{}, err
	}
	window := p.Spec.GetBreakerWindow()
	var inWindow int32
	var last *metav1.Time
	var nextExpiry time.Duration
	for _, hr := range list.Items {
		if c := hr.Status.CompletionTime; c != nil && hr.Status.Phase == v1.PhaseHealed && (last == nil || last.Before(c)) {
			last = c.DeepCopy()
		}
		for _, a := range hr.Status.Actions {
			if !a.Type.Disruptive() || a.Outcome == v1.OutcomeDryRun {
				continue
			}
			if left := a.StartedAt.Add(window).Sub(now); left > 0 {
				inWindow++
				if nextExpiry == 0 || left < nextExpiry {
					nextExpiry = left
				}
			}
		}
	}
	p.Status.Mode = p.Spec.EffectiveMode()
	p.Status.HealingsInWindow = inWindow
	p.Status.LastHealingTime = last
	p.Status.ObservedGeneration = p.Generation
	meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{
		Type: v1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1.ReasonValid,
		Message: "Policy is " + string(p.Status.Mode), ObservedGeneration: p.Generation,
	})
	if !equality.Semantic.DeepEqual(before.Status, p.Status) {
		if err := r.Client.Status().Patch(ctx, p, client.MergeFrom(before)); err != nil {
			return ctrl.Result{}, err
		}
	}
	// Count down the window exactly when the oldest action leaves it.
	return ctrl.Result{RequeueAfter: nextExpiry}, nil
}

func (r *HealingPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("healingpolicy").
		For(&v1.HealingPolicy{}).
		Watches(&v1.HealingRequest{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if p := o.(*v1.HealingRequest).Status.Policy; p != "" {
				return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: p}}}
			}
			return nil
		})).
		Complete(r)
}
