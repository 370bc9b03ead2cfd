package controller

import (
	"context"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/remediation"
)

// HealingPolicyReconciler keeps a policy's status current: its effective mode, the
// disruptive actions reserved under it within its circuit breaker window (counted from
// the namespace's ledger), and, except for the ledger policy, when its latest healing
// finished. For the ledger policy it exports the namespace's outcomes as metrics (the
// outcomes, and that policy's last healing time, are written by the HealingRequest
// controller, see settle).
type HealingPolicyReconciler struct {
	Client client.Client
	Clock  clock.PassiveClock
}

func (r *HealingPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var policies selfhealv1alpha1.HealingPolicyList
	if err := r.Client.List(ctx, &policies, client.InNamespace(req.Namespace)); err != nil {
		return ctrl.Result{}, err
	}
	holder := remediation.LedgerHolder(policies.Items)
	if holder == nil {
		observeOutcomes(req.Namespace, nil) // the namespace's last policy is gone
	} else if holder.Name == req.Name {
		observeOutcomes(req.Namespace, holder.Status.Outcomes)
	}
	p := &selfhealv1alpha1.HealingPolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := p.DeepCopy()
	now := r.Clock.Now()

	var ledger []selfhealv1alpha1.LedgerEntry
	if holder != nil {
		ledger = holder.Status.Ledger
	}
	inWindow, nextExpiry := remediation.CountInWindow(ledger, p.Name, now, p.Spec.GetBreakerWindow())

	if holder == nil || holder.Name != p.Name {
		// The ledger policy's time is written with each outcome (settle), in the
		// update that records it: one write fewer per healing on the burst's hottest
		// object. The namespace's other policies take theirs from the requests.
		last, err := r.lastHealing(ctx, p)
		if err != nil {
			return ctrl.Result{}, err
		}
		p.Status.LastHealingTime = last
	}
	p.Status.Mode = p.Spec.EffectiveMode()
	p.Status.ActionsInWindow = inWindow
	p.Status.ObservedGeneration = p.Generation
	meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{
		Type: selfhealv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: selfhealv1alpha1.ReasonValid,
		Message: "Policy is " + string(p.Status.Mode), ObservedGeneration: p.Generation,
	})
	if !equality.Semantic.DeepEqual(before.Status, p.Status) {
		// A merge patch of the fields above only: the ledger is written by reservations,
		// with optimistic concurrency, and never by this patch.
		if err := r.Client.Status().Patch(ctx, p, client.MergeFrom(before)); err != nil {
			return ctrl.Result{}, err
		}
	}
	// Count down the window exactly when the oldest action leaves it.
	return ctrl.Result{RequeueAfter: nextExpiry}, nil
}

// lastHealing is when the latest healing under p finished.
func (r *HealingPolicyReconciler) lastHealing(ctx context.Context, p *selfhealv1alpha1.HealingPolicy) (*metav1.Time, error) {
	var list selfhealv1alpha1.HealingRequestList
	if err := r.Client.List(ctx, &list, client.InNamespace(p.Namespace), client.MatchingFields{indexStatusPolicy: p.Name}); err != nil {
		return nil, err
	}
	last := p.Status.LastHealingTime // retention deletes the requests, not the fact
	for i := range list.Items {
		if c := healedAfter(&list.Items[i], last); c != nil {
			last = c
		}
	}
	return last, nil
}

// healedAfter is hr's completion when hr healed and finished after last (any time
// when last is nil), and nil otherwise. A policy's last healing time only moves on.
func healedAfter(hr *selfhealv1alpha1.HealingRequest, last *metav1.Time) *metav1.Time {
	c := hr.Status.CompletionTime
	if c == nil || hr.Status.Phase != selfhealv1alpha1.PhaseHealed || (last != nil && !last.Before(c)) {
		return nil
	}
	return c.DeepCopy()
}

func (r *HealingPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("healingpolicy").
		For(&selfhealv1alpha1.HealingPolicy{}).
		Watches(&selfhealv1alpha1.HealingRequest{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if p := o.(*selfhealv1alpha1.HealingRequest).Status.Policy; p != "" {
				return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: p}}}
			}
			return nil
		})).
		// The ledger lives on one policy and counts for all of the namespace's.
		Watches(&selfhealv1alpha1.HealingPolicy{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			var list selfhealv1alpha1.HealingPolicyList
			if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace())); err != nil {
				return nil
			}
			out := make([]reconcile.Request, 0, len(list.Items))
			for i := range list.Items {
				if list.Items[i].Name != o.GetName() {
					out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
				}
			}
			return out
		})).
		Complete(r)
}
