package remediation

import (
	"fmt"
	"strings"
	"time"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// Evidence is what the learning rule saw: the latest results of one action on one
// issue of one Service within the window, newest first.
type Evidence struct {
	Service string
	Issue   selfhealv1alpha1.IssueType
	Action  selfhealv1alpha1.ActionType
	Window  time.Duration
	Results []selfhealv1alpha1.HealingResult
}

// Ineffective is the learning rule (gate 12): the latest minAttempts results of action
// on issue of service within window, newest first, and whether they all failed. Fewer
// results than minAttempts, or any success among them, lets the action run: the rule
// only stops repeating what has demonstrably not worked.
func Ineffective(history []selfhealv1alpha1.TargetHistory, service string, issue selfhealv1alpha1.IssueType, action selfhealv1alpha1.ActionType,
	minAttempts int32, window time.Duration, now time.Time) (Evidence, bool) {
	ev := Evidence{Service: service, Issue: issue, Action: action, Window: window}
	since := now.Add(-window)
	for _, h := range history {
		if h.Service != service || h.Issue != issue || h.Action != action {
			continue
		}
		for i := len(h.Results) - 1; i >= 0 && len(ev.Results) < int(minAttempts); i-- {
			if r := h.Results[i]; r.FinishedAt.After(since) && !r.FinishedAt.After(now) {
				ev.Results = append(ev.Results, r)
			}
		}
	}
	if minAttempts < 1 || len(ev.Results) < int(minAttempts) {
		return ev, false
	}
	for _, r := range ev.Results {
		if r.Healed {
			return ev, false
		}
	}
	return ev, true
}

// learningGate is gate 12: the refusal of an action the history says does not heal.
func learningGate(in Input, spec *selfhealv1alpha1.HealingPolicySpec, service string, steps []Step) *Refusal {
	if !spec.LearningEnabled() || len(steps) == 0 {
		return nil
	}
	action := steps[len(steps)-1].Type // the step meant to heal; a cleanup comes first
	min, window := spec.GetLearningMinAttempts(), spec.GetLearningWindow()
	ev, stop := Ineffective(in.History, service, in.Issue, action, min, window, in.Now)
	if !stop {
		return nil
	}
	parts := make([]string, 0, len(ev.Results))
	for _, r := range ev.Results {
		parts = append(parts, fmt.Sprintf("%s ended %s %s ago", r.Request, r.Reason, roundDuration(in.Now.Sub(r.FinishedAt.Time))))
	}
	return &Refusal{Phase: selfhealv1alpha1.PhaseManualInterventionRequired, Reason: selfhealv1alpha1.ReasonActionIneffective,
		Message: fmt.Sprintf("%s healed 0 of the last %d %s healings of service %q within %s (%s): not trying it again; a person must find the cause (spec.learning of HealingPolicy %q: minAttempts %d, window %s)",
			action, len(ev.Results), in.Issue, service, window, strings.Join(parts, "; "), in.Policy.Name, min, window)}
}
