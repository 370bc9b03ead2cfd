package controller_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/remediation"
)

// outcomesOf reads the outcomes of the namespace's ledger policy ("heal").
func outcomesOf(g Gomega, ns string) *selfhealv1alpha1.Outcomes {
	p := &selfhealv1alpha1.HealingPolicy{}
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "heal"}, p)).To(Succeed())
	if p.Status.Outcomes == nil {
		return &selfhealv1alpha1.Outcomes{}
	}
	return p.Status.Outcomes
}

// waitHealings waits until the namespace's outcomes count n healings.
func waitHealings(t *testing.T, ns string, n int64) *selfhealv1alpha1.Outcomes {
	t.Helper()
	var out *selfhealv1alpha1.Outcomes
	NewWithT(t).Eventually(func(g Gomega) {
		out = outcomesOf(g, ns)
		g.Expect(out.Healings).To(Equal(n))
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
	return out
}

// TestLearningStopsARestartThatNeverHeals: every pod of the template crashloops, the
// ones a restart creates too. Three healings (one attempt each) restart it and fail;
// the fourth ends ManualInterventionRequired (ActionIneffective) at once, naming the
// three, with no action and no ledger entry.
func TestLearningStopsARestartThatNeverHeals(t *testing.T) {
	defer startManager(t)()
	ns := newNamespace(t)
	policy(t, ns, func(p *selfhealv1alpha1.HealingPolicy) {
		p.Spec.MaxAttempts = ptr.To[int32](1)
		p.Spec.CircuitBreaker = &selfhealv1alpha1.CircuitBreaker{MaxActionsPerTarget: ptr.To[int32](10), NamespaceMaxActions: ptr.To[int32](10)}
	})
	crashloopingApp(t, ns)
	g := NewWithT(t)

	var failed []string
	var lastRestart selfhealv1alpha1.HealingAction
	for i := range 3 {
		got := terminalWithin(t, request(t, ns, "sandfly"), 3*eventually)
		g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseFailed), "healing %d: progress %v", i+1, got.Status.Progress)
		g.Expect(readyReasonOf(got)).To(Equal(selfhealv1alpha1.ReasonAttemptsExhausted))
		g.Expect(executed(got)).To(HaveLen(1))
		lastRestart = executed(got)[0]
		failed = append(failed, got.Name)
		// The next healing plans from the recorded outcome.
		waitHealings(t, ns, int64(i+1))
	}
	refusalsBefore := counterValue(g, "selfheal_remediation_refusals_total", map[string]string{"reason": selfhealv1alpha1.ReasonActionIneffective})

	got := terminal(t, request(t, ns, "sandfly"))
	expectStatusInvariants(t, got)
	g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseManualInterventionRequired), "progress: %v", got.Status.Progress)
	g.Expect(readyReasonOf(got)).To(Equal(selfhealv1alpha1.ReasonActionIneffective))
	msg := condition(got, selfhealv1alpha1.ConditionReady).Message
	g.Expect(msg).To(ContainSubstring(`RolloutRestart healed 0 of the last 3 CrashLoopBackOff healings of service "sandfly" within 24h0m0s`))
	for _, name := range failed {
		g.Expect(msg).To(ContainSubstring(name + " ended AttemptsExhausted"))
	}
	g.Expect(condition(got, selfhealv1alpha1.ConditionRemediationAllowed).Reason).To(Equal(selfhealv1alpha1.ReasonActionIneffective))
	g.Expect(executed(got)).To(BeEmpty(), "no action")
	g.Expect(got.Status.Attempts).To(BeZero())
	g.Expect(ledgerOf(t, ns)).To(HaveLen(3), "no reservation for the refused restart")
	g.Expect(getDeployment(t, ns, "sandfly").Spec.Template.Annotations[restartedAt]).
		To(Equal(remediation.RestartStamp(lastRestart.StartedAt.Time)), "the last restart is still the third healing's")

	out := waitHealings(t, ns, 4)
	g.Expect(out.Healed).To(BeZero())
	g.Expect(out.SuccessRate).To(Equal("0%"))
	g.Expect(out.ManualInterventions).To(HaveLen(1))
	g.Expect(out.ManualInterventions[0].Request).To(Equal(got.Name))
	g.Expect(out.ManualInterventions[0].Reason).To(Equal(selfhealv1alpha1.ReasonActionIneffective))
	g.Expect(out.History).To(HaveLen(1), "the refusal is no result: the rule does not feed itself")
	g.Expect(out.History[0].Results).To(HaveLen(3))
	g.Eventually(func(g Gomega) float64 {
		return counterValue(g, "selfheal_remediation_refusals_total", map[string]string{"reason": selfhealv1alpha1.ReasonActionIneffective})
	}).WithTimeout(eventually).WithPolling(poll).Should(Equal(refusalsBefore + 1))
}

// TestOutcomesSurviveRetentionAndRestarts heals a Service scaled to zero again and
// again with a history of one request per target, so retention deletes each request
// once the next finishes, and restarts the manager midway: the outcomes count every
// healing exactly once, and stay within their bounds.
func TestOutcomesSurviveRetentionAndRestarts(t *testing.T) {
	stop := startManager(t)
	defer func() { stop() }()
	ctx := context.Background()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 0)
	policy(t, ns, func(p *selfhealv1alpha1.HealingPolicy) {
		p.Spec.CircuitBreaker = &selfhealv1alpha1.CircuitBreaker{MaxActionsPerTarget: ptr.To[int32](100), NamespaceMaxActions: ptr.To[int32](100)}
		p.Spec.Retention = &selfhealv1alpha1.Retention{MaxHistoryPerTarget: ptr.To[int32](1)}
	})
	g := NewWithT(t)
	const healings = 6
	for i := range healings {
		if i == healings/2 {
			stop() // a restart: a new manager, nothing in memory
			stop = startManager(t)
		}
		if i > 0 {
			breakAgain(t, ns, "sandfly")
			g.Eventually(func(g Gomega) {
				var pods corev1.PodList
				g.Expect(k8s.List(ctx, &pods, client.InNamespace(ns))).To(Succeed())
				g.Expect(pods.Items).To(BeEmpty())
			}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
		}
		got := terminal(t, request(t, ns, "sandfly"))
		g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed), "healing %d: progress %v", i+1, got.Status.Progress)
		waitHealings(t, ns, int64(i+1))
	}
	// Retention deleted every request but the last.
	g.Eventually(func(g Gomega) {
		var list selfhealv1alpha1.HealingRequestList
		g.Expect(k8s.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		g.Expect(list.Items).To(HaveLen(1))
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())

	// Another restart reconciles the remaining request again: nothing is counted twice.
	stop()
	stop = startManager(t)
	g.Consistently(func(g Gomega) int64 { return outcomesOf(g, ns).Healings }).
		WithTimeout(2 * time.Second).WithPolling(poll).Should(Equal(int64(healings)))

	out := outcomesOf(g, ns)
	g.Expect(out.Healed).To(Equal(int64(healings)))
	g.Expect(out.SuccessRate).To(Equal("100%"))
	g.Expect(out.ByIssue).To(HaveLen(1))
	byIssue := out.ByIssue[0]
	g.Expect(byIssue.Issue).To(Equal(selfhealv1alpha1.IssueNoPods))
	g.Expect(byIssue.Action).To(Equal(selfhealv1alpha1.ActionScaleFromZero))
	g.Expect(byIssue.Healings).To(Equal(int64(healings)))
	g.Expect(byIssue.AverageTimeToHeal).NotTo(BeNil())
	g.Expect(byIssue.P90).To(HavePrefix("<="))
	g.Expect(out.TopServices).To(Equal([]selfhealv1alpha1.ServiceOutcomes{{Service: "sandfly", Healings: healings, Healed: healings, LastSeen: out.TopServices[0].LastSeen}}))
	g.Expect(out.Recorded).To(HaveLen(healings))
	g.Expect(out.History).To(HaveLen(1))
	g.Expect(out.History[0].Results).To(HaveLen(healings))
	g.Expect(fmt.Sprint(out.ManualInterventions)).To(Equal("[]"))
	// The metric of the Services healed most follows the outcomes.
	g.Eventually(func(g Gomega) float64 {
		return gaugeValue(g, "selfheal_service_healings", map[string]string{"healing_namespace": ns, "service": "sandfly"})
	}).WithTimeout(eventually).WithPolling(poll).Should(Equal(float64(healings)))
}

// gaugeValue reads a gauge of the controller-runtime registry.
func gaugeValue(g Gomega, name string, labels map[string]string) float64 {
	return counterValue(g, name, labels)
}
