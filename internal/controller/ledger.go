package controller

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
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

// release removes the reservations of a finished request that did not become actions.
// It runs only once the terminal status is persisted (from retain): a reconcile that
// worked from a stale copy of the request may decide to end it, but its status patch
// then fails, and a release made before it would free the reservation of an action
// that is still going to run.
func (r *HealingRequestReconciler) release(ctx context.Context, s *scope) error {
	hr := s.hr
	if !hr.Status.Phase.IsTerminal() || s.holder == nil {
		return nil
	}
	keep := performed(hr)
	// A request that never planned reserved nothing; for one that did, the cache may
	// not show its reservation yet, so the API server is asked.
	planned := meta.FindStatusCondition(hr.Status.Conditions, v1.ConditionRemediationAllowed) != nil
	if _, cached := remediation.Release(s.holder.Status.Ledger, hr.Name, keep); !cached && !planned {
		return nil
	}
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

// performed says which ledger entries of hr stand for an action that ran (or may
// have: an intent still open counts).
func performed(hr *v1.HealingRequest) func(v1.LedgerEntry) bool {
	done := map[int32]v1.ActionType{}
	for _, a := range hr.Status.Actions {
		if a.Type.Disruptive() && (a.Outcome == v1.OutcomeSucceeded || a.Outcome == v1.OutcomeIntended) {
			done[a.Attempt] = a.Type
		}
	}
	return func(e v1.LedgerEntry) bool { t, ok := done[e.Attempt]; return ok && t == e.Action }
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
