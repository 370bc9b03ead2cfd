// Package remediation decides and carries out the bounded actions that heal a target.
// It continues the flow package diagnostics starts (snapshot -> facts -> checks ->
// classification):
//
//  1. Plan (planner.go, pure): the classified issue, the Snapshot's Facts, the policy
//     and the namespace's ledger give either steps or a refusal, through the gates
//     below. A refusal that needs a person says the precise cause (ManualReason, read
//     from the same Facts the issue was classified from).
//  2. Gates the API server answers (the controller): the namespace's opt-in
//     (Executor.Missing) and the reservation in the ledger (ledger.go).
//  3. Action (executor.go): an Executor performs one recorded step against the live
//     workload, uncached, idempotently for the same intent; Applied tells whether a
//     recorded intent was carried out.
//  4. Verification (verify.go, pure): Verify judges a cheap observation
//     (diagnostics.Engine.Observe) against the attempt's actions: not observed yet,
//     healed, waiting, or the attempt failed. The controller only acts on its verdict.
//
// # Gates
//
// Plan applies its gates in this order; the first that refuses decides:
//
//  1. No policy: Skipped (NoPolicy). Diagnosis is still reported; nothing is remediated.
//  2. Policy paused (spec.pauseRequests non-empty): Skipped (Paused).
//  3. Issue not healable by a restart: ImagePullBackOff, ConfigError, Unschedulable,
//     NetworkPolicyBlocked and DeploymentPaused end ManualInterventionRequired with the
//     precise cause (a person must change an image, a config, capacity or a policy);
//     TargetNotFound ends Failed (there is nothing to heal and nothing on the workload a
//     person could fix: the request names something that does not exist). A healable
//     issue with nothing to act on (no Deployment or StatefulSet behind the Service, pods
//     missing although replicas > 0, a StatefulSet with updateStrategy OnDelete) also
//     ends ManualInterventionRequired here.
//  4. OOMKilled: a restart would be OOMKilled again, so the healing ends
//     ManualInterventionRequired ("memory limit of container X (limit Y) needs a
//     change"); before that, failed pods are deleted when there are any, the policy
//     allows DeleteFailedPods and the Deployment is not paused (Decision.After).
//     Cleanup is not disruptive, so cooldown, breaker and storm limit do not apply.
//  5. Healthy: nothing to do (AlreadyHealthy); the controller verifies and ends Healed.
//  6. Dry run (policy spec.dryRun or request spec.dryRun): the steps are returned with
//     DryRun set and are never executed. The later gates only guard execution, so they
//     do not refuse a dry run; the one that would refuse a real run is reported in
//     Decision.WouldRefuse.
//  7. Cooldown: within policy cooldown after the last healing of the same target
//     ended: Skipped (Cooldown), with the remaining time.
//  8. Circuit breaker: disruptive actions on this target within the breaker window
//     >= maxActionsPerTarget: Skipped (CircuitBreakerOpen). Only plans with a disruptive
//     step are counted against it.
//  9. Storm limit: disruptive actions in the namespace within the window >=
//     namespaceMaxActions: Skipped (StormLimit). Only plans with a disruptive step.
//
// Gates 8 and 9 count the namespace's ledger (ledger.go), not HealingRequests. Plan
// sees the ledger as read; the controller then reserves the action in the ledger with
// optimistic concurrency (Reserve runs the same CheckLimits on the ledger it writes),
// so the limits hold exactly however many workers and replicas plan at once.
//  10. Paused Deployment: never touched: ManualInterventionRequired (DeploymentPaused).
//  11. An action the plan needs is not in spec.allowedActions:
//     ManualInterventionRequired (ActionNotAllowed), naming the action.
//  12. Learning (learning.go, spec.learning): the action meant to heal (the last step)
//     healed none of the last minAttempts (default 3) healings of the same issue of
//     the same Service within the window (default 24h), as the namespace's outcomes
//     record them: ManualInterventionRequired (ActionIneffective), naming those
//     healings. It comes last, so it only ever refuses an action every other gate
//     allows, and before the ledger reservation, so a refused action reserves
//     nothing. Fewer results, or one success among them, let the action run; a
//     refusal is no result (nothing was tried), so the rule does not feed itself,
//     and results leave the window. spec.learning.disabled turns it off.
//
// # Issue to action
//
//	CrashLoopBackOff, NoReadyPods, EndpointsMissing,
//	Unresponsive (ready, yet calls time out or 5xx)  -> [DeleteFailedPods,] RolloutRestart
//	NoPods with spec.replicas 0                      -> ScaleFromZero
//	FailedPods                                       -> DeleteFailedPods
//	OOMKilled                                        -> [DeleteFailedPods,] then ManualInterventionRequired
//	Healthy                                          -> nothing (verify)
//	ImagePullBackOff, ConfigError, Unschedulable,
//	NetworkPolicyBlocked, DeploymentPaused           -> ManualInterventionRequired
//	TargetNotFound                                   -> Failed
//
// DeleteFailedPods in brackets is added, first, only when the target has pods in phase
// Failed and the policy allows it; a missing permission for the optional cleanup never
// blocks the restart.
//
// A scale from zero is not followed by a restart (DESIGN says "scale to 1, then
// restart"): the pods the scale-up creates are new and run the current template, so a
// restart would only replace fresh pods, roll the workload a second time and count a
// second disruptive action against the breaker. If the new pod fails, the controller's
// next attempt diagnoses it again and plans what that failure needs.
package remediation

import (
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
)

// ActionRecord is one action recorded in a HealingRequest's status, as the controller
// read it, for the cooldown.
type ActionRecord struct {
	// Service the healing was for.
	Service string
	// Outcome of the action. Intended counts as executed: the manager may have stopped
	// after acting and before recording the outcome. DryRun never counts.
	Outcome selfhealv1alpha1.ActionOutcome
	// FinishedAt is when the healing the action belongs to reached a terminal phase;
	// zero while it runs.
	FinishedAt time.Time
}

// executed reports whether the action may have changed the cluster.
func (r ActionRecord) executed() bool {
	return r.Outcome != selfhealv1alpha1.OutcomeDryRun
}

// Input is everything Plan decides from. Plan reads nothing else: no clock, no client.
type Input struct {
	// Issue is the classified problem.
	Issue selfhealv1alpha1.IssueType
	// Snapshot is the observed state the issue was classified from. Nil is treated as
	// an empty snapshot (the target is then not found).
	Snapshot *diagnostics.Snapshot
	// Policy governs the healing; nil when no policy applies.
	Policy *selfhealv1alpha1.HealingPolicy
	// DryRun is the HealingRequest's spec.dryRun.
	DryRun bool
	// Now is the injected clock's time.
	Now time.Time
	// Ledger is the namespace's ledger of disruptive actions, including this request's
	// earlier attempts (they count against the breaker too), for gates 8 and 9.
	Ledger []selfhealv1alpha1.LedgerEntry
	// LastHealingEnded is when the latest healing of this target that executed an
	// action ended; zero when none did. Healings that acted on nothing (skipped,
	// refused, dry runs) must not count, or every refused request would extend the
	// cooldown forever. LastHealingEnded(History, target) computes it.
	LastHealingEnded time.Time
	// History is the namespace's outcome history (the ledger policy's
	// status.outcomes.history), for gate 12.
	History []selfhealv1alpha1.TargetHistory
}

// Step is one action to execute.
type Step struct {
	Type selfhealv1alpha1.ActionType
	// Workload is the object acted on.
	Workload selfhealv1alpha1.WorkloadReference
	// Reason says why this step is planned, for people.
	Reason string
	// At is when the intent to run this step was recorded. The restart stamps it as
	// restartedAt, so executing the same intent twice (a manager that died after
	// acting, before recording the outcome) changes nothing the second time. Zero
	// means the executor's clock.
	At time.Time
}

// Refusal ends a healing without (further) action.
type Refusal struct {
	// Reason is one of the Reason* constants of api/v1alpha1.
	Reason string
	// Message is the precise cause, for people.
	Message string
	// Phase is the terminal phase: Skipped, Failed or ManualInterventionRequired.
	Phase selfhealv1alpha1.HealingPhase
}

// CountsLedger reports whether the refusal is a limit counted from the ledger (the
// circuit breaker, the storm limit).
func (r *Refusal) CountsLedger() bool {
	return r.Reason == selfhealv1alpha1.ReasonCircuitOpen || r.Reason == selfhealv1alpha1.ReasonStormLimit
}

// Decision is what Plan decided. Exactly one of these holds:
//   - Refusal != nil: nothing runs; the healing ends in Refusal.Phase.
//   - Steps non-empty: run them in order (or, with DryRun, record them and run none);
//     then, if After != nil, end in After.Phase, else verify.
//   - neither: nothing to do (Reason AlreadyHealthy); verify.
type Decision struct {
	Steps []Step
	// DryRun: record the steps as planned (outcome DryRun) and execute none.
	DryRun bool
	// After, when set, ends the healing in After.Phase once Steps have run, instead of
	// verifying (OOMKilled: cleanup, then a person must raise the memory limit).
	After *Refusal
	// WouldRefuse, in a dry run, is the refusal a real run would get now from a gate
	// after the dry-run gate (cooldown, breaker, storm, paused Deployment, action not
	// allowed, learning).
	WouldRefuse *Refusal
	Refusal     *Refusal
	// Reason and Message describe the decision for the RemediationAllowed condition:
	// Allowed, DryRun or AlreadyHealthy, or the refusal's reason.
	Reason  string
	Message string
}

// Refused reports whether the decision ends the healing without any step.
func (d Decision) Refused() bool { return d.Refusal != nil }

func refuse(phase selfhealv1alpha1.HealingPhase, reason, format string, args ...any) Decision {
	r := &Refusal{Reason: reason, Message: fmt.Sprintf(format, args...), Phase: phase}
	return Decision{Refusal: r, Reason: r.Reason, Message: r.Message}
}

// IsHealable reports whether selfheal can act on the issue itself, possibly ending in
// ManualInterventionRequired after a cleanup (OOMKilled). Healthy needs no action and
// is not healable in this sense.
func IsHealable(issue selfhealv1alpha1.IssueType) bool {
	switch issue {
	case selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.IssueNoReadyPods,
		selfhealv1alpha1.IssueEndpointsMissing, selfhealv1alpha1.IssueUnresponsive, selfhealv1alpha1.IssueNoPods,
		selfhealv1alpha1.IssueFailedPods, selfhealv1alpha1.IssueOOMKilled:
		return true
	}
	return false
}

// needsRestart reports whether the issue is healed by a rollout restart.
func needsRestart(issue selfhealv1alpha1.IssueType) bool {
	switch issue {
	case selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.IssueNoReadyPods,
		selfhealv1alpha1.IssueEndpointsMissing, selfhealv1alpha1.IssueUnresponsive:
		return true
	}
	return false
}

// Plan decides what to do about in.Issue. It is pure: the same input gives the same
// decision. The gate order is documented on the package.
func Plan(in Input) Decision {
	snap := in.Snapshot
	if snap == nil {
		snap = &diagnostics.Snapshot{}
	}
	service := snap.Target.Service

	// 1. No policy: report only.
	if in.Policy == nil {
		return refuse(selfhealv1alpha1.PhaseSkipped, selfhealv1alpha1.ReasonNoPolicy,
			"No HealingPolicy governs service %q: diagnosed %s, nothing remediated%s",
			service, in.Issue, causeSuffix(in.Issue, snap))
	}
	spec := &in.Policy.Spec

	// 2. Policy paused.
	if len(spec.PauseRequests) > 0 {
		return refuse(selfhealv1alpha1.PhaseSkipped, selfhealv1alpha1.ReasonPaused,
			"HealingPolicy %q is paused (%s): diagnosed %s, nothing remediated",
			in.Policy.Name, strings.Join(spec.PauseRequests, "; "), in.Issue)
	}

	// 3. Not healable by a restart, or nothing to act on.
	if d, stop := notHealable(in.Issue, snap); stop {
		return d
	}

	workload := snap.Workload
	facts := snap.Facts()
	failed := facts.Pods.FailedNames()
	deploymentPaused := snap.Deployment != nil && facts.Workload.Paused

	// 4. OOMKilled: optional cleanup, then a person changes the memory limit.
	if in.Issue == selfhealv1alpha1.IssueOOMKilled {
		after := &Refusal{
			Reason:  selfhealv1alpha1.ReasonManualIntervention,
			Message: ManualReason(in.Issue, snap),
			Phase:   selfhealv1alpha1.PhaseManualInterventionRequired,
		}
		if len(failed) == 0 || !spec.Allows(selfhealv1alpha1.ActionDeleteFailedPods) ||
			deploymentPaused || workload == nil {
			return Decision{Refusal: after, Reason: after.Reason, Message: after.Message}
		}
		steps := []Step{deleteFailedStep(*workload, failed)}
		dry := in.DryRun || spec.DryRun
		reason := selfhealv1alpha1.ReasonAllowed
		if dry {
			reason = selfhealv1alpha1.ReasonDryRun
		}
		return Decision{Steps: steps, DryRun: dry, After: after, Reason: reason,
			Message: fmt.Sprintf("%s first; then: %s", describe(steps, dry), after.Message)}
	}

	// 5. Healthy: nothing to do; the controller verifies.
	if in.Issue == selfhealv1alpha1.IssueHealthy {
		return Decision{Reason: selfhealv1alpha1.ReasonAlreadyHealthy,
			Message: fmt.Sprintf("Service %q looks healthy: nothing to remediate, verifying", service)}
	}

	steps := stepsFor(in.Issue, *workload, failed, spec)
	execRefusal := executionGates(in, snap, spec, steps, deploymentPaused)

	// 6. Dry run: plan only; report what a real run would meet.
	if in.DryRun || spec.DryRun {
		msg := describe(steps, true)
		if execRefusal != nil {
			msg += "; a real run would be refused now: " + execRefusal.Message
		}
		return Decision{Steps: steps, DryRun: true, WouldRefuse: execRefusal,
			Reason: selfhealv1alpha1.ReasonDryRun, Message: msg}
	}

	// 7-12.
	if execRefusal != nil {
		return Decision{Refusal: execRefusal, Reason: execRefusal.Reason, Message: execRefusal.Message}
	}
	return Decision{Steps: steps, Reason: selfhealv1alpha1.ReasonAllowed, Message: describe(steps, false)}
}

// notHealable is gate 3: issues a restart cannot fix, and healable issues with nothing
// to act on.
func notHealable(issue selfhealv1alpha1.IssueType, snap *diagnostics.Snapshot) (Decision, bool) {
	manual := selfhealv1alpha1.PhaseManualInterventionRequired
	switch issue {
	case selfhealv1alpha1.IssueTargetNotFound:
		return refuse(selfhealv1alpha1.PhaseFailed, selfhealv1alpha1.ReasonTargetNotFound,
			"%s", ManualReason(issue, snap)), true
	case selfhealv1alpha1.IssueDeploymentPaused:
		return refuse(manual, selfhealv1alpha1.ReasonDeploymentPaused, "%s", ManualReason(issue, snap)), true
	case selfhealv1alpha1.IssueImagePullBackOff, selfhealv1alpha1.IssueConfigError,
		selfhealv1alpha1.IssueUnschedulable, selfhealv1alpha1.IssueNetworkPolicyBlocked:
		return refuse(manual, selfhealv1alpha1.ReasonNotHealable, "%s", ManualReason(issue, snap)), true
	case selfhealv1alpha1.IssueHealthy, selfhealv1alpha1.IssueOOMKilled:
		// OOMKilled ends in manual intervention at gate 4, after an optional cleanup;
		// without a workload there is just nothing to clean.
		return Decision{}, false
	}
	if !IsHealable(issue) {
		return refuse(manual, selfhealv1alpha1.ReasonNotHealable,
			"Issue %q is not one selfheal can remediate", issue), true
	}

	// A healable issue needs a workload to act on.
	if snap.Workload == nil {
		return refuse(manual, selfhealv1alpha1.ReasonNotHealable,
			"%s on service %q, but no Deployment or StatefulSet could be resolved for it; set spec.target.workload or fix the Service selector",
			issue, snap.Target.Service), true
	}
	switch snap.Workload.Kind {
	case selfhealv1alpha1.WorkloadDeployment:
		if snap.Deployment == nil {
			return refuse(selfhealv1alpha1.PhaseFailed, selfhealv1alpha1.ReasonTargetNotFound,
				"Deployment %q of service %q was not found", snap.Workload.Name, snap.Target.Service), true
		}
	case selfhealv1alpha1.WorkloadStatefulSet:
		if snap.StatefulSet == nil {
			return refuse(selfhealv1alpha1.PhaseFailed, selfhealv1alpha1.ReasonTargetNotFound,
				"StatefulSet %q of service %q was not found", snap.Workload.Name, snap.Target.Service), true
		}
		if needsRestart(issue) &&
			snap.StatefulSet.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType {
			return refuse(manual, selfhealv1alpha1.ReasonNotHealable,
				"%s on StatefulSet %q, whose updateStrategy is OnDelete: a rollout restart would replace no pod",
				issue, snap.StatefulSet.Name), true
		}
	default:
		return refuse(manual, selfhealv1alpha1.ReasonNotHealable,
			"Workload kind %q cannot be remediated", snap.Workload.Kind), true
	}
	if issue == selfhealv1alpha1.IssueNoPods {
		if replicas := snap.Facts().Workload.DesiredReplicas; replicas != 0 {
			return refuse(manual, selfhealv1alpha1.ReasonNotHealable,
				"%s wants %d replicas but service %q selects no pod: check the Service selector and the workload's events (quota, admission)",
				snap.Workload, replicas, snap.Target.Service), true
		}
	}
	return Decision{}, false
}

// stepsFor maps a healable issue to its steps. Gate 3 guarantees a workload exists.
func stepsFor(issue selfhealv1alpha1.IssueType, workload selfhealv1alpha1.WorkloadReference,
	failed []string, spec *selfhealv1alpha1.HealingPolicySpec) []Step {
	switch {
	case issue == selfhealv1alpha1.IssueNoPods:
		return []Step{{Type: selfhealv1alpha1.ActionScaleFromZero, Workload: workload,
			Reason: fmt.Sprintf("%s is scaled to 0 replicas; scale to 1", workload)}}
	case issue == selfhealv1alpha1.IssueFailedPods:
		return []Step{deleteFailedStep(workload, failed)}
	case needsRestart(issue):
		var steps []Step
		if len(failed) > 0 && spec.Allows(selfhealv1alpha1.ActionDeleteFailedPods) {
			steps = append(steps, deleteFailedStep(workload, failed))
		}
		return append(steps, Step{Type: selfhealv1alpha1.ActionRolloutRestart, Workload: workload,
			Reason: fmt.Sprintf("%s: replace the pods of %s", issue, workload)})
	}
	return nil
}

// executionGates are gates 7 to 12, which only guard execution.
func executionGates(in Input, snap *diagnostics.Snapshot, spec *selfhealv1alpha1.HealingPolicySpec,
	steps []Step, deploymentPaused bool) *Refusal {
	service := snap.Target.Service
	skipped := selfhealv1alpha1.PhaseSkipped

	// 7. Cooldown.
	if !in.LastHealingEnded.IsZero() {
		cooldown := spec.GetCooldown()
		if remaining := in.LastHealingEnded.Add(cooldown).Sub(in.Now); remaining > 0 {
			return &Refusal{Phase: skipped, Reason: selfhealv1alpha1.ReasonCooldown,
				Message: fmt.Sprintf("Service %q was healed %s ago; cooldown is %s, %s remaining",
					service, roundDuration(in.Now.Sub(in.LastHealingEnded)), cooldown, roundDuration(remaining))}
		}
	}

	if Disruptive(steps) {
		if r := CheckLimits(in.Ledger, spec, service, snap.Target.Namespace, in.Now); r != nil {
			return r
		}
	}

	// 10. A paused Deployment is never touched.
	if deploymentPaused {
		return &Refusal{Phase: selfhealv1alpha1.PhaseManualInterventionRequired,
			Reason:  selfhealv1alpha1.ReasonDeploymentPaused,
			Message: ManualReason(selfhealv1alpha1.IssueDeploymentPaused, snap)}
	}

	// 11. Every planned action must be allowed. The optional cleanup was only planned
	// when allowed, so this names the action the issue itself needs.
	for _, s := range steps {
		if !spec.Allows(s.Type) {
			return &Refusal{Phase: selfhealv1alpha1.PhaseManualInterventionRequired,
				Reason: selfhealv1alpha1.ReasonActionNotAllowed,
				Message: fmt.Sprintf("%s on %s needs action %s, which HealingPolicy %q does not allow (allowed: %s)",
					in.Issue, s.Workload, s.Type, in.Policy.Name, joinActions(spec.AllowedActions))}
		}
	}

	// 12. Learning: the history says this action does not heal this issue here.
	return learningGate(in, spec, service, steps)
}

// Disruptive reports whether steps include a disruptive action: one the ledger must
// reserve.
func Disruptive(steps []Step) bool {
	for _, s := range steps {
		if s.Type.Disruptive() {
			return true
		}
	}
	return false
}

// LastHealingEnded is the end of the latest finished healing of target that executed
// an action, from history; zero when there is none. It is what Input.LastHealingEnded
// expects.
func LastHealingEnded(history []ActionRecord, target string) time.Time {
	var last time.Time
	for _, r := range history {
		if r.Service == target && r.executed() && !r.FinishedAt.IsZero() && r.FinishedAt.After(last) {
			last = r.FinishedAt
		}
	}
	return last
}

// ManualReason is the precise cause, for people, of an issue that needs a person:
// which container, which image, which limit, which policy. It reads the snapshot's
// Facts, the same ones the issue was classified from.
func ManualReason(issue selfhealv1alpha1.IssueType, snap *diagnostics.Snapshot) string {
	if snap == nil {
		snap = &diagnostics.Snapshot{}
	}
	service := snap.Target.Service
	pods := &snap.Facts().Pods
	switch issue {
	case selfhealv1alpha1.IssueTargetNotFound:
		if snap.Service == nil {
			return fmt.Sprintf("Service %q does not exist in namespace %q", service, snap.Target.Namespace)
		}
		if snap.Workload != nil {
			return fmt.Sprintf("%s %q of service %q does not exist", snap.Workload.Kind, snap.Workload.Name, service)
		}
		return fmt.Sprintf("No workload could be found for service %q", service)

	case selfhealv1alpha1.IssueImagePullBackOff:
		if len(pods.ImagePull) > 0 {
			c := pods.ImagePull[0]
			return fmt.Sprintf("%s %q of pod %q cannot pull image %q (%s)%s: fix the image or its pull secret",
				c.KindTitle(), c.Container, c.Pod, c.Image, c.Reason, colonMessage(c.Message))
		}
		return fmt.Sprintf("Pods of service %q cannot pull their image: fix the image or its pull secret", service)

	case selfhealv1alpha1.IssueConfigError:
		if len(pods.ConfigError) > 0 {
			c := pods.ConfigError[0]
			return fmt.Sprintf("%s %q of pod %q cannot start (%s)%s: fix the referenced ConfigMap, Secret or container config",
				c.KindTitle(), c.Container, c.Pod, c.Reason, colonMessage(c.Message))
		}
		return fmt.Sprintf("Pods of service %q cannot start because of a configuration error: fix the referenced ConfigMap, Secret or container config", service)

	case selfhealv1alpha1.IssueUnschedulable:
		if len(pods.Unschedulable) > 0 {
			p := pods.Unschedulable[0]
			return fmt.Sprintf("Pod %q cannot be scheduled (%s)%s: add capacity or relax its requests, affinity or tolerations",
				p.Pod, p.Reason, colonMessage(p.Message))
		}
		return fmt.Sprintf("Pods of service %q cannot be scheduled: add capacity or relax their requests, affinity or tolerations", service)

	case selfhealv1alpha1.IssueNetworkPolicyBlocked:
		if names := snap.Facts().Policies.Selecting; len(names) > 0 {
			return fmt.Sprintf("A network policy blocks calls to service %q; policies selecting its pods: %s. Admit the caller in one of them",
				service, strings.Join(names, ", "))
		}
		return fmt.Sprintf("A network policy blocks calls to service %q: admit the caller", service)

	case selfhealv1alpha1.IssueDeploymentPaused:
		name := ""
		if snap.Deployment != nil {
			name = snap.Deployment.Name
		} else if snap.Workload != nil {
			name = snap.Workload.Name
		}
		return fmt.Sprintf("Deployment %q is paused and is never touched: resume it (kubectl rollout resume deployment/%s) or heal it by hand", name, name)

	case selfhealv1alpha1.IssueOOMKilled:
		if len(pods.OOMKilled) > 0 {
			c := pods.OOMKilled[0]
			if c.MemoryLimit == "" {
				return fmt.Sprintf("%s %q of pod %q was OOMKilled with no memory limit: set a memory request and limit that fit its usage, or find the leak",
					c.KindTitle(), c.Container, c.Pod)
			}
			return fmt.Sprintf("Memory limit of %s %q (limit %s) needs a change: it was OOMKilled in pod %q", c.Kind(), c.Container, c.MemoryLimit, c.Pod)
		}
		return fmt.Sprintf("Pods of service %q were OOMKilled: their memory limit needs a change", service)
	}
	return fmt.Sprintf("Service %q: %s", service, issue)
}

// causeSuffix adds the precise cause of an issue that needs a person to a message.
func causeSuffix(issue selfhealv1alpha1.IssueType, snap *diagnostics.Snapshot) string {
	switch issue {
	case selfhealv1alpha1.IssueTargetNotFound, selfhealv1alpha1.IssueImagePullBackOff,
		selfhealv1alpha1.IssueConfigError, selfhealv1alpha1.IssueUnschedulable,
		selfhealv1alpha1.IssueNetworkPolicyBlocked, selfhealv1alpha1.IssueDeploymentPaused,
		selfhealv1alpha1.IssueOOMKilled:
		return ": " + ManualReason(issue, snap)
	}
	return ""
}

func colonMessage(msg string) string {
	const maxLen = 200
	if msg == "" {
		return ""
	}
	if len(msg) > maxLen {
		msg = msg[:maxLen] + "..."
	}
	return ": " + strings.TrimRight(msg, ". ")
}

func deleteFailedStep(workload selfhealv1alpha1.WorkloadReference, failed []string) Step {
	return Step{Type: selfhealv1alpha1.ActionDeleteFailedPods, Workload: workload,
		Reason: fmt.Sprintf("%s of %s: %s", countPods(len(failed), "failed"), workload, nameList(failed))}
}

// countPods says "1 failed pod" or "2 failed pods".
func countPods(n int, adjective string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s pod", adjective)
	}
	return fmt.Sprintf("%d %s pods", n, adjective)
}

// nameList joins names, keeping messages within the status' bounds.
func nameList(names []string) string {
	const shown = 5
	if len(names) <= shown {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:shown], ", "), len(names)-shown)
}

func describe(steps []Step, dry bool) string {
	parts := make([]string, 0, len(steps))
	for _, s := range steps {
		parts = append(parts, fmt.Sprintf("%s %s", s.Type, s.Workload))
	}
	if dry {
		return "Dry run: would " + strings.Join(parts, ", then ")
	}
	return "Planned " + strings.Join(parts, ", then ")
}

func joinActions(actions []selfhealv1alpha1.ActionType) string {
	parts := make([]string, 0, len(actions))
	for _, a := range actions {
		parts = append(parts, string(a))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// roundDuration keeps messages readable: whole seconds.
func roundDuration(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return d.Round(time.Second)
}
