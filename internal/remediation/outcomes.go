package remediation

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// The outcomes are the namespace's durable summary of finished healings, in the status
// of the ledger policy next to the ledger (see LedgerHolder). These functions are
// pure: the controller reads the holder, calls Record, and writes the result back with
// the resourceVersion it read (internal/controller/ledger.go says why a request is then
// recorded exactly once). Every list is bounded, whatever the number of healings.

// Outcome is one finished HealingRequest as the outcomes record it.
type Outcome struct {
	Request string
	UID     string
	Service string
	Issue   selfhealv1alpha1.IssueType
	// Action is the last action the healing executed; empty when it executed none.
	Action selfhealv1alpha1.ActionType
	Phase  selfhealv1alpha1.HealingPhase
	// Reason and Message are the request's Ready condition's.
	Reason  string
	Message string
	// FinishedAt is the request's completion time, in whole seconds (as stored).
	FinishedAt time.Time
	// TimeToHeal is from the controller's first sight of the request (StartOf) to
	// Healed; zero otherwise.
	TimeToHeal time.Duration
	// Healing: the request counts as a healing (see selfhealv1alpha1.Outcomes).
	Healing bool
}

// Healed reports whether the healing ended Healed.
func (o Outcome) Healed() bool { return o.Phase == selfhealv1alpha1.PhaseHealed }

// OutcomeOf is the outcome of a terminal request; false while it runs.
func OutcomeOf(hr *selfhealv1alpha1.HealingRequest) (Outcome, bool) {
	st := &hr.Status
	if !st.Phase.IsTerminal() {
		return Outcome{}, false
	}
	finished := hr.CreationTimestamp.Time
	if st.CompletionTime != nil {
		finished = st.CompletionTime.Time
	}
	o := Outcome{
		Request: hr.Name, UID: string(hr.UID), Service: hr.Spec.Target.Service, Issue: st.Issue,
		Phase: st.Phase, FinishedAt: finished.Truncate(time.Second),
	}
	for _, c := range st.Conditions {
		if c.Type == selfhealv1alpha1.ConditionReady {
			o.Reason, o.Message = c.Reason, c.Message
		}
	}
	// The last executed action decides: in [DeleteFailedPods, RolloutRestart] the
	// restart is what was meant to heal.
	for _, a := range st.Actions {
		if a.Outcome == selfhealv1alpha1.OutcomeSucceeded || a.Outcome == selfhealv1alpha1.OutcomeFailed {
			o.Action = a.Type
		}
	}
	if o.Healed() {
		o.TimeToHeal = max(0, finished.Sub(StartOf(hr)))
	}
	switch {
	case st.DuplicateOf != "":
		// It followed another request: that one is the healing.
	case o.Action != "":
		o.Healing = true // it acted, whatever the phase (a breaker may end it Skipped)
	case st.Phase == selfhealv1alpha1.PhaseHealed || st.Phase == selfhealv1alpha1.PhaseFailed || st.Phase == selfhealv1alpha1.PhaseManualInterventionRequired:
		o.Healing = true
	}
	return o, true
}

// StartOf is when a healing started: status.startTime, on the same clock as its
// completion time, else its creation.
func StartOf(hr *selfhealv1alpha1.HealingRequest) time.Time {
	if hr.Status.StartTime != nil {
		return hr.Status.StartTime.Time
	}
	return hr.CreationTimestamp.Time
}

// Recorded reports whether o needs no recording: it is not a healing, or it was
// recorded already (it is in out.Recorded, or finished no later than
// out.RecordedThrough).
func Recorded(out *selfhealv1alpha1.Outcomes, o Outcome) bool {
	if !o.Healing {
		return true
	}
	if out == nil {
		return false
	}
	for _, r := range out.Recorded {
		if r.UID == o.UID && r.Name == o.Request {
			return true
		}
	}
	return out.RecordedThrough != nil && !keyAfter(o.FinishedAt, o.UID, out.RecordedThrough)
}

// keyAfter orders recorded requests by completion, then UID.
func keyAfter(finished time.Time, uid string, r *selfhealv1alpha1.RecordedRequest) bool {
	if c := finished.Compare(r.FinishedAt.Time); c != 0 {
		return c > 0
	}
	return uid > r.UID
}

// Record adds o to out and reports whether out changed: false when o is not a healing
// or was recorded already, so recording the same request again changes nothing.
func Record(out *selfhealv1alpha1.Outcomes, o Outcome) bool {
	if Recorded(out, o) {
		return false
	}
	at := metav1.NewTime(o.FinishedAt)
	out.Healings++
	if o.Healed() {
		out.Healed++
	}
	out.SuccessRate = fmt.Sprintf("%d%%", out.Healed*100/out.Healings)
	if o.Issue != "" {
		// A healing that ended before any diagnosis (its deadline passed) has no issue
		// to count or learn from; it still counts as a healing.
		recordByIssue(out, o, at)
		recordHistory(out, o, at)
	}
	recordService(out, o, at)
	recordManual(out, o, at)

	out.Recorded = append(out.Recorded, selfhealv1alpha1.RecordedRequest{Name: o.Request, UID: o.UID, FinishedAt: at})
	if n := len(out.Recorded) - selfhealv1alpha1.MaxRecordedRequests; n > 0 {
		slices.SortFunc(out.Recorded, func(a, b selfhealv1alpha1.RecordedRequest) int {
			return cmp.Or(a.FinishedAt.Compare(b.FinishedAt.Time), strings.Compare(a.UID, b.UID))
		})
		last := out.Recorded[n-1]
		if out.RecordedThrough == nil || keyAfter(last.FinishedAt.Time, last.UID, out.RecordedThrough) {
			out.RecordedThrough = &last
		}
		out.Recorded = slices.Clone(out.Recorded[n:])
	}
	return true
}

func recordByIssue(out *selfhealv1alpha1.Outcomes, o Outcome, at metav1.Time) {
	i := slices.IndexFunc(out.ByIssue, func(e selfhealv1alpha1.IssueActionOutcomes) bool { return e.Issue == o.Issue && e.Action == o.Action })
	if i < 0 {
		out.ByIssue = append(out.ByIssue, selfhealv1alpha1.IssueActionOutcomes{Issue: o.Issue, Action: o.Action})
		i = len(out.ByIssue) - 1
	}
	e := &out.ByIssue[i]
	e.Healings++
	if at.After(e.LastSeen.Time) {
		e.LastSeen = at
	}
	if o.Healed() {
		e.Healed++
		if len(e.TimeToHealBuckets) != selfhealv1alpha1.TimeToHealBucketCount {
			e.TimeToHealBuckets = make([]int64, selfhealv1alpha1.TimeToHealBucketCount)
		}
		secs := int64(o.TimeToHeal.Round(time.Second) / time.Second)
		e.TimeToHealBuckets[bucketOf(secs)]++
		e.TimeToHealSeconds += secs
		e.AverageTimeToHeal = &metav1.Duration{Duration: time.Duration(e.TimeToHealSeconds/e.Healed) * time.Second}
		e.P50, e.P90 = quantile(e.TimeToHealBuckets, 0.5), quantile(e.TimeToHealBuckets, 0.9)
	}
	slices.SortFunc(out.ByIssue, func(a, b selfhealv1alpha1.IssueActionOutcomes) int {
		return cmp.Or(strings.Compare(string(a.Issue), string(b.Issue)), strings.Compare(string(a.Action), string(b.Action)))
	})
	// Issues and actions are enums, so the list cannot outgrow its bound; were the
	// enums to grow, the least recently seen pair would leave.
	for len(out.ByIssue) > selfhealv1alpha1.MaxOutcomesByIssue {
		j := oldestBy(out.ByIssue, func(e selfhealv1alpha1.IssueActionOutcomes) time.Time { return e.LastSeen.Time })
		out.ByIssue = slices.Delete(out.ByIssue, j, j+1)
	}
}

// oldestBy is the index of the element with the earliest time.
func oldestBy[T any](s []T, t func(T) time.Time) int {
	oldest := 0
	for i := range s {
		if t(s[i]).Before(t(s[oldest])) {
			oldest = i
		}
	}
	return oldest
}

// bucketOf is the index of the time-to-heal bucket of secs.
func bucketOf(secs int64) int {
	for i, le := range selfhealv1alpha1.TimeToHealBuckets {
		if secs <= le {
			return i
		}
	}
	return len(selfhealv1alpha1.TimeToHealBuckets)
}

// quantile is the upper bound of the bucket the q-quantile falls in.
func quantile(buckets []int64, q float64) string {
	var total int64
	for _, n := range buckets {
		total += n
	}
	if total == 0 {
		return ""
	}
	rank := int64(q*float64(total) + 0.999999) // ceil, at least 1
	rank = max(rank, 1)
	var seen int64
	for i, n := range buckets {
		seen += n
		if seen >= rank {
			if i < len(selfhealv1alpha1.TimeToHealBuckets) {
				return "<=" + shortDuration(time.Duration(selfhealv1alpha1.TimeToHealBuckets[i])*time.Second)
			}
			break
		}
	}
	return ">" + shortDuration(time.Duration(selfhealv1alpha1.TimeToHealBuckets[len(selfhealv1alpha1.TimeToHealBuckets)-1])*time.Second)
}

// shortDuration writes 30s, 2m, 1m30s.
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", d/time.Second)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}

func recordService(out *selfhealv1alpha1.Outcomes, o Outcome, at metav1.Time) {
	i := slices.IndexFunc(out.TopServices, func(e selfhealv1alpha1.ServiceOutcomes) bool { return e.Service == o.Service })
	if i < 0 {
		if len(out.TopServices) >= selfhealv1alpha1.MaxTopServices {
			// The Service with the fewest healings, the least recently seen among
			// equals, leaves the list.
			least := 0
			for j, e := range out.TopServices {
				l := out.TopServices[least]
				if e.Healings < l.Healings || (e.Healings == l.Healings && e.LastSeen.Before(&l.LastSeen)) {
					least = j
				}
			}
			out.TopServices = slices.Delete(out.TopServices, least, least+1)
		}
		out.TopServices = append(out.TopServices, selfhealv1alpha1.ServiceOutcomes{Service: o.Service})
		i = len(out.TopServices) - 1
	}
	e := &out.TopServices[i]
	e.Healings++
	if o.Healed() {
		e.Healed++
	}
	if at.After(e.LastSeen.Time) {
		e.LastSeen = at
	}
	slices.SortStableFunc(out.TopServices, func(a, b selfhealv1alpha1.ServiceOutcomes) int {
		return cmp.Or(cmp.Compare(b.Healings, a.Healings), b.LastSeen.Compare(a.LastSeen.Time), strings.Compare(a.Service, b.Service))
	})
}

func recordManual(out *selfhealv1alpha1.Outcomes, o Outcome, at metav1.Time) {
	if o.Healed() {
		// A later healing of the Service that healed it ends the wait.
		for i := range out.ManualInterventions {
			m := &out.ManualInterventions[i]
			if m.Service == o.Service && m.ResolvedAt == nil && !m.At.After(o.FinishedAt) {
				m.ResolvedAt = at.DeepCopy()
			}
		}
		return
	}
	if o.Phase != selfhealv1alpha1.PhaseManualInterventionRequired {
		return
	}
	m := selfhealv1alpha1.ManualIntervention{Request: o.Request, Service: o.Service, Issue: o.Issue,
		Reason: truncate(o.Reason, 64), Message: truncate(o.Message, selfhealv1alpha1.MaxManualInterventionText), At: at}
	out.ManualInterventions = append([]selfhealv1alpha1.ManualIntervention{m}, out.ManualInterventions...)
	slices.SortStableFunc(out.ManualInterventions, func(a, b selfhealv1alpha1.ManualIntervention) int { return b.At.Compare(a.At.Time) })
	if len(out.ManualInterventions) > selfhealv1alpha1.MaxManualInterventions {
		out.ManualInterventions = out.ManualInterventions[:selfhealv1alpha1.MaxManualInterventions]
	}
}

// Waiting counts the manual interventions no later healing of their Service resolved.
func Waiting(out *selfhealv1alpha1.Outcomes) int {
	n := 0
	if out != nil {
		for _, m := range out.ManualInterventions {
			if m.IsWaiting() {
				n++
			}
		}
	}
	return n
}

func recordHistory(out *selfhealv1alpha1.Outcomes, o Outcome, at metav1.Time) {
	if o.Action == "" {
		return // the learning rule judges actions; a healing that took none says nothing
	}
	res := selfhealv1alpha1.HealingResult{Request: o.Request, Healed: o.Healed(), Reason: truncate(o.Reason, 64), FinishedAt: at}
	i := slices.IndexFunc(out.History, func(h selfhealv1alpha1.TargetHistory) bool {
		return h.Service == o.Service && h.Issue == o.Issue && h.Action == o.Action
	})
	if i < 0 {
		out.History = append(out.History, selfhealv1alpha1.TargetHistory{Service: o.Service, Issue: o.Issue, Action: o.Action})
		i = len(out.History) - 1
	}
	h := &out.History[i]
	h.Results = append(h.Results, res)
	slices.SortStableFunc(h.Results, func(a, b selfhealv1alpha1.HealingResult) int { return a.FinishedAt.Compare(b.FinishedAt.Time) })
	if n := len(h.Results) - selfhealv1alpha1.MaxOutcomeHistoryResults; n > 0 {
		h.Results = slices.Clone(h.Results[n:])
	}
	if len(out.History) > selfhealv1alpha1.MaxOutcomeHistory {
		latest := func(h selfhealv1alpha1.TargetHistory) time.Time { return h.Results[len(h.Results)-1].FinishedAt.Time }
		j := oldestBy(out.History, latest)
		out.History = slices.Delete(out.History, j, j+1)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - 3
	for cut > 0 && !utf8Start(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }
