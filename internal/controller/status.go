package controller

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
)

// setCondition sets a condition with the request's generation as its observedGeneration.
func setCondition(hr *selfhealv1alpha1.HealingRequest, typ string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&hr.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: diagnostics.Truncate(message, 32768),
		ObservedGeneration: hr.Generation,
	})
}

// conditionIs reports whether the condition already carries this reason.
func conditionIs(hr *selfhealv1alpha1.HealingRequest, typ string, reason selfhealv1alpha1.IssueType) bool {
	c := meta.FindStatusCondition(hr.Status.Conditions, typ)
	return c != nil && c.Reason == string(reason)
}

// addProgress appends to the bounded progress log, dropping the oldest entries.
func addProgress(hr *selfhealv1alpha1.HealingRequest, now time.Time, message string) {
	hr.Status.Progress = append(hr.Status.Progress, selfhealv1alpha1.ProgressEntry{
		Time: metav1.Time{Time: now}, Phase: hr.Status.Phase, Message: diagnostics.Truncate(message, 512),
	})
	if n := len(hr.Status.Progress) - selfhealv1alpha1.MaxProgress; n > 0 {
		hr.Status.Progress = append([]selfhealv1alpha1.ProgressEntry(nil), hr.Status.Progress[n:]...)
	}
}

// trimActions keeps the newest actions within the CRD's bound. Intended actions are
// always among the newest, so none is ever dropped before it runs.
func trimActions(hr *selfhealv1alpha1.HealingRequest) {
	if n := len(hr.Status.Actions) - selfhealv1alpha1.MaxActions; n > 0 {
		hr.Status.Actions = append([]selfhealv1alpha1.HealingAction(nil), hr.Status.Actions[n:]...)
	}
}

// intendedAction is the first action recorded but not yet executed.
func intendedAction(hr *selfhealv1alpha1.HealingRequest) *selfhealv1alpha1.HealingAction {
	for i := range hr.Status.Actions {
		if hr.Status.Actions[i].Outcome == selfhealv1alpha1.OutcomeIntended {
			return &hr.Status.Actions[i]
		}
	}
	return nil
}

func boundFindings(fs []selfhealv1alpha1.Finding) []selfhealv1alpha1.Finding {
	if len(fs) > selfhealv1alpha1.MaxFindings {
		fs = fs[:selfhealv1alpha1.MaxFindings]
	}
	out := make([]selfhealv1alpha1.Finding, len(fs))
	for i, f := range fs {
		out[i] = diagnostics.Bound(f)
	}
	return out
}

func klogRef(hr *selfhealv1alpha1.HealingRequest) klog.ObjectRef { return klog.KObj(hr) }

func readyReason(hr *selfhealv1alpha1.HealingRequest) string {
	if c := meta.FindStatusCondition(hr.Status.Conditions, selfhealv1alpha1.ConditionReady); c != nil {
		return c.Reason
	}
	return ""
}
