package remediation

import (
	"fmt"
	"slices"
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
// refusal of the limit it would break. It is idempotent: a reservation already in the
// ledger for the same request and attempt, released or not, is returned as granted
// without a second entry (added is false). Entries older than the retention are
// dropped.
func Reserve(ledger []selfhealv1alpha1.LedgerEntry, r Reservation, now time.Time) (_ []selfhealv1alpha1.LedgerEntry, granted selfhealv1alpha1.LedgerEntry, added bool, _ *Refusal) {
	if e, ok := Reserved(ledger, r.Entry.Request, r.Entry.RequestUID, r.Entry.Attempt); ok {
		return ledger, e, false, nil
	}
	if refusal := CheckLimits(ledger, r.Spec, r.Entry.Service, r.Namespace, now); refusal != nil {
		return ledger, r.Entry, false, refusal
	}
	kept := Prune(ledger, now, max(r.Retain, r.Spec.GetBreakerWindow()))
	if len(kept) >= maxLedgerEntries {
		return ledger, r.Entry, false, &Refusal{Phase: selfhealv1alpha1.PhaseSkipped, Reason: selfhealv1alpha1.ReasonStormLimit,
			Message: fmt.Sprintf("The action ledger of namespace %q is full (%d actions within the longest breaker window)",
				r.Namespace, len(kept))}
	}
	return append(kept, r.Entry), r.Entry, true, nil
}

// Reserved finds the reservation of a request's attempt (released or not).
func Reserved(ledger []selfhealv1alpha1.LedgerEntry, request, uid string, attempt int32) (selfhealv1alpha1.LedgerEntry, bool) {
	for _, e := range ledger {
		if owns(e, request, uid) && e.Attempt == attempt {
			return e, true
		}
	}
	return selfhealv1alpha1.LedgerEntry{}, false
}

// owns says whether e is a reservation of the request named request with UID uid; an
// entry without a UID (written before entries had one) goes by the name.
func owns(e selfhealv1alpha1.LedgerEntry, request, uid string) bool {
	return e.Request == request && (e.RequestUID == "" || uid == "" || e.RequestUID == uid)
}

// Release marks released the reservations of a request for which keep is false:
// actions that were reserved but never carried out (the healing ended first), so the
// limits count only what happened. A released entry stays until it is pruned: the
// request and attempt stay reserved, and no late reconcile can reserve them again and
// act. It reports whether anything changed; the ledger given is not modified.
func Release(ledger []selfhealv1alpha1.LedgerEntry, request, uid string, keep func(selfhealv1alpha1.LedgerEntry) bool) ([]selfhealv1alpha1.LedgerEntry, bool) {
	out := slices.Clone(ledger)
	changed := false
	for i := range out {
		if owns(out[i], request, uid) && !out[i].Released && !keep(out[i]) {
			out[i].Released = true
			changed = true
		}
	}
	return out, changed
}

// MinLedgerRetention is the least time an entry is kept, whatever the windows: longer
// than the longest deadline (10m) with room for clock skew, so every reservation of a
// healing outlives the healing and its request and attempt stay unique while it may act.
const MinLedgerRetention = 15 * time.Minute

// Prune keeps the entries reserved less than retain (at least MinLedgerRetention) ago.
func Prune(ledger []selfhealv1alpha1.LedgerEntry, now time.Time, retain time.Duration) []selfhealv1alpha1.LedgerEntry {
	retain = max(retain, MinLedgerRetention)
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
		if e.Policy != policy || e.Released {
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
		if !e.Released && e.ReservedAt.After(since) && match(e) {
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
		Request: hr.Name, RequestUID: string(hr.UID), Attempt: attempt, Policy: policy, ReservedAt: metav1.NewMicroTime(now),
	}
}
