package controller_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/remediation"
)

// eventReasons counts the reasons of the events.k8s.io/v1 Events about hr, a series
// counted as often as it happened.
func eventReasons(g Gomega, hr *selfhealv1alpha1.HealingRequest) map[string]int {
	var list eventsv1.EventList
	g.Expect(k8s.List(context.Background(), &list, client.InNamespace(hr.Namespace))).To(Succeed())
	out := map[string]int{}
	for _, e := range list.Items {
		if e.Regarding.UID != hr.UID {
			continue
		}
		n := 1
		if e.Series != nil && e.Series.Count > 1 {
			n = int(e.Series.Count)
		}
		out[e.Reason] += n
	}
	return out
}

// expectEvents waits until the events about hr carry at least these reasons, as often.
func expectEvents(t *testing.T, hr *selfhealv1alpha1.HealingRequest, want map[string]int) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		got := eventReasons(g, hr)
		for reason, n := range want {
			g.Expect(got[reason]).To(BeNumerically(">=", n), "events about %s: %v", hr.Name, got)
		}
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
}

// counterValue reads a counter (or a gauge) of the controller-runtime registry, which the manager
// serves on its metrics endpoint; 0 when the series does not exist yet.
func counterValue(g Gomega, name string, labels map[string]string) float64 {
	families, err := metrics.Registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return 0
}

// TestRestartThatCannotHealExhaustsTheAttempts: every pod of the template crashloops,
// the ones a restart creates too. The first restart's verification sees the new pods
// crashloop once the rollout settled and starts a second attempt; after the second
// restart fails the same way, the healing ends Failed (AttemptsExhausted), with exactly
// two restarts executed and an event for each transition. (Recreate replaces the old
// pod before starting the new one, so each rollout settles although no pod is ever
// available.)
func TestRestartThatCannotHealExhaustsTheAttempts(t *testing.T) {
	defer startManager(t)()
	ns := newNamespace(t)
	policy(t, ns)
	crashloopingApp(t, ns)
	g := NewWithT(t)

	got := terminalWithin(t, request(t, ns, "sandfly"), 3*eventually)
	expectStatusInvariants(t, got)

	g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseFailed), "progress: %v", got.Status.Progress)
	g.Expect(readyReasonOf(got)).To(Equal(selfhealv1alpha1.ReasonAttemptsExhausted), "progress: %v", got.Status.Progress)
	g.Expect(got.Status.Issue).To(Equal(selfhealv1alpha1.IssueCrashLoopBackOff))
	g.Expect(got.Status.Attempts).To(Equal(int32(2)))
	g.Expect(condition(got, selfhealv1alpha1.ConditionReady).Message).To(HavePrefix("Still CrashLoopBackOff after 2 attempts: "))
	restarts := executed(got)
	g.Expect(restarts).To(HaveLen(2), "two restarts, no more")
	for i, a := range restarts {
		g.Expect(a.Type).To(Equal(selfhealv1alpha1.ActionRolloutRestart))
		g.Expect(a.Outcome).To(Equal(selfhealv1alpha1.OutcomeSucceeded))
		g.Expect(a.Attempt).To(Equal(int32(i + 1)))
	}
	// The workload carries the second restart: both really ran.
	g.Expect(getDeployment(t, ns, "sandfly").Spec.Template.Annotations[restartedAt]).
		To(Equal(remediation.RestartStamp(restarts[1].StartedAt.Time)))
	g.Expect(restarts[1].StartedAt.Time).NotTo(Equal(restarts[0].StartedAt.Time))

	expectEvents(t, got, map[string]int{"HealingStarted": 1, "ActionSucceeded": 2, string(selfhealv1alpha1.PhaseFailed): 1})
	NewWithT(t).Expect(eventReasons(NewWithT(t), got)).NotTo(HaveKey(string(selfhealv1alpha1.PhaseHealed)))
}

// TestPausedPolicySkipsWithItsReason: a paused policy still lets the diagnosis run and
// be reported, acts on nothing, and says who paused it and why.
func TestPausedPolicySkipsWithItsReason(t *testing.T) {
	defer startManager(t)()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 0)
	const why = "oncall: change freeze until Friday (OPS-4711)"
	policy(t, ns, func(p *selfhealv1alpha1.HealingPolicy) { p.Spec.PauseRequests = []string{why} })
	hr := terminal(t, request(t, ns, "sandfly"))
	expectStatusInvariants(t, hr)
	g := NewWithT(t)
	g.Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseSkipped))
	g.Expect(readyReasonOf(hr)).To(Equal(selfhealv1alpha1.ReasonPaused))
	g.Expect(condition(hr, selfhealv1alpha1.ConditionReady).Message).To(ContainSubstring(why))
	g.Expect(hr.Status.Issue).To(Equal(selfhealv1alpha1.IssueNoPods), "the diagnosis is reported while paused")
	g.Expect(hr.Status.Actions).To(BeEmpty())
	g.Consistently(func() int32 { return *getDeployment(t, ns, "sandfly").Spec.Replicas }).
		WithTimeout(time.Second).Should(Equal(int32(0)))
}
