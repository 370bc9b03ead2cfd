package remediation

import (
	"fmt"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// The ledger is the namespace's durable record of disruptive actions, in the status of
// one HealingPolicy (the holder). The circuit breaker and the storm limit count it, and
// nothing else: HealingRequests are deleted by retention and by people, the ledger is
// not. These functions are pure; the controller reads the holder, calls Reserve or
// Release, and writes the result back with the resourceVersion it read.

// maxLedgerEntries is the CRD's bound on status.ledger. The storm limit keeps the
// ledger far below it; a namespace whose policies have short windows and high limits
// could still reach it, and then no further action is reserved (fail closed).
const maxLedgerEntries = 1000

// LedgerHolder is the policy whose status holds the namespace's ledger: the oldest
// HealingPolicy (creation, then name), so every worker and replica picks the same one
// from the same list. Nil when there is none.
func LedgerHolder(policies []selfhealv1alpha1.HealingPolicy) *selfhealv1alpha1.HealingPolicy {
	var holder *selfhealv1alpha1.HealingPolicy
	for i := range policies {
		if holder == nil || selfhealv1alpha1.CreatedBefore(&policies[i], holder) {
			holder = &policies[i]
		}
	}
	return holder
}

// Reservation asks the ledger for one disruptive action.
type Reservation struct {
	// Entry is what is recorded; Request and Attempt identify it.
	Entry selfhealv1alpha1.LedgerEntry
	// Spec is the governing policy's: its breaker window and limits decide.
	Spec *selfhealv1alpha1.HealingPolicySpec
	// Namespace names the namespace in messages.
	Namespace string
	// Retain is how long entries are kept: the longest breaker window of the
	// namespace's policies (at least Spec's), so no policy undercounts.
	Retain time.Duration
}

// Reserve returns the ledger with the reservation added (added is true), or the
// refusal of the limit it would break. It is idempotent: a reservation already in the ledger (same request
// and attempt) is granted again without a second entry, so a controller that reserved
// and then failed to record its intent does not reserve twice. Entries older than
// Retain are dropped.
func Reserve(ledger []selfhealv1alpha1.LedgerEntry, r Reservation, now time.Time) (_ []selfhealv1alpha1.LedgerEntry, added bool, _ *Refusal) {
	for _, e := range ledger {
		if e.Request == r.Entry.Request && e.Attempt == r.Entry.Attempt {
			return ledger, false, nil
		}
	}
	if refusal := CheckLimits(ledger, r.Spec, r.Entry.Service, r.Namespace, now); refusal != nil {
		return ledger, false, refusal
	}
	kept := Prune(ledger, now, max(r.Retain, r.Spec.GetBreakerWindow()))
	if len(kept) >= maxLedgerEntries {
		return ledger, false, &Refusal{Phase: selfhealv1alpha1.PhaseSkipped, Reason: selfhealv1alpha1.ReasonStormLimit,
			Message: fmt.Sprintf("The action ledger of namespace %q is full (%d actions within the longest breaker window)",
				r.Namespace, len(kept))}
	}
	return append(kept, r.Entry), true, nil
}

// Release removes the reservations of request for which keep is false: actions that
// were reserved but never carried out (the healing ended first), so the ledger holds
// only what happened. It reports whether anything was removed.
func Release(ledger []selfhealv1alpha1.LedgerEntry, request string, keep func(selfhealv1alpha1.LedgerEntry) bool) ([]selfhealv1alpha1.LedgerEntry, bool) {
	out := make([]selfhealv1alpha1.LedgerEntry, 0, len(ledger))
	for _, e := range ledger {
		if e.Request == request && !keep(e) {
			continue
		}
		out = append(out, e)
	}
	return out, len(out) != len(ledger)
}

// Prune keeps the entries reserved less than retain ago.
func Prune(ledger []selfhealv1alpha1.LedgerEntry, now time.Time, retain time.Duration) []selfhealv1alpha1.LedgerEntry {
	out := make([]selfhealv1alpha1.LedgerEntry, 0, len(ledger)+1)
	for _, e := range ledger {
		if e.ReservedAt.Add(retain).After(now) {
			out = append(out, e)
		}
	}
	return out
}

// CheckLimits is gates 8 and 9: the circuit breaker on service and the storm limit of
// the namespace, counted from the ledger within spec's window. Nil when one more
// disruptive action is allowed.
func CheckLimits(ledger []selfhealv1alpha1.LedgerEntry, spec *selfhealv1alpha1.HealingPolicySpec, service, namespace string, now time.Time) *Refusal {
	window := spec.GetBreakerWindow()
	since := now.Add(-window)

	// 8. Circuit breaker on this target.
	starts := reservedSince(ledger, since, func(e selfhealv1alpha1.LedgerEntry) bool { return e.Service == service })
	if limit := spec.GetMaxActionsPerTarget(); len(starts) >= int(limit) {
		return &Refusal{Phase: selfhealv1alpha1.PhaseSkipped, Reason: selfhealv1alpha1.ReasonCircuitOpen,
			Message: fmt.Sprintf("Circuit breaker open for service %q: %d disruptive actions in the last %s (limit %d); closes in %s",
				service, len(starts), window, limit, untilBelowLimit(starts, limit, window, now))}
	}

	// 9. Storm limit in the namespace.
	starts = reservedSince(ledger, since, func(selfhealv1alpha1.LedgerEntry) bool { return true })
	if limit := spec.GetNamespaceMaxActions(); len(starts) >= int(limit) {
		return &Refusal{Phase: selfhealv1alpha1.PhaseSkipped, Reason: selfhealv1alpha1.ReasonStormLimit,
			Message: fmt.Sprintf("Storm limit reached in namespace %q: %d disruptive actions in the last %s (limit %d); lifts in %s",
				namespace, len(starts), window, limit, untilBelowLimit(starts, limit, window, now))}
	}
	return nil
}

// CountInWindow is how many entries governed by policy were reserved within window.
func CountInWindow(ledger []selfhealv1alpha1.LedgerEntry, policy string, now time.Time, window time.Duration) (n int32, nextExpiry time.Duration) {
	for _, e := range ledger {
		if e.Policy != policy {
			continue
		}
		if left := e.ReservedAt.Add(window).Sub(now); left > 0 {
			n++
			if nextExpiry == 0 || left < nextExpiry {
				nextExpiry = left
			}
		}
	}
	return n, nextExpiry
}

// reservedSince lists, oldest first, the reservation times after since that match.
func reservedSince(ledger []selfhealv1alpha1.LedgerEntry, since time.Time, match func(selfhealv1alpha1.LedgerEntry) bool) []time.Time {
	var starts []time.Time
	for _, e := range ledger {
		if e.ReservedAt.After(since) && match(e) {
			starts = append(starts, e.ReservedAt.Time)
		}
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i].Before(starts[j]) })
	return starts
}

// untilBelowLimit is how long until enough of starts (oldest first, at least limit of
// them) leave the window for one more action to be allowed.
func untilBelowLimit(starts []time.Time, limit int32, window time.Duration, now time.Time) time.Duration {
	over := len(starts) - int(limit)
	if over < 0 || over >= len(starts) {
		return 0
	}
	return roundDuration(starts[over].Add(window).Sub(now))
}

// LedgerEntryFor is the entry a step of a request's attempt reserves.
func LedgerEntryFor(hr *selfhealv1alpha1.HealingRequest, policy string, attempt int32, st Step, now time.Time) selfhealv1alpha1.LedgerEntry {
	return selfhealv1alpha1.LedgerEntry{
		Service: hr.Spec.Target.Service, Workload: st.Workload, Action: st.Type,
		Request: hr.Name, Attempt: attempt, Policy: policy, ReservedAt: metav1.NewMicroTime(now),
	}
}
