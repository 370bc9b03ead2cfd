package controller

import (
	"context"
	"fmt"
	"sort"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/remediation"
)

// retain deletes a terminal HealingRequest once it is older than the policy's TTL or
// beyond the policy's history per target (newest kept), and otherwise requeues for the
// moment the TTL expires. kubectl get hr stays a readable audit log; etcd stays bounded.
func (r *HealingRequestReconciler) retain(ctx context.Context, s *scope) (ctrl.Result, error) {
	hr := s.hr
	// First, the ledger keeps only what this request really did, and the outcomes
	// record it.
	var policies selfhealv1alpha1.HealingPolicyList
	if err := r.Client.List(ctx, &policies, client.InNamespace(hr.Namespace)); err != nil {
		return ctrl.Result{}, err
	}
	if s.holder = remediation.LedgerHolder(policies.Items); s.holder != nil {
		s.holderName = s.holder.Name
	}
	if err := r.settle(ctx, s, hr); err != nil {
		return ctrl.Result{}, fmt.Errorf("settling the ledger and the outcomes: %w", err)
	}
	spec := selfhealv1alpha1.HealingPolicySpec{}
	if hr.Status.Policy != "" {
		p := &selfhealv1alpha1.HealingPolicy{}
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: hr.Namespace, Name: hr.Status.Policy}, p); err == nil {
			spec = p.Spec
		} else if client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
	}
	finished := hr.CreationTimestamp.Time
	if hr.Status.CompletionTime != nil {
		finished = hr.Status.CompletionTime.Time
	}
	remaining := finished.Add(spec.GetTTLAfterFinished()).Sub(s.now)
	if remaining <= 0 {
		return ctrl.Result{}, r.expire(ctx, hr, "its TTL after finishing passed")
	}

	var list selfhealv1alpha1.HealingRequestList
	if err := r.Client.List(ctx, &list, client.InNamespace(hr.Namespace),
		client.MatchingFields{indexTargetService: hr.Spec.Target.Service}); err != nil {
		return ctrl.Result{}, err
	}
	// The request being reconciled counts as the newest: timestamps have second
	// resolution, and the request that just finished must stay visible. The oldest of
	// the others go first.
	var others []*selfhealv1alpha1.HealingRequest
	for i := range list.Items {
		if o := &list.Items[i]; o.UID != hr.UID && o.Status.Phase.IsTerminal() {
			others = append(others, o)
		}
	}
	if keep := int(spec.GetMaxHistoryPerTarget()) - 1; len(others) > keep {
		sort.Slice(others, func(i, j int) bool { return finishedBefore(others[j], others[i]) }) // newest first
		for _, o := range others[keep:] {
			// Recorded before it goes: its own reconcile may not have run yet.
			if err := r.settle(ctx, s, o); err != nil {
				return ctrl.Result{}, fmt.Errorf("settling %s before deleting it: %w", o.Name, err)
			}
			if err := r.expire(ctx, o, "the history of its target is full"); err != nil {
				return ctrl.Result{}, err
			}
		}
	}
	return ctrl.Result{RequeueAfter: remaining}, nil
}

func (r *HealingRequestReconciler) expire(ctx context.Context, hr *selfhealv1alpha1.HealingRequest, why string) error {
	ctrl.LoggerFrom(ctx).Info("Deleting finished HealingRequest", "healingRequest", klogRef(hr), "reason", why)
	return client.IgnoreNotFound(r.Client.Delete(ctx, hr, client.Preconditions{UID: &hr.UID}))
}

// finishedBefore orders finished requests by completion, then creation, then name.
func finishedBefore(a, b *selfhealv1alpha1.HealingRequest) bool {
	ta, tb := a.CreationTimestamp, b.CreationTimestamp
	if a.Status.CompletionTime != nil && b.Status.CompletionTime != nil && !a.Status.CompletionTime.Equal(b.Status.CompletionTime) {
		return a.Status.CompletionTime.Before(b.Status.CompletionTime)
	}
	if !ta.Equal(&tb) {
		return ta.Before(&tb)
	}
	return a.Name < b.Name
}
