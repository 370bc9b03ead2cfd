package controller

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/remediation"
)

// Why the ledger makes the limits exact.
//
// Every disruptive action is reserved in one object per namespace, the status of the
// ledger policy, before its intent is recorded and long before it runs. A reservation
// reads the policy from the API server, counts, appends and writes the status back
// with an update that carries the resourceVersion it read. The API server applies
// such an update only if nothing changed the object since: of two reservations that
// counted the same ledger, one is written and the other gets a conflict, reads again
// and counts the first. So the count a reservation is checked against is always the
// count it is written over, whatever the number of workers, processes or replicas
// (an old leader still finishing a reconcile during a handover included). Nothing is
// counted from HealingRequests, which retention and people delete.
//
// A reservation is idempotent per (request, attempt): a controller that reserved and
// died before recording the intent finds its own entry and uses it. A reservation that
// never turned into an action (the healing ended first) is released when the request
// reaches its terminal phase, so the ledger records only what happened. A request
// deleted between reservation and action leaves its entry: the ledger then counts one
// action too many, never one too few.

// ledgerBackoff paces the retries of a reservation that lost a race: every worker of
// every replica may be reserving in the same namespace at once (a storm), and each
// loser must re-read and re-count. Past it, the reconcile fails and is retried.
var ledgerBackoff = wait.Backoff{Steps: 12, Duration: 5 * time.Millisecond, Factor: 1.5, Jitter: 1, Cap: 500 * time.Millisecond}

// reserve records st in the namespace ledger for the next attempt, or returns the
// refusal of the limit it would break.
func (r *HealingRequestReconciler) reserve(ctx context.Context, s *scope, st remediation.Step) (*remediation.Refusal, error) {
	hr := s.hr
	entry := remediation.LedgerEntryFor(hr, s.policy.Name, hr.Status.Attempts+1, st, s.now)
	var refusal *remediation.Refusal
	err := retry.RetryOnConflict(ledgerBackoff, func() error {
		holder, err := r.freshHolder(ctx, s)
		if err != nil {
			return err
		}
		ledger, added, denied := remediation.Reserve(holder.Status.Ledger, remediation.Reservation{
			Entry: entry, Spec: &s.policy.Spec, Namespace: hr.Namespace, Retain: longestWindow(s.policies),
		}, s.now)
		refusal = denied
		if !added {
			return nil // refused, or reserved already by an earlier reconcile
		}
		holder.Status.Ledger = ledger
		// Update, not patch: it carries the resourceVersion read above (see the comment
		// at the top of this file).
		return r.Client.Status().Update(ctx, holder)
	})
	if err != nil {
		return nil, fmt.Errorf("reserving %s on %s in the ledger: %w", st.Type, st.Workload, err)
	}
	if refusal == nil {
		ctrl.LoggerFrom(ctx).Info("Reserved disruptive action", "action", st.Type, "workload", st.Workload.String(),
			"attempt", entry.Attempt, "ledgerPolicy", s.holderName)
	}
	return refusal, nil
}

// release removes this request's reservations that did not become actions. It runs
// when the request reaches a terminal phase, before that phase is written.
//
// Only a reconcile whose view of the request is current may release: one that worked
// from a stale cache (it saw the request still Pending, found an older active request
// and ended it as a duplicate, while another reconcile had already reserved and
// recorded the intent) would release a reservation that is about to become an action,
// and the breaker would then count one action too few. Its status patch fails with a
// conflict anyway; so does the release, before it changes the ledger.
func (r *HealingRequestReconciler) release(ctx context.Context, s *scope) error {
	hr := s.hr
	current := &v1.HealingRequest{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(hr), current); err != nil {
		return client.IgnoreNotFound(err)
	}
	if current.ResourceVersion != hr.ResourceVersion {
		return apierrors.NewConflict(v1.GroupVersion.WithResource("healingrequests").GroupResource(), hr.Name,
			fmt.Errorf("the request changed since it was read (resourceVersion %s, now %s)", hr.ResourceVersion, current.ResourceVersion))
	}
	done := map[int32]v1.ActionType{}
	for _, a := range hr.Status.Actions {
		if a.Type.Disruptive() && (a.Outcome == v1.OutcomeSucceeded || a.Outcome == v1.OutcomeIntended) {
			done[a.Attempt] = a.Type
		}
	}
	keep := func(e v1.LedgerEntry) bool { t, ok := done[e.Attempt]; return ok && t == e.Action }
	return retry.RetryOnConflict(ledgerBackoff, func() error {
		holder, err := r.freshHolder(ctx, s)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		ledger, changed := remediation.Release(holder.Status.Ledger, hr.Name, keep)
		if !changed {
			return nil
		}
		ctrl.LoggerFrom(ctx).Info("Released reservations that did not become actions", "ledgerPolicy", holder.Name)
		holder.Status.Ledger = ledger
		return r.Client.Status().Update(ctx, holder)
	})
}

// mayHoldReservations says whether release has anything to look for: the request
// planned in this reconcile, or the ledger as cached holds one of its entries.
func (s *scope) mayHoldReservations() bool {
	if s.planned {
		return true
	}
	if s.holder != nil {
		for _, e := range s.holder.Status.Ledger {
			if e.Request == s.hr.Name {
				return true
			}
		}
	}
	return false
}

// freshHolder reads the ledger policy from the API server: a reservation counted on a
// stale cached copy would only conflict.
func (r *HealingRequestReconciler) freshHolder(ctx context.Context, s *scope) (*v1.HealingPolicy, error) {
	if s.holderName == "" {
		return nil, apierrors.NewNotFound(v1.GroupVersion.WithResource("healingpolicies").GroupResource(), "")
	}
	p := &v1.HealingPolicy{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: s.hr.Namespace, Name: s.holderName}, p)
	return p, err
}

// longestWindow is how long ledger entries must be kept for every policy of the
// namespace to count its whole window.
func longestWindow(policies []v1.HealingPolicy) (d time.Duration) {
	for i := range policies {
		d = max(d, policies[i].Spec.GetBreakerWindow())
	}
	return d
}
