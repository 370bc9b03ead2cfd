package remediation

import (
	"fmt"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
)

// VerdictOutcome is what one look at the target during verification concludes.
type VerdictOutcome string

const (
	// VerdictUnobserved: the observation does not show an action of the attempt yet
	// (the cache lags behind our own write); judging it would judge the state before
	// the action. Wait for the workload's watch.
	VerdictUnobserved VerdictOutcome = "Unobserved"
	// VerdictWaiting: the action is observed, the service does not serve yet, and the
	// attempt has not visibly failed: wait for the watches, or the deadline.
	VerdictWaiting VerdictOutcome = "Waiting"
	// VerdictHealed: the rollout is complete and the Service has a ready endpoint
	// backed by a ready pod.
	VerdictHealed VerdictOutcome = "Healed"
	// VerdictAttemptFailed: the rollout has settled, no pod from before the attempt is
	// left, and the new pods show a failure that waiting will not cure.
	VerdictAttemptFailed VerdictOutcome = "AttemptFailed"
)

// Verdict is Verify's conclusion.
type Verdict struct {
	Outcome VerdictOutcome
	// Message says what was seen, for the Verified condition: what is still awaited,
	// or that the service is back.
	Message string
	// Issue and Summary classify the observation when the service is not back; for
	// VerdictAttemptFailed they are the failure the attempt left.
	Issue   selfhealv1alpha1.IssueType
	Summary string
}

// Verify judges a fresh observation of the target after an attempt. attempt are the
// actions of the current attempt (ActionsOfAttempt); snap is the observation (an
// Engine.Observe snapshot suffices: it reads the workload, pods and EndpointSlices).
// It is pure, and reads only the snapshot's Facts:
//
//  1. An executed action the observation does not show yet (a restart whose stamp is
//     not on the pod template, a scale-up whose replicas are still 0): Unobserved.
//  2. The workload's rollout is complete and the Service has a ready endpoint backed
//     by a ready pod: Healed.
//  3. Pods from before the attempt's restart are still there and not terminating: the
//     pod cache and the workload status are separate watches, and an old pod's failure
//     is not the restart's: Waiting.
//  4. The rollout has settled and the observation classifies as a failure that
//     waiting will not cure (anything but Healthy, NoReadyPods or EndpointsMissing,
//     which starting pods look like too; NoPods only when scaled to zero again):
//     AttemptFailed.
//  5. Otherwise: Waiting.
func Verify(attempt []selfhealv1alpha1.HealingAction, snap *diagnostics.Snapshot) Verdict {
	if snap == nil {
		return Verdict{Outcome: VerdictWaiting, Message: "no observation yet"}
	}
	f := snap.Facts()
	if msg := unobservedAction(attempt, f); msg != "" {
		return Verdict{Outcome: VerdictUnobserved, Message: msg}
	}
	awaited := serviceAwaited(snap, f)
	if awaited == "" {
		return Verdict{Outcome: VerdictHealed, Message: fmt.Sprintf("rollout complete; service %q has %d ready endpoints",
			snap.Target.Service, f.Endpoints.Serving)}
	}
	issue, summary := diagnostics.Classify(snap, nil)
	v := Verdict{Outcome: VerdictWaiting, Message: awaited, Issue: issue, Summary: summary}
	if !oldPodsRemain(attempt, f) && attemptFailed(issue, f) {
		v.Outcome = VerdictAttemptFailed
	}
	return v
}

// ActionsOfAttempt are the actions recorded for attempt n.
func ActionsOfAttempt(actions []selfhealv1alpha1.HealingAction, n int32) []selfhealv1alpha1.HealingAction {
	var out []selfhealv1alpha1.HealingAction
	for _, a := range actions {
		if a.Attempt == n {
			out = append(out, a)
		}
	}
	return out
}

// serviceAwaited is what the service still waits for before it serves again; empty
// when the rollout is complete and it has a ready endpoint backed by a ready pod.
func serviceAwaited(snap *diagnostics.Snapshot, f *diagnostics.Facts) string {
	switch {
	case snap.Service == nil:
		return fmt.Sprintf("service %q not found", snap.Target.Service)
	case !f.Workload.Rollout.Complete:
		return f.Workload.Rollout.Awaited
	case f.Endpoints.Serving == 0:
		return fmt.Sprintf("no ready endpoints yet for service %q", snap.Target.Service)
	}
	return ""
}

// attemptFailed reports whether the attempt has visibly failed: the rollout has
// settled, yet the pods show a failure a wait will not cure.
func attemptFailed(issue selfhealv1alpha1.IssueType, f *diagnostics.Facts) bool {
	if !f.Workload.Rollout.Settled {
		return false
	}
	switch issue {
	case selfhealv1alpha1.IssueNoPods:
		// Scaled to zero (again): waiting will not bring pods.
		return f.Workload.ScaledToZero()
	case selfhealv1alpha1.IssueHealthy, selfhealv1alpha1.IssueNoReadyPods, selfhealv1alpha1.IssueEndpointsMissing:
		// Pods that are starting look like this too: wait for the watches.
		return false
	}
	return true
}

// unobservedAction says which of the attempt's executed actions the observation does
// not reflect yet; empty when it reflects them all.
func unobservedAction(attempt []selfhealv1alpha1.HealingAction, f *diagnostics.Facts) string {
	for _, a := range attempt {
		if a.Outcome != selfhealv1alpha1.OutcomeSucceeded {
			continue
		}
		switch a.Type {
		case selfhealv1alpha1.ActionRolloutRestart:
			if f.Workload.RestartedAt != restartStamp(a) {
				return "Waiting to observe the restart of " + a.Workload.String()
			}
		case selfhealv1alpha1.ActionScaleFromZero:
			if f.Workload.ScaledToZero() {
				return "Waiting to observe the scale-up of " + a.Workload.String()
			}
		}
	}
	return ""
}

// oldPodsRemain reports whether pods from before the attempt's restart are still
// observed and active. Pods of the restarted template carry the restart's stamp;
// old pods do not.
func oldPodsRemain(attempt []selfhealv1alpha1.HealingAction, f *diagnostics.Facts) bool {
	for _, a := range attempt {
		if a.Outcome != selfhealv1alpha1.OutcomeSucceeded || a.Type != selfhealv1alpha1.ActionRolloutRestart {
			continue
		}
		stamp := restartStamp(a)
		for _, p := range f.Pods.Pods {
			if p.Active && p.RestartedAt != stamp {
				return true
			}
		}
	}
	return false
}

// restartStamp is the restartedAt value the action's restart puts on the pod template
// (and so on every pod it creates): the intent's time, as the executor formats it.
func restartStamp(a selfhealv1alpha1.HealingAction) string {
	return RestartStamp(a.StartedAt.Time)
}
