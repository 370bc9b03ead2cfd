package remediation

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
)

var fakeClock = testingclock.NewFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))

// reserved is a ledger entry: a disruptive action on service, reserved ago before now.
func reserved(service string, a selfhealv1alpha1.ActionType, ago time.Duration) selfhealv1alpha1.LedgerEntry {
	return selfhealv1alpha1.LedgerEntry{Service: service, Workload: selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: service},
		Action: a, Request: fmt.Sprintf("%s-%d", service, ago), Attempt: 1, Policy: "heal",
		ReservedAt: metav1.NewMicroTime(fakeClock.Now().Add(-ago))}
}

// breakerFull is the circuit breaker's limit (3) of disruptive actions on the target.
func breakerFull() []selfhealv1alpha1.LedgerEntry {
	return []selfhealv1alpha1.LedgerEntry{
		reserved(testService, selfhealv1alpha1.ActionRolloutRestart, 50*time.Minute),
		reserved(testService, selfhealv1alpha1.ActionRolloutRestart, 30*time.Minute),
		reserved(testService, selfhealv1alpha1.ActionScaleFromZero, 10*time.Minute),
	}
}

// stormFull is the storm limit (5) of restarts across other targets.
func stormFull() []selfhealv1alpha1.LedgerEntry {
	var out []selfhealv1alpha1.LedgerEntry
	for _, svc := range []string{"mcp-git", "mcp-search", "mcp-db", "mcp-mail", "mcp-calendar"} {
		out = append(out, reserved(svc, selfhealv1alpha1.ActionRolloutRestart, 20*time.Minute))
	}
	return out
}

// results is the history of action on issue of the test Service: one result per
// entry of ago (how long ago it finished), healed when the entry's name ends in "+".
func results(issue selfhealv1alpha1.IssueType, action selfhealv1alpha1.ActionType, ago ...string) []selfhealv1alpha1.TargetHistory {
	h := selfhealv1alpha1.TargetHistory{Service: testService, Issue: issue, Action: action}
	for i, a := range ago {
		healed := strings.HasSuffix(a, "+")
		d, err := time.ParseDuration(strings.TrimSuffix(a, "+"))
		if err != nil {
			panic(err)
		}
		reason := selfhealv1alpha1.ReasonAttemptsExhausted
		if healed {
			reason = selfhealv1alpha1.ReasonHealed
		}
		h.Results = append(h.Results, selfhealv1alpha1.HealingResult{Request: fmt.Sprintf("%s-%d", testService, i), Healed: healed,
			Reason: reason, FinishedAt: metav1.NewTime(fakeClock.Now().Add(-d))})
	}
	// Oldest first, as recorded.
	slices.SortFunc(h.Results, func(a, b selfhealv1alpha1.HealingResult) int { return a.FinishedAt.Compare(b.FinishedAt.Time) })
	return []selfhealv1alpha1.TargetHistory{h}
}

func learningPolicy(mutate func(*selfhealv1alpha1.Learning)) *selfhealv1alpha1.HealingPolicy {
	p := testPolicy()
	p.Spec.Learning = &selfhealv1alpha1.Learning{}
	mutate(p.Spec.Learning)
	return p
}

func pausedDeployment() *appsv1.Deployment {
	d := testDeployment(2)
	d.Spec.Paused = true
	return d
}

func dryRunPolicy() *selfhealv1alpha1.HealingPolicy {
	p := testPolicy()
	p.Spec.DryRun = true
	return p
}

func pausedPolicy() *selfhealv1alpha1.HealingPolicy {
	p := testPolicy()
	p.Spec.PauseRequests = []string{"alice: investigating INC-4211"}
	return p
}

func withNetworkPolicy(s *diagnostics.Snapshot) *diagnostics.Snapshot {
	s.NetworkPolicies = []networkingv1.NetworkPolicy{blockingPolicy()}
	return s
}

type planWant struct {
	// refusal is the refusal's reason, empty when the decision has steps or nothing.
	refusal     string
	phase       selfhealv1alpha1.HealingPhase
	steps       []selfhealv1alpha1.ActionType
	target      string
	dryRun      bool
	after       string // After.Reason
	wouldRefuse string // WouldRefuse.Reason
	reason      string // Decision.Reason
	contains    []string
}

func TestPlan(t *testing.T) {
	now := fakeClock.Now()
	crashing := func() *diagnostics.Snapshot {
		return deploymentSnapshot(testDeployment(2), crashLoopPod("mcp-files-6f7b9c-a1"), crashLoopPod("mcp-files-6f7b9c-b2"))
	}
	restart := []selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionRolloutRestart}
	cleanup := []selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionDeleteFailedPods}
	manual := selfhealv1alpha1.PhaseManualInterventionRequired

	tests := []struct {
		name string
		in   Input
		want planWant
	}{
		// Gate 1: no policy wins over everything, even a cause that needs a person.
		{"no policy", Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Snapshot: crashing()},
			planWant{refusal: selfhealv1alpha1.ReasonNoPolicy, phase: selfhealv1alpha1.PhaseSkipped, contains: []string{`"mcp-files"`, "CrashLoopBackOff"}}},
		{"no policy beats not healable, cause still reported",
			Input{Issue: selfhealv1alpha1.IssueImagePullBackOff, Snapshot: deploymentSnapshot(testDeployment(1), imagePullPod("mcp-files-6f7b9c-a1"))},
			planWant{refusal: selfhealv1alpha1.ReasonNoPolicy, phase: selfhealv1alpha1.PhaseSkipped, contains: []string{"ghcr.io/example/mcp-files:9.9.9"}}},

		// Gate 2: paused policy.
		{"policy paused beats not healable",
			Input{Issue: selfhealv1alpha1.IssueImagePullBackOff, Policy: pausedPolicy(), Snapshot: deploymentSnapshot(testDeployment(1), imagePullPod("p"))},
			planWant{refusal: selfhealv1alpha1.ReasonPaused, phase: selfhealv1alpha1.PhaseSkipped, contains: []string{"INC-4211"}}},
		{"policy paused beats a healable issue",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: pausedPolicy(), Snapshot: crashing()},
			planWant{refusal: selfhealv1alpha1.ReasonPaused, phase: selfhealv1alpha1.PhaseSkipped}},

		// Gate 3: not healable by restart, each with its precise cause; wins over dry
		// run, cooldown and breaker.
		{"image pull back-off",
			Input{Issue: selfhealv1alpha1.IssueImagePullBackOff, Policy: testPolicy(), DryRun: true, Now: now,
				LastHealingEnded: now.Add(-10 * time.Second), Ledger: breakerFull(),
				Snapshot: deploymentSnapshot(testDeployment(1), imagePullPod("mcp-files-6f7b9c-a1"))},
			planWant{refusal: selfhealv1alpha1.ReasonNotHealable, phase: manual,
				contains: []string{`"server"`, `"mcp-files-6f7b9c-a1"`, "ghcr.io/example/mcp-files:9.9.9", "ImagePullBackOff"}}},
		{"config error",
			Input{Issue: selfhealv1alpha1.IssueConfigError, Policy: testPolicy(), Snapshot: deploymentSnapshot(testDeployment(1), configErrorPod("mcp-files-6f7b9c-a1"))},
			planWant{refusal: selfhealv1alpha1.ReasonNotHealable, phase: manual, contains: []string{`secret "mcp-files-token" not found`}}},
		{"unschedulable",
			Input{Issue: selfhealv1alpha1.IssueUnschedulable, Policy: testPolicy(), Snapshot: deploymentSnapshot(testDeployment(1), unschedulablePod("mcp-files-6f7b9c-a1"))},
			planWant{refusal: selfhealv1alpha1.ReasonNotHealable, phase: manual, contains: []string{"Insufficient memory"}}},
		{"network policy blocks",
			Input{Issue: selfhealv1alpha1.IssueNetworkPolicyBlocked, Policy: testPolicy(),
				Snapshot: withNetworkPolicy(deploymentSnapshot(testDeployment(1), testPod("mcp-files-6f7b9c-a1", corev1.PodRunning, true)))},
			planWant{refusal: selfhealv1alpha1.ReasonNotHealable, phase: manual, contains: []string{"deny-all-ingress"}}},
		{"target not found fails",
			Input{Issue: selfhealv1alpha1.IssueTargetNotFound, Policy: testPolicy(),
				Snapshot: &diagnostics.Snapshot{Target: diagnostics.Target{Namespace: testNS, Service: "mcp-gone"}}},
			planWant{refusal: selfhealv1alpha1.ReasonTargetNotFound, phase: selfhealv1alpha1.PhaseFailed, contains: []string{`"mcp-gone"`, "does not exist"}}},
		{"deployment paused issue",
			Input{Issue: selfhealv1alpha1.IssueDeploymentPaused, Policy: testPolicy(), Snapshot: deploymentSnapshot(pausedDeployment())},
			planWant{refusal: selfhealv1alpha1.ReasonDeploymentPaused, phase: manual, contains: []string{"rollout resume"}}},
		{"healable issue without a workload",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(),
				Snapshot: &diagnostics.Snapshot{Target: diagnostics.Target{Namespace: testNS, Service: testService}, Service: serviceFixture()}},
			planWant{refusal: selfhealv1alpha1.ReasonNotHealable, phase: manual, contains: []string{"spec.target.workload"}}},
		{"workload named but missing",
			Input{Issue: selfhealv1alpha1.IssueNoReadyPods, Policy: testPolicy(), Snapshot: func() *diagnostics.Snapshot {
				s := deploymentSnapshot(testDeployment(1))
				s.Deployment = nil
				return s
			}()},
			planWant{refusal: selfhealv1alpha1.ReasonTargetNotFound, phase: selfhealv1alpha1.PhaseFailed}},
		{"no pods although replicas > 0",
			Input{Issue: selfhealv1alpha1.IssueNoPods, Policy: testPolicy(), Snapshot: deploymentSnapshot(testDeployment(2))},
			planWant{refusal: selfhealv1alpha1.ReasonNotHealable, phase: manual, contains: []string{"wants 2 replicas"}}},
		{"statefulset with OnDelete cannot be restarted",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), Snapshot: func() *diagnostics.Snapshot {
				sts := testStatefulSet(1)
				sts.Spec.UpdateStrategy.Type = appsv1.OnDeleteStatefulSetStrategyType
				return statefulSetSnapshot(sts, crashLoopPod("mcp-files-0"))
			}()},
			planWant{refusal: selfhealv1alpha1.ReasonNotHealable, phase: manual, contains: []string{"OnDelete"}}},

		// Gate 4: OOMKilled: cleanup, then manual; not subject to cooldown or breaker.
		{"oom with failed pods: cleanup then manual, despite cooldown and breaker",
			Input{Issue: selfhealv1alpha1.IssueOOMKilled, Policy: testPolicy(), Now: now,
				LastHealingEnded: now.Add(-10 * time.Second), Ledger: breakerFull(),
				Snapshot: deploymentSnapshot(testDeployment(2), oomPod("mcp-files-6f7b9c-a1"), failedPod("mcp-files-6f7b9c-zz"))},
			planWant{steps: cleanup, target: "deployment/mcp-files", after: selfhealv1alpha1.ReasonManualIntervention, reason: selfhealv1alpha1.ReasonAllowed,
				contains: []string{`Memory limit of container "server" (limit 128Mi) needs a change`}}},
		{"oom in an init container: names the init container and its limit",
			Input{Issue: selfhealv1alpha1.IssueOOMKilled, Policy: testPolicy(), Snapshot: deploymentSnapshot(testDeployment(1), oomInitPod("mcp-files-6f7b9c-a1"))},
			planWant{refusal: selfhealv1alpha1.ReasonManualIntervention, phase: manual,
				contains: []string{`Memory limit of init container "migrate" (limit 64Mi) needs a change`, `pod "mcp-files-6f7b9c-a1"`}}},
		{"oom without failed pods: manual at once",
			Input{Issue: selfhealv1alpha1.IssueOOMKilled, Policy: testPolicy(), Snapshot: deploymentSnapshot(testDeployment(2), oomPod("mcp-files-6f7b9c-a1"))},
			planWant{refusal: selfhealv1alpha1.ReasonManualIntervention, phase: manual, contains: []string{"limit 128Mi"}}},
		{"oom, cleanup not allowed: manual at once",
			Input{Issue: selfhealv1alpha1.IssueOOMKilled, Policy: testPolicy(selfhealv1alpha1.ActionRolloutRestart),
				Snapshot: deploymentSnapshot(testDeployment(2), oomPod("a"), failedPod("b"))},
			planWant{refusal: selfhealv1alpha1.ReasonManualIntervention, phase: manual}},
		{"oom on a paused deployment: no cleanup",
			Input{Issue: selfhealv1alpha1.IssueOOMKilled, Policy: testPolicy(), Snapshot: deploymentSnapshot(pausedDeployment(), oomPod("a"), failedPod("b"))},
			planWant{refusal: selfhealv1alpha1.ReasonManualIntervention, phase: manual}},
		{"oom in dry run: cleanup planned only",
			Input{Issue: selfhealv1alpha1.IssueOOMKilled, Policy: testPolicy(), DryRun: true,
				Snapshot: deploymentSnapshot(testDeployment(2), oomPod("a"), failedPod("b"))},
			planWant{steps: cleanup, dryRun: true, after: selfhealv1alpha1.ReasonManualIntervention, reason: selfhealv1alpha1.ReasonDryRun}},

		// Gate 5: healthy, before dry run and cooldown.
		{"healthy: nothing to do",
			Input{Issue: selfhealv1alpha1.IssueHealthy, Policy: dryRunPolicy(), Now: now, LastHealingEnded: now.Add(-5 * time.Second),
				Snapshot: deploymentSnapshot(testDeployment(1), testPod("a", corev1.PodRunning, true))},
			planWant{reason: selfhealv1alpha1.ReasonAlreadyHealthy}},

		// Gate 6: dry run plans; later gates only annotate.
		{"request dry run",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), DryRun: true, Now: now, Snapshot: crashing()},
			planWant{steps: restart, target: "deployment/mcp-files", dryRun: true, reason: selfhealv1alpha1.ReasonDryRun, contains: []string{"Dry run"}}},
		{"policy dry run beats cooldown, which is reported",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: dryRunPolicy(), Now: now, LastHealingEnded: now.Add(-30 * time.Second), Snapshot: crashing()},
			planWant{steps: restart, dryRun: true, reason: selfhealv1alpha1.ReasonDryRun, wouldRefuse: selfhealv1alpha1.ReasonCooldown, contains: []string{"a real run would be refused"}}},
		{"dry run reports a forbidden action",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(selfhealv1alpha1.ActionDeleteFailedPods), DryRun: true, Now: now, Snapshot: crashing()},
			planWant{steps: restart, dryRun: true, reason: selfhealv1alpha1.ReasonDryRun, wouldRefuse: selfhealv1alpha1.ReasonActionNotAllowed}},

		// Gate 7: cooldown, before the breaker.
		{"cooldown beats breaker",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), Now: now,
				LastHealingEnded: now.Add(-30 * time.Second), Ledger: breakerFull(), Snapshot: crashing()},
			planWant{refusal: selfhealv1alpha1.ReasonCooldown, phase: selfhealv1alpha1.PhaseSkipped, contains: []string{"1m30s remaining"}}},
		{"cooldown over",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), Now: now,
				LastHealingEnded: now.Add(-2*time.Minute - time.Second), Snapshot: crashing()},
			planWant{steps: restart, reason: selfhealv1alpha1.ReasonAllowed}},
		{"cooldown also holds back a cleanup",
			Input{Issue: selfhealv1alpha1.IssueFailedPods, Policy: testPolicy(), Now: now, LastHealingEnded: now.Add(-time.Minute),
				Snapshot: deploymentSnapshot(testDeployment(2), failedPod("x"))},
			planWant{refusal: selfhealv1alpha1.ReasonCooldown, phase: selfhealv1alpha1.PhaseSkipped}},

		// Gate 8: circuit breaker, before the storm limit.
		{"breaker open beats storm",
			Input{Issue: selfhealv1alpha1.IssueNoReadyPods, Policy: testPolicy(), Now: now,
				Ledger: append(breakerFull(), stormFull()...), Snapshot: crashing()},
			planWant{refusal: selfhealv1alpha1.ReasonCircuitOpen, phase: selfhealv1alpha1.PhaseSkipped, contains: []string{"3 disruptive actions", "closes in 10m0s"}}},
		{"breaker over its limit closes when enough actions leave the window",
			Input{Issue: selfhealv1alpha1.IssueNoReadyPods, Policy: testPolicy(), Now: now, Snapshot: crashing(),
				Ledger: append(breakerFull(), reserved(testService, selfhealv1alpha1.ActionRolloutRestart, 55*time.Minute))},
			planWant{refusal: selfhealv1alpha1.ReasonCircuitOpen, phase: selfhealv1alpha1.PhaseSkipped, contains: []string{"4 disruptive actions", "closes in 10m0s"}}},
		{"breaker ignores actions that left the window and other targets",
			Input{Issue: selfhealv1alpha1.IssueNoReadyPods, Policy: testPolicy(), Now: now, Snapshot: crashing(), Ledger: []selfhealv1alpha1.LedgerEntry{
				reserved(testService, selfhealv1alpha1.ActionRolloutRestart, 61*time.Minute),
				reserved("mcp-git", selfhealv1alpha1.ActionRolloutRestart, 5*time.Minute),
				reserved(testService, selfhealv1alpha1.ActionRolloutRestart, 5*time.Minute),
				reserved(testService, selfhealv1alpha1.ActionRolloutRestart, 4*time.Minute),
			}},
			planWant{steps: restart, reason: selfhealv1alpha1.ReasonAllowed}},
		{"breaker does not hold back a cleanup",
			Input{Issue: selfhealv1alpha1.IssueFailedPods, Policy: testPolicy(), Now: now, Ledger: append(breakerFull(), stormFull()...),
				Snapshot: deploymentSnapshot(testDeployment(2), failedPod("x"))},
			planWant{steps: cleanup, reason: selfhealv1alpha1.ReasonAllowed}},

		// Gate 9: storm limit, before the paused Deployment.
		{"storm limit beats paused deployment",
			Input{Issue: selfhealv1alpha1.IssueEndpointsMissing, Policy: testPolicy(), Now: now, Ledger: stormFull(),
				Snapshot: deploymentSnapshot(pausedDeployment(), crashLoopPod("a"))},
			planWant{refusal: selfhealv1alpha1.ReasonStormLimit, phase: selfhealv1alpha1.PhaseSkipped, contains: []string{`namespace "tools"`, "5 disruptive actions"}}},

		// Gate 10: paused Deployment, before allowed actions.
		{"paused deployment beats action not allowed",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(selfhealv1alpha1.ActionScaleFromZero), Now: now,
				Snapshot: deploymentSnapshot(pausedDeployment(), crashLoopPod("a"))},
			planWant{refusal: selfhealv1alpha1.ReasonDeploymentPaused, phase: manual}},
		{"paused deployment: no cleanup either",
			Input{Issue: selfhealv1alpha1.IssueFailedPods, Policy: testPolicy(), Now: now, Snapshot: deploymentSnapshot(pausedDeployment(), failedPod("x"))},
			planWant{refusal: selfhealv1alpha1.ReasonDeploymentPaused, phase: manual}},

		// Gate 11: action not allowed, naming it.
		{"restart not allowed",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(selfhealv1alpha1.ActionDeleteFailedPods, selfhealv1alpha1.ActionScaleFromZero), Now: now, Snapshot: crashing()},
			planWant{refusal: selfhealv1alpha1.ReasonActionNotAllowed, phase: manual, contains: []string{"RolloutRestart", `"tools-healing"`, "DeleteFailedPods, ScaleFromZero"}}},
		{"scale not allowed",
			Input{Issue: selfhealv1alpha1.IssueNoPods, Policy: testPolicy(selfhealv1alpha1.ActionRolloutRestart), Now: now, Snapshot: deploymentSnapshot(testDeployment(0))},
			planWant{refusal: selfhealv1alpha1.ReasonActionNotAllowed, phase: manual, contains: []string{"ScaleFromZero"}}},

		// Gate 12: learning, last: it only refuses what every other gate allows.
		{"restart healed none of the last 3 crashloops: manual, with the evidence",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), Now: now, Snapshot: crashing(),
				History: results(selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ActionRolloutRestart, "3h", "2h", "1h")},
			planWant{refusal: selfhealv1alpha1.ReasonActionIneffective, phase: manual, contains: []string{
				`RolloutRestart healed 0 of the last 3 CrashLoopBackOff healings of service "mcp-files" within 24h0m0s`,
				"mcp-files-2 ended AttemptsExhausted 1h0m0s ago; mcp-files-1 ended AttemptsExhausted 2h0m0s ago",
				"minAttempts 3"}}},
		{"only the last 3 count: an older success does not save it",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), Now: now, Snapshot: crashing(),
				History: results(selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ActionRolloutRestart, "4h+", "3h", "2h", "1h")},
			planWant{refusal: selfhealv1alpha1.ReasonActionIneffective, phase: manual}},
		{"one success among the last 3: restart",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), Now: now, Snapshot: crashing(),
				History: results(selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ActionRolloutRestart, "3h", "2h+", "1h")},
			planWant{steps: restart, reason: selfhealv1alpha1.ReasonAllowed}},
		{"two failures are not enough evidence",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), Now: now, Snapshot: crashing(),
				History: results(selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ActionRolloutRestart, "2h", "1h")},
			planWant{steps: restart, reason: selfhealv1alpha1.ReasonAllowed}},
		{"failures that left the window are forgotten",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), Now: now, Snapshot: crashing(),
				History: results(selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ActionRolloutRestart, "25h", "2h", "1h")},
			planWant{steps: restart, reason: selfhealv1alpha1.ReasonAllowed}},
		{"another issue of the same service says nothing",
			Input{Issue: selfhealv1alpha1.IssueNoReadyPods, Policy: testPolicy(), Now: now, Snapshot: crashing(),
				History: results(selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ActionRolloutRestart, "3h", "2h", "1h")},
			planWant{steps: restart, reason: selfhealv1alpha1.ReasonAllowed}},
		{"another action says nothing: a failed scale does not stop a restart",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), Now: now, Snapshot: crashing(),
				History: results(selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ActionScaleFromZero, "3h", "2h", "1h")},
			planWant{steps: restart, reason: selfhealv1alpha1.ReasonAllowed}},
		{"minAttempts 1 and a 1h window from the policy",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Now: now, Snapshot: crashing(),
				Policy: learningPolicy(func(l *selfhealv1alpha1.Learning) {
					l.MinAttempts = ptr.To[int32](1)
					l.Window = &metav1.Duration{Duration: time.Hour}
				}),
				History: results(selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ActionRolloutRestart, "30m")},
			planWant{refusal: selfhealv1alpha1.ReasonActionIneffective, phase: manual, contains: []string{"0 of the last 1", "within 1h0m0s"}}},
		{"disabled",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Now: now, Snapshot: crashing(),
				Policy:  learningPolicy(func(l *selfhealv1alpha1.Learning) { l.Disabled = true }),
				History: results(selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ActionRolloutRestart, "3h", "2h", "1h")},
			planWant{steps: restart, reason: selfhealv1alpha1.ReasonAllowed}},
		{"the restart after a cleanup is what is judged",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), Now: now,
				Snapshot: deploymentSnapshot(testDeployment(2), crashLoopPod("a"), failedPod("b")),
				History:  results(selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ActionRolloutRestart, "3h", "2h", "1h")},
			planWant{refusal: selfhealv1alpha1.ReasonActionIneffective, phase: manual}},
		{"breaker beats learning",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), Now: now, Snapshot: crashing(), Ledger: breakerFull(),
				History: results(selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ActionRolloutRestart, "3h", "2h", "1h")},
			planWant{refusal: selfhealv1alpha1.ReasonCircuitOpen, phase: selfhealv1alpha1.PhaseSkipped}},
		{"action not allowed beats learning",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(selfhealv1alpha1.ActionScaleFromZero), Now: now, Snapshot: crashing(),
				History: results(selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ActionRolloutRestart, "3h", "2h", "1h")},
			planWant{refusal: selfhealv1alpha1.ReasonActionNotAllowed, phase: manual}},
		{"dry run reports the learning refusal",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), DryRun: true, Now: now, Snapshot: crashing(),
				History: results(selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ActionRolloutRestart, "3h", "2h", "1h")},
			planWant{steps: restart, dryRun: true, reason: selfhealv1alpha1.ReasonDryRun, wouldRefuse: selfhealv1alpha1.ReasonActionIneffective}},
		{"a scale from zero that never healed is refused too",
			Input{Issue: selfhealv1alpha1.IssueNoPods, Policy: testPolicy(), Now: now, Snapshot: deploymentSnapshot(testDeployment(0)),
				History: results(selfhealv1alpha1.IssueNoPods, selfhealv1alpha1.ActionScaleFromZero, "3h", "2h", "1h")},
			planWant{refusal: selfhealv1alpha1.ReasonActionIneffective, phase: manual, contains: []string{"ScaleFromZero healed 0 of the last 3 NoPods"}}},

		// Issue -> steps.
		{"crashloop: restart", Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), Now: now, Snapshot: crashing()},
			planWant{steps: restart, target: "deployment/mcp-files", reason: selfhealv1alpha1.ReasonAllowed, contains: []string{"Planned RolloutRestart deployment/mcp-files"}}},
		{"no ready pods: restart", Input{Issue: selfhealv1alpha1.IssueNoReadyPods, Policy: testPolicy(), Now: now, Snapshot: crashing()},
			planWant{steps: restart, reason: selfhealv1alpha1.ReasonAllowed}},
		{"unresponsive: restart", Input{Issue: selfhealv1alpha1.IssueUnresponsive, Policy: testPolicy(), Now: now,
			Snapshot: deploymentSnapshot(testDeployment(1), testPod("a", corev1.PodRunning, true))},
			planWant{steps: restart, reason: selfhealv1alpha1.ReasonAllowed}},
		{"endpoints missing: restart", Input{Issue: selfhealv1alpha1.IssueEndpointsMissing, Policy: testPolicy(), Now: now,
			Snapshot: deploymentSnapshot(testDeployment(1), testPod("a", corev1.PodRunning, true))},
			planWant{steps: restart, reason: selfhealv1alpha1.ReasonAllowed}},
		{"crashloop with failed pods: cleanup first",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), Now: now,
				Snapshot: deploymentSnapshot(testDeployment(2), crashLoopPod("a"), failedPod("mcp-files-6f7b9c-zz"))},
			planWant{steps: []selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionDeleteFailedPods, selfhealv1alpha1.ActionRolloutRestart}, reason: selfhealv1alpha1.ReasonAllowed,
				contains: []string{"DeleteFailedPods deployment/mcp-files, then RolloutRestart"}}},
		{"crashloop with failed pods, cleanup not allowed: restart only",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(selfhealv1alpha1.ActionRolloutRestart), Now: now,
				Snapshot: deploymentSnapshot(testDeployment(2), crashLoopPod("a"), failedPod("b"))},
			planWant{steps: restart, reason: selfhealv1alpha1.ReasonAllowed}},
		{"no pods at zero replicas: scale, no restart",
			Input{Issue: selfhealv1alpha1.IssueNoPods, Policy: testPolicy(), Now: now, Snapshot: deploymentSnapshot(testDeployment(0))},
			planWant{steps: []selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionScaleFromZero}, target: "deployment/mcp-files", reason: selfhealv1alpha1.ReasonAllowed}},
		{"failed pods: cleanup",
			Input{Issue: selfhealv1alpha1.IssueFailedPods, Policy: testPolicy(), Now: now,
				Snapshot: deploymentSnapshot(testDeployment(2), testPod("a", corev1.PodRunning, true), failedPod("mcp-files-6f7b9c-zz"))},
			planWant{steps: cleanup, reason: selfhealv1alpha1.ReasonAllowed}},
		{"statefulset crashloop: restart the statefulset",
			Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy(), Now: now, Snapshot: statefulSetSnapshot(testStatefulSet(1), crashLoopPod("mcp-files-0"))},
			planWant{steps: restart, target: "statefulset/mcp-files", reason: selfhealv1alpha1.ReasonAllowed}},
		{"unknown issue is not healable",
			Input{Issue: selfhealv1alpha1.IssueType("Mystery"), Policy: testPolicy(), Snapshot: crashing()},
			planWant{refusal: selfhealv1alpha1.ReasonNotHealable, phase: manual}},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Plan(tc.in)
			checkDecision(t, got, tc.want)
		})
	}
}

func checkDecision(t *testing.T, got Decision, want planWant) {
	t.Helper()
	if want.refusal != "" {
		if got.Refusal == nil {
			t.Fatalf("want refusal %s, got steps %v (reason %s: %s)", want.refusal, stepTypes(got.Steps), got.Reason, got.Message)
		}
		if got.Refusal.Reason != want.refusal || got.Refusal.Phase != want.phase {
			t.Fatalf("refusal = %s/%s (%s), want %s/%s", got.Refusal.Reason, got.Refusal.Phase, got.Refusal.Message, want.refusal, want.phase)
		}
		if len(got.Steps) != 0 || got.Reason != want.refusal || got.Message != got.Refusal.Message {
			t.Errorf("refused decision must carry no steps and the refusal's reason: %+v", got)
		}
		if !got.Refusal.Phase.IsTerminal() {
			t.Errorf("refusal phase %s is not terminal", got.Refusal.Phase)
		}
	} else if got.Refusal != nil {
		t.Fatalf("unexpected refusal %s: %s", got.Refusal.Reason, got.Refusal.Message)
	}
	if !slices.Equal(stepTypes(got.Steps), want.steps) {
		t.Errorf("steps = %v, want %v", stepTypes(got.Steps), want.steps)
	}
	if want.target != "" {
		for _, s := range got.Steps {
			if s.Workload.String() != want.target {
				t.Errorf("step %s workload = %q, want %q", s.Type, s.Workload, want.target)
			}
		}
	}
	for _, s := range got.Steps {
		if s.Reason == "" {
			t.Errorf("step %s has no reason", s.Type)
		}
	}
	if got.DryRun != want.dryRun {
		t.Errorf("dryRun = %v, want %v", got.DryRun, want.dryRun)
	}
	if reason := reasonOf(got.After); reason != want.after {
		t.Errorf("after = %q, want %q", reason, want.after)
	}
	if got.After != nil && got.After.Phase != selfhealv1alpha1.PhaseManualInterventionRequired {
		t.Errorf("after phase = %s", got.After.Phase)
	}
	if reason := reasonOf(got.WouldRefuse); reason != want.wouldRefuse {
		t.Errorf("wouldRefuse = %q, want %q", reason, want.wouldRefuse)
	}
	if want.reason != "" && got.Reason != want.reason {
		t.Errorf("reason = %q, want %q", got.Reason, want.reason)
	}
	if got.Message == "" {
		t.Errorf("decision has no message")
	}
	for _, s := range want.contains {
		if !strings.Contains(got.Message, s) {
			t.Errorf("message %q does not contain %q", got.Message, s)
		}
	}
}

func reasonOf(r *Refusal) string {
	if r == nil {
		return ""
	}
	return r.Reason
}

func stepTypes(steps []Step) []selfhealv1alpha1.ActionType {
	var out []selfhealv1alpha1.ActionType
	for _, s := range steps {
		out = append(out, s.Type)
	}
	return out
}

func TestPlanNilSnapshot(t *testing.T) {
	got := Plan(Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: testPolicy()})
	if got.Refusal == nil || got.Refusal.Phase != selfhealv1alpha1.PhaseManualInterventionRequired {
		t.Fatalf("nil snapshot: want a manual refusal, got %+v", got)
	}
	got = Plan(Input{Issue: selfhealv1alpha1.IssueTargetNotFound, Policy: testPolicy()})
	if got.Refusal == nil || got.Refusal.Reason != selfhealv1alpha1.ReasonTargetNotFound {
		t.Fatalf("nil snapshot, target not found: got %+v", got)
	}
}

func TestPlanListsFailedPodsBounded(t *testing.T) {
	var pods []corev1.Pod
	for _, n := range []string{"f1", "f2", "f3", "f4", "f5", "f6", "f7"} {
		pods = append(pods, failedPod(n))
	}
	got := Plan(Input{Issue: selfhealv1alpha1.IssueFailedPods, Policy: testPolicy(), Now: fakeClock.Now(),
		Snapshot: deploymentSnapshot(testDeployment(1), pods...)})
	if len(got.Steps) != 1 {
		t.Fatalf("steps = %v", stepTypes(got.Steps))
	}
	if r := got.Steps[0].Reason; !strings.Contains(r, "7 failed pods") || !strings.Contains(r, "and 2 more") || strings.Contains(r, "f7") {
		t.Errorf("reason = %q", r)
	}
}

func TestLastHealingEnded(t *testing.T) {
	now := fakeClock.Now()
	history := []ActionRecord{
		{Service: testService, Outcome: selfhealv1alpha1.OutcomeSucceeded, FinishedAt: now.Add(-9 * time.Minute)},
		{Service: testService, Outcome: selfhealv1alpha1.OutcomeFailed, FinishedAt: now.Add(-4 * time.Minute)},
		// A dry run, a still running healing and another target do not count.
		{Service: testService, Outcome: selfhealv1alpha1.OutcomeDryRun, FinishedAt: now.Add(-time.Minute)},
		{Service: testService, Outcome: selfhealv1alpha1.OutcomeIntended},
		{Service: "mcp-git", Outcome: selfhealv1alpha1.OutcomeSucceeded, FinishedAt: now.Add(-10 * time.Second)},
	}
	if got, want := LastHealingEnded(history, testService), now.Add(-4*time.Minute); !got.Equal(want) {
		t.Errorf("LastHealingEnded = %v, want %v", got, want)
	}
	if got := LastHealingEnded(history, "mcp-other"); !got.IsZero() {
		t.Errorf("no healing: got %v", got)
	}
}

func TestIsHealable(t *testing.T) {
	healable := map[selfhealv1alpha1.IssueType]bool{
		selfhealv1alpha1.IssueCrashLoopBackOff: true, selfhealv1alpha1.IssueNoReadyPods: true, selfhealv1alpha1.IssueEndpointsMissing: true,
		selfhealv1alpha1.IssueNoPods: true, selfhealv1alpha1.IssueFailedPods: true, selfhealv1alpha1.IssueOOMKilled: true,
		selfhealv1alpha1.IssueHealthy: false, selfhealv1alpha1.IssueTargetNotFound: false, selfhealv1alpha1.IssueImagePullBackOff: false,
		selfhealv1alpha1.IssueConfigError: false, selfhealv1alpha1.IssueUnschedulable: false, selfhealv1alpha1.IssueNetworkPolicyBlocked: false,
		selfhealv1alpha1.IssueDeploymentPaused: false, selfhealv1alpha1.IssueUnresponsive: true,
	}
	for issue, want := range healable {
		if got := IsHealable(issue); got != want {
			t.Errorf("IsHealable(%s) = %v, want %v", issue, got, want)
		}
	}
}

// TestManualReason: the cause named for a person comes from the same facts the issue
// was classified from, init containers included.
func TestManualReason(t *testing.T) {
	noLimit := oomPod("mcp-files-6f7b9c-a1")
	noLimit.Spec.Containers[0].Resources.Limits = nil
	initImage := oomInitPod("mcp-files-6f7b9c-b2")
	initImage.Status.InitContainerStatuses[0].LastTerminationState = corev1.ContainerState{}
	initImage.Status.InitContainerStatuses[0].State.Waiting = &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "manifest unknown"}
	withPolicy := deploymentSnapshot(testDeployment(1), testPod("mcp-files-6f7b9c-a1", corev1.PodRunning, true))
	withPolicy.NetworkPolicies = []networkingv1.NetworkPolicy{blockingPolicy()}
	tests := []struct {
		name     string
		issue    selfhealv1alpha1.IssueType
		snap     *diagnostics.Snapshot
		contains []string
	}{
		{"oom in the app container", selfhealv1alpha1.IssueOOMKilled, deploymentSnapshot(testDeployment(1), oomPod("mcp-files-6f7b9c-a1")),
			[]string{`Memory limit of container "server" (limit 128Mi)`, `pod "mcp-files-6f7b9c-a1"`}},
		{"oom without a limit", selfhealv1alpha1.IssueOOMKilled, deploymentSnapshot(testDeployment(1), noLimit),
			[]string{`Container "server" of pod "mcp-files-6f7b9c-a1" was OOMKilled with no memory limit`}},
		{"oom in an init container", selfhealv1alpha1.IssueOOMKilled, deploymentSnapshot(testDeployment(1), oomInitPod("mcp-files-6f7b9c-a1")),
			[]string{`init container "migrate" (limit 64Mi)`}},
		{"image of an init container", selfhealv1alpha1.IssueImagePullBackOff, deploymentSnapshot(testDeployment(1), initImage),
			[]string{`Init container "migrate" of pod "mcp-files-6f7b9c-b2" cannot pull image "ghcr.io/example/mcp-files-migrate:1.4.2" (ErrImagePull): manifest unknown`}},
		{"image", selfhealv1alpha1.IssueImagePullBackOff, deploymentSnapshot(testDeployment(1), imagePullPod("mcp-files-6f7b9c-a1")),
			[]string{`Container "server" of pod "mcp-files-6f7b9c-a1" cannot pull image "ghcr.io/example/mcp-files:9.9.9" (ImagePullBackOff)`}},
		{"config", selfhealv1alpha1.IssueConfigError, deploymentSnapshot(testDeployment(1), configErrorPod("mcp-files-6f7b9c-a1")),
			[]string{`(CreateContainerConfigError): secret "mcp-files-token" not found`}},
		{"unschedulable", selfhealv1alpha1.IssueUnschedulable, deploymentSnapshot(testDeployment(1), unschedulablePod("mcp-files-6f7b9c-a1")),
			[]string{`Pod "mcp-files-6f7b9c-a1" cannot be scheduled (Unschedulable): 0/3 nodes are available: 3 Insufficient memory`}},
		{"network policy", selfhealv1alpha1.IssueNetworkPolicyBlocked, withPolicy, []string{"policies selecting its pods: deny-all-ingress"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ManualReason(tc.issue, tc.snap)
			for _, want := range tc.contains {
				if !strings.Contains(got, want) {
					t.Errorf("ManualReason = %q, want it to contain %q", got, want)
				}
			}
		})
	}
}

// BenchmarkPlan plans a restart for a 10-pod Deployment against a namespace ledger of
// 200 actions (the breaker and storm gates scan it all).
func BenchmarkPlan(b *testing.B) {
	now := fakeClock.Now()
	var pods []corev1.Pod
	for i := range 10 {
		pods = append(pods, crashLoopPod(fmt.Sprintf("mcp-files-6f7b9c-%02d", i)))
	}
	var ledger []selfhealv1alpha1.LedgerEntry
	for i := range 200 {
		ledger = append(ledger, reserved(fmt.Sprintf("mcp-%d", i%40), selfhealv1alpha1.ActionRolloutRestart, time.Duration(i)*20*time.Second))
	}
	policy := testPolicy()
	policy.Spec.CircuitBreaker.NamespaceMaxActions = ptr.To(int32(1000))
	in := Input{Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Policy: policy, Now: now, Ledger: ledger,
		Snapshot: deploymentSnapshot(testDeployment(10), pods...)}
	b.ReportAllocs()
	for b.Loop() {
		if d := Plan(in); len(d.Steps) != 1 {
			b.Fatalf("unexpected decision %+v", d)
		}
	}
}
