package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/remediation"
)

// Why the ledger makes the limits exact, and each action happen once.
//
// Every disruptive action is reserved in one object per namespace, the status of the
// ledger policy, before it runs. A reservation reads the policy, counts, appends and
// writes the status back with an update that carries the resourceVersion it read. The
// API server applies such an update only if nothing changed the object since: of two
// reservations that counted the same ledger, one is written and the other gets a
// conflict, reads again and counts the first. So the count a reservation is checked
// against is always the count it is written over, whatever the number of workers,
// processes or replicas (an old leader still finishing a reconcile during a handover
// included). Nothing is counted from HealingRequests, which retention and people
// delete.
//
// The first read is the cached copy (see holderRead): a stale one cannot be written
// over, for its resourceVersion is no longer current, so the cache only saves the
// round trip when it is up to date. A decision that writes nothing (a refusal, an
// entry found reserved already) is never taken from the cache: the API server has no
// say in it, so it is taken again from a fresh read.
//
// A reservation is unique per (request, attempt), and it is the attempt's intent: the
// reconcile whose update added it is the only one that ever will, so it acts at once
// (see plan). One that finds the attempt reserved already adopts that reservation
// (its action, workload and time) and records it as an intent in the request's status
// first, with the request's resourceVersion, so a reconcile that works from a stale
// copy of the request is refused before it acts. For the uniqueness to hold, no entry
// leaves the ledger while its request may still act: a reservation that never became
// an action (the healing ended first, or the action failed) is only marked released
// when the request reaches its terminal phase, and every entry stays at least
// remediation.MinLedgerRetention, longer than any healing's deadline. A reservation
// the request's status never recorded is never released: its reconcile may have
// acted and then lost its status write, so the ledger counts one action too many,
// never one too few. So does a request deleted between reservation and action.

// ledgerBackoff paces the retries of a reservation that lost a race: every worker of
// every replica may be reserving in the same namespace at once (a storm), and each
// loser must re-read and re-count. Past it, the reconcile fails and is retried.
var ledgerBackoff = wait.Backoff{Steps: 12, Duration: 5 * time.Millisecond, Factor: 1.5, Jitter: 1, Cap: 500 * time.Millisecond}

// reserve records st in the namespace ledger for the next attempt, or returns the
// refusal of the limit it would break. granted is the reservation: this one, or the
// one an earlier reconcile made for the same attempt (s.reserved tells them apart).
func (r *HealingRequestReconciler) reserve(ctx context.Context, s *scope, st remediation.Step) (granted selfhealv1alpha1.LedgerEntry, _ *remediation.Refusal, _ error) {
	hr := s.hr
	entry := remediation.LedgerEntryFor(hr, s.policy.Name, hr.Status.Attempts+1, st, s.now)
	var refusal *remediation.Refusal
	var added bool
	read := r.holderRead(s)
	err := retry.OnError(ledgerBackoff, retryLedger, func() error {
		holder, cached, err := read(ctx)
		if err != nil {
			return err
		}
		var ledger []selfhealv1alpha1.LedgerEntry
		ledger, granted, added, refusal = remediation.Reserve(holder.Status.Ledger, remediation.Reservation{
			Entry: entry, Spec: &s.policy.Spec, Namespace: hr.Namespace, Retain: longestWindow(s.policies),
		}, s.now)
		if !added {
			if cached {
				return errUnconfirmed
			}
			return nil // refused, or reserved already by an earlier reconcile
		}
		holder.Status.Ledger = ledger
		// The holder's own count as its controller would write it, in the same update:
		// during a burst of healings, one write per reservation instead of two.
		holder.Status.ActionsInWindow, _ = remediation.CountInWindow(ledger, holder.Name, s.now, holder.Spec.GetBreakerWindow())
		// Update, not patch: it carries the resourceVersion read above (see the comment
		// at the top of this file).
		if err := r.Client.Status().Update(ctx, holder); err != nil {
			return err
		}
		s.holder = holder // current: the next step's reservation starts from it
		return nil
	})
	if err != nil {
		return granted, nil, fmt.Errorf("reserving %s on %s in the ledger: %w", st.Type, st.Workload, err)
	}
	s.reserved = added
	switch {
	case added:
		ctrl.LoggerFrom(ctx).Info("Reserved disruptive action", "action", st.Type, "workload", st.Workload.String(),
			"attempt", entry.Attempt, "ledgerPolicy", s.holderName)
	case refusal == nil:
		ctrl.LoggerFrom(ctx).Info("Adopting the reservation an earlier reconcile made", "action", granted.Action,
			"workload", granted.Workload.String(), "attempt", granted.Attempt, "reservedAt", granted.ReservedAt, "released", granted.Released)
	}
	return granted, refusal, nil
}

// Why every finished healing is recorded in the outcomes exactly once.
//
// The outcomes (status.outcomes of the ledger policy) are written by settle, in the
// same optimistic-concurrency update as the release of the request's unused
// reservations, and only from retain, that is once the request's terminal status is
// persisted: a reconcile that worked from a stale copy and "finished" a request whose
// patch then failed never reaches it. The outcome recorded is read from that persisted
// status, which never changes again.
//
//   - Never twice. The update that adds a request also adds its name and UID to
//     outcomes.recorded, in the same object and the same write: no state exists in
//     which the request is counted but not marked. A second recording (a retried
//     reconcile, a restart, a second manager or worker, the requeue at the TTL) reads
//     the policy from the API server, finds the mark and writes nothing; two that
//     read the same version both add it, one write wins and the other gets a
//     conflict, reads again and finds the mark. When the list is full, the request
//     that finished first leaves it and becomes outcomes.recordedThrough: every
//     request finished no later than it (by completion time, then UID) counts as
//     recorded, so a request that left the list is still never counted again.
//   - Never lost. A terminal request is reconciled (the watch sees its final status)
//     and retried with backoff until settle succeeds; a manager that dies first
//     reconciles it again when it (or the next leader) starts, since the marks are in
//     the API server, not in memory. Retention records a request before it deletes it.
//     What can be lost: a request a person deletes before any manager reconciled its
//     final status, or one that waits unrecorded while 64 requests that finished
//     after it are recorded (recordedThrough then passes it); with one recording per
//     reconcile of a just-finished request, that needs a settle failing for as long
//     as 64 others succeed, and the loss is counted too few, never too many.
//   - Bounded. Every list has a bound the recording trims to and the CRD enforces
//     (10,000 recordings are exercised in internal/remediation's tests).

// settle, for a terminal request, releases its reservations that did not become
// actions and records its outcome, in one update of the ledger policy. It runs only
// once the terminal status is persisted (from retain): a reconcile that worked from a
// stale copy of the request may decide to end it, but its status patch then fails, and
// a release made before it would free the reservation of an action that is still going
// to run.
func (r *HealingRequestReconciler) settle(ctx context.Context, s *scope, hr *selfhealv1alpha1.HealingRequest) error {
	if !hr.Status.Phase.IsTerminal() || s.holder == nil {
		return nil
	}
	keep := performed(hr)
	uid := string(hr.UID)
	outcome, _ := remediation.OutcomeOf(hr)
	// A request that never planned reserved nothing; for one that did, the cache may
	// not show its reservation yet, so the API server is asked. The outcome is recorded
	// unless the cached policy shows it recorded already (the API server is asked
	// before anything is written).
	planned := meta.FindStatusCondition(hr.Status.Conditions, selfhealv1alpha1.ConditionRemediationAllowed) != nil
	_, cached := remediation.Release(s.holder.Status.Ledger, hr.Name, uid, keep)
	if !cached && !planned && remediation.Recorded(s.holder.Status.Outcomes, outcome) {
		return nil
	}
	var recorded bool
	read := r.holderRead(s)
	err := retry.OnError(ledgerBackoff, retryLedger, func() error {
		recorded = false
		holder, cached, err := read(ctx)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		ledger, released := remediation.Release(holder.Status.Ledger, hr.Name, uid, keep)
		if holder.Status.Outcomes == nil {
			holder.Status.Outcomes = &selfhealv1alpha1.Outcomes{}
		}
		recorded = remediation.Record(holder.Status.Outcomes, outcome)
		// The ledger policy's last healing time is written here, with the outcome, in
		// the same update: a healing costs no write of the policy controller.
		var last *metav1.Time
		if hr.Status.Policy == holder.Name {
			last = healedAfter(hr, holder.Status.LastHealingTime)
		}
		if !released && !recorded && last == nil {
			if cached {
				return errUnconfirmed
			}
			return nil
		}
		if released {
			ctrl.LoggerFrom(ctx).Info("Released reservations that did not become actions", "healingRequest", klogRef(hr), "ledgerPolicy", holder.Name)
		}
		holder.Status.Ledger = ledger
		if last != nil {
			holder.Status.LastHealingTime = last
		}
		// Update, not patch: it carries the resourceVersion read above.
		return r.Client.Status().Update(ctx, holder)
	})
	if err == nil && recorded {
		observeOutcome(outcome)
	}
	return err
}

// performed says which ledger entries of hr stand for an action that ran or may have:
// an intent still open counts, and so does a reservation of an attempt the status
// never recorded (its reconcile may have acted and then lost its status write).
func performed(hr *selfhealv1alpha1.HealingRequest) func(selfhealv1alpha1.LedgerEntry) bool {
	done := map[int32]selfhealv1alpha1.ActionType{}
	for _, a := range hr.Status.Actions {
		if a.Type.Disruptive() && (a.Outcome == selfhealv1alpha1.OutcomeSucceeded || a.Outcome == selfhealv1alpha1.OutcomeIntended) {
			done[a.Attempt] = a.Type
		}
	}
	return func(e selfhealv1alpha1.LedgerEntry) bool {
		t, ok := done[e.Attempt]
		return (ok && t == e.Action) || e.Attempt > hr.Status.Attempts
	}
}

// errUnconfirmed asks for the ledger to be read again from the API server: a decision
// taken from the cached copy would write nothing, so nothing would confirm it.
var errUnconfirmed = errors.New("ledger decision taken from the cache; reading it again")

// retryLedger is when a ledger read-decide-update is tried again: it lost a race, or
// its decision from the cache needs a fresh read.
func retryLedger(err error) bool {
	return apierrors.IsConflict(err) || errors.Is(err, errUnconfirmed)
}

// holderRead returns the reads of the ledger policy for one read-decide-update: the
// copy this reconcile has from the cache first, then the API server's. Deciding on the
// cached copy saves a round trip when it is current; when it is not, its update
// conflicts (see the comment at the top of this file).
func (r *HealingRequestReconciler) holderRead(s *scope) func(context.Context) (_ *selfhealv1alpha1.HealingPolicy, cached bool, _ error) {
	tried := false
	return func(ctx context.Context) (*selfhealv1alpha1.HealingPolicy, bool, error) {
		if !tried && s.holder != nil {
			tried = true
			return s.holder.DeepCopy(), true, nil
		}
		tried = true
		p, err := r.freshHolder(ctx, s)
		return p, false, err
	}
}

// freshHolder reads the ledger policy from the API server.
func (r *HealingRequestReconciler) freshHolder(ctx context.Context, s *scope) (*selfhealv1alpha1.HealingPolicy, error) {
	if s.holderName == "" {
		return nil, apierrors.NewNotFound(selfhealv1alpha1.GroupVersion.WithResource("healingpolicies").GroupResource(), "")
	}
	p := &selfhealv1alpha1.HealingPolicy{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: s.hr.Namespace, Name: s.holderName}, p)
	return p, err
}

// longestWindow is how long ledger entries must be kept for every policy of the
// namespace to count its whole window.
func longestWindow(policies []selfhealv1alpha1.HealingPolicy) (d time.Duration) {
	for i := range policies {
		d = max(d, policies[i].Spec.GetBreakerWindow())
	}
	return d
}
