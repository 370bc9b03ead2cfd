package controller

import (
	"context"
	"sort"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// retain deletes a terminal HealingRequest once it is older than the policy's TTL or
// beyond the policy's history per target (newest kept), and otherwise requeues for the
// moment the TTL expires. kubectl get hr stays a readable audit log; etcd stays bounded.
func (r *HealingRequestReconciler) retain(ctx context.Context, s *scope) (ctrl.Result, error) {
	hr := s.hr
	spec := v1.HealingPolicySpec{}
	if hr.Status.Policy != "" {
		p := &v1.HealingPolicy{}
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

	var list v1.HealingRequestList
	if err := r.Client.List(ctx, &list, client.InNamespace(hr.Namespace),
		client.MatchingFields{indexTargetService: hr.Spec.Target.Service}); err != nil {
		return ctrl.Result{}, err
	}
	var done []*v1.HealingRequest
	for i := range list.Items {
		if list.Items[i].Status.Phase.IsTerminal() {
			done = append(done, &list.Items[i])
		}
	}
	// Any finished request of the target trims the history, so the oldest go as soon
	// as a newer one finishes.
	if max := int(spec.GetMaxHistoryPerTarget()); len(done) > max {
		sort.Slice(done, func(i, j int) bool { return olderThan(done[j], done[i]) }) // newest first
		for _, o := range done[max:] {
			if err := r.expire(ctx, o, "the history of its target is full"); err != nil {
				return ctrl.Result{}, err
			}
			if o.UID == hr.UID {
				return ctrl.Result{}, nil
			}
		}
	}
	return ctrl.Result{RequeueAfter: remaining}, nil
}

func (r *HealingRequestReconciler) expire(ctx context.Context, hr *v1.HealingRequest, why string) error {
	ctrl.LoggerFrom(ctx).Info("Deleting finished HealingRequest", "healingRequest", klogRef(hr), "reason", why)
	return client.IgnoreNotFound(r.Client.Delete(ctx, hr, client.Preconditions{UID: &hr.UID}))
}
