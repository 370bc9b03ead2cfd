package controller_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controlplane"
)

const restartedAt = "kubectl.kubernetes.io/restartedAt"

func executed(hr *selfhealv1alpha1.HealingRequest) []selfhealv1alpha1.HealingAction {
	var out []selfhealv1alpha1.HealingAction
	for _, a := range hr.Status.Actions {
		if a.Outcome == selfhealv1alpha1.OutcomeSucceeded || a.Outcome == selfhealv1alpha1.OutcomeFailed || a.Outcome == selfhealv1alpha1.OutcomeIntended {
			out = append(out, a)
		}
	}
	return out
}

// expectStatusInvariants checks what must hold of any terminal request.
func expectStatusInvariants(t *testing.T, hr *selfhealv1alpha1.HealingRequest) {
	t.Helper()
	g := NewWithT(t)
	ready := condition(hr, selfhealv1alpha1.ConditionReady)
	g.Expect(ready).NotTo(BeNil())
	g.Expect(ready.Status == metav1.ConditionTrue).To(Equal(hr.Status.Serves()), "Ready is True exactly when the service serves")
	if hr.Status.Phase == selfhealv1alpha1.PhaseHealed {
		g.Expect(executed(hr)).NotTo(BeEmpty(), "Healed only after an action: a request that needed none is Skipped")
	}
	g.Expect(hr.Status.CompletionTime).NotTo(BeNil())
	g.Expect(hr.Status.StartTime).NotTo(BeNil())
	g.Expect(hr.Status.ObservedGeneration).To(Equal(hr.Generation))
	g.Expect(len(hr.Status.Findings)).To(BeNumerically("<=", selfhealv1alpha1.MaxFindings))
	for _, a := range hr.Status.Actions {
		g.Expect(a.Outcome).NotTo(Equal(selfhealv1alpha1.OutcomeIntended), "no intent is left open at the end")
	}
	if hr.Status.DuplicateOf == "" {
		g.Expect(hr.Status.Findings).NotTo(BeEmpty(), "every healing reports its diagnosis")
	}
}

func TestScaledToZeroIsHealed(t *testing.T) {
	defer startManager(t)()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 0)
	policy(t, ns)
	hr := terminal(t, request(t, ns, "sandfly"))
	expectStatusInvariants(t, hr)

	g := NewWithT(t)
	g.Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed), "progress: %v", hr.Status.Progress)
	g.Expect(hr.Status.Issue).To(Equal(selfhealv1alpha1.IssueNoPods))
	g.Expect(executed(hr)).To(HaveLen(1))
	g.Expect(hr.Status.Actions[0].Type).To(Equal(selfhealv1alpha1.ActionScaleFromZero))
	g.Expect(hr.Status.Actions[0].Outcome).To(Equal(selfhealv1alpha1.OutcomeSucceeded))
	g.Expect(*getDeployment(t, ns, "sandfly").Spec.Replicas).To(Equal(int32(1)))
	waitReady(t, ns, "sandfly", 1)
	g.Expect(condition(hr, selfhealv1alpha1.ConditionVerified).Status).To(Equal(metav1.ConditionTrue))
}

func TestCrashLoopIsRestartedAndHealed(t *testing.T) {
	defer startManager(t)()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 2)
	policy(t, ns)
	old := crashLoop(t, ns, "sandfly", 2, nil)

	hr := terminal(t, request(t, ns, "sandfly"))
	expectStatusInvariants(t, hr)
	g := NewWithT(t)
	g.Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed), "progress: %v", hr.Status.Progress)
	g.Expect(hr.Status.Issue).To(Equal(selfhealv1alpha1.IssueCrashLoopBackOff))
	g.Expect(executed(hr)).To(HaveLen(1))
	g.Expect(hr.Status.Actions[0].Type).To(Equal(selfhealv1alpha1.ActionRolloutRestart))
	g.Expect(getDeployment(t, ns, "sandfly").Spec.Template.Annotations).To(HaveKey(restartedAt))
	fresh := waitReady(t, ns, "sandfly", 2)
	for _, p := range fresh {
		for _, o := range old {
			g.Expect(p.UID).NotTo(Equal(o.UID), "the crashlooping pods were replaced")
		}
	}
	expectEvents(t, hr, map[string]int{"HealingStarted": 1, "ActionSucceeded": 1, string(selfhealv1alpha1.PhaseHealed): 1})
}

func TestImagePullBackOffFailsFastWithTheCause(t *testing.T) {
	defer startManager(t)()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 1, func(d *appsv1.Deployment) {
		d.Spec.Template.Labels[controlplane.StateLabel] = string(controlplane.StateImagePull)
	})
	policy(t, ns)
	NewWithT(t).Eventually(func(g Gomega) {
		var pods corev1.PodList
		g.Expect(k8s.List(context.Background(), &pods, client.InNamespace(ns))).To(Succeed())
		g.Expect(pods.Items).To(HaveLen(1))
		g.Expect(pods.Items[0].Status.ContainerStatuses).NotTo(BeEmpty())
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())

	hr := request(t, ns, "sandfly")
	got := terminal(t, hr)
	expectStatusInvariants(t, got)
	g := NewWithT(t)
	g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseManualInterventionRequired))
	g.Expect(got.Status.Issue).To(Equal(selfhealv1alpha1.IssueImagePullBackOff))
	g.Expect(executed(got)).To(BeEmpty(), "a restart cannot fix an image that cannot be pulled")
	g.Expect(condition(got, selfhealv1alpha1.ConditionReady).Message).To(ContainSubstring("ghcr.io/selfheal-dev/sandfly:1.0"))
	// Fails fast: ended on the first diagnosis, not at the deadline.
	g.Expect(got.Status.CompletionTime.Time).To(BeTemporally("<", got.Status.Deadline.Time))
	g.Expect(getDeployment(t, ns, "sandfly").Spec.Template.Annotations).NotTo(HaveKey(restartedAt))
}

func TestOOMKilledNeedsManualIntervention(t *testing.T) {
	defer startManager(t)()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 1)
	policy(t, ns)
	crashLoop(t, ns, "sandfly", 1, map[string]string{controlplane.ReasonAnnotation: "OOMKilled"})
	const manual = "selfheal_manual_interventions_total"
	oom := map[string]string{"issue": string(selfhealv1alpha1.IssueOOMKilled)}
	before := counterValue(NewWithT(t), manual, oom)

	hr := terminal(t, request(t, ns, "sandfly"))
	expectStatusInvariants(t, hr)
	g := NewWithT(t)
	// The metric moves once the status that ends the healing is saved.
	g.Eventually(func(g Gomega) float64 { return counterValue(g, manual, oom) }).
		WithTimeout(eventually).WithPolling(poll).Should(Equal(before + 1))
	expectEvents(t, hr, map[string]int{"HealingStarted": 1, string(selfhealv1alpha1.PhaseManualInterventionRequired): 1})
	g.Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseManualInterventionRequired))
	g.Expect(hr.Status.Issue).To(Equal(selfhealv1alpha1.IssueOOMKilled))
	msg := condition(hr, selfhealv1alpha1.ConditionReady).Message
	g.Expect(msg).To(MatchRegexp("(?i)memory limit"))
	g.Expect(msg).To(ContainSubstring("128Mi"))
	g.Expect(getDeployment(t, ns, "sandfly").Spec.Template.Annotations).NotTo(HaveKey(restartedAt))
}

func TestBlockingNetworkPolicyIsNamed(t *testing.T) {
	defer startManager(t)()
	ctx := context.Background()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 1)
	policy(t, ns)
	waitReady(t, ns, "sandfly", 1)
	deny := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "deny-all-ingress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "sandfly"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
	if err := k8s.Create(ctx, deny); err != nil {
		t.Fatal(err)
	}
	hr := terminal(t, request(t, ns, "sandfly", func(r *selfhealv1alpha1.HealingRequest) {
		r.Spec.Trigger.FailureClass = selfhealv1alpha1.FailureTimeout
	}))
	expectStatusInvariants(t, hr)
	g := NewWithT(t)
	g.Expect(hr.Status.Issue).To(Equal(selfhealv1alpha1.IssueNetworkPolicyBlocked))
	g.Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseManualInterventionRequired))
	g.Expect(condition(hr, selfhealv1alpha1.ConditionReady).Message).To(ContainSubstring("deny-all-ingress"))
	g.Expect(executed(hr)).To(BeEmpty())
}

// A policy that admits the caller (the gateway) by a label of its namespace admits it:
// the caller's namespace labels are read, so the crashloop behind it is healed rather
// than reported as blocked by the network.
func TestPolicyAdmittingTheCallersNamespaceLabelIsNotBlocking(t *testing.T) {
	defer startManager(t)()
	ctx := context.Background()
	callerNS := &corev1.Namespace{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: "chat"}, callerNS); err != nil {
		callerNS = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "chat", Labels: map[string]string{"team": "chat-backend"}}}
		if err := k8s.Create(ctx, callerNS); err != nil {
			t.Fatal(err)
		}
	}
	ns := newNamespace(t)
	app(t, ns, "sandfly", 1)
	policy(t, ns)
	admit := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "from-the-chat-team"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "sandfly"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "chat-backend"}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "gateway"}},
			}}}},
		},
	}
	if err := k8s.Create(ctx, admit); err != nil {
		t.Fatal(err)
	}
	crashLoop(t, ns, "sandfly", 1, nil)
	hr := terminal(t, request(t, ns, "sandfly"))
	expectStatusInvariants(t, hr)
	g := NewWithT(t)
	g.Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed), "progress: %v", hr.Status.Progress)
	g.Expect(hr.Status.Issue).To(Equal(selfhealv1alpha1.IssueCrashLoopBackOff))
}

func TestNoPolicyDiagnosesAndSkips(t *testing.T) {
	defer startManager(t)()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 0)
	hr := terminal(t, request(t, ns, "sandfly"))
	expectStatusInvariants(t, hr)
	g := NewWithT(t)
	g.Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseSkipped))
	g.Expect(hr.Status.Issue).To(Equal(selfhealv1alpha1.IssueNoPods))
	g.Expect(condition(hr, selfhealv1alpha1.ConditionReady).Reason).To(Equal(selfhealv1alpha1.ReasonNoPolicy))
	g.Expect(hr.Status.Actions).To(BeEmpty())
	g.Expect(*getDeployment(t, ns, "sandfly").Spec.Replicas).To(Equal(int32(0)))
}

func TestDryRunRecordsThePlanOnly(t *testing.T) {
	defer startManager(t)()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 0)
	policy(t, ns, func(p *selfhealv1alpha1.HealingPolicy) { p.Spec.DryRun = true })
	hr := terminal(t, request(t, ns, "sandfly"))
	expectStatusInvariants(t, hr)
	g := NewWithT(t)
	g.Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseSkipped))
	g.Expect(condition(hr, selfhealv1alpha1.ConditionReady).Reason).To(Equal(selfhealv1alpha1.ReasonDryRun))
	g.Expect(hr.Status.Actions).To(HaveLen(1))
	g.Expect(hr.Status.Actions[0].Type).To(Equal(selfhealv1alpha1.ActionScaleFromZero))
	g.Expect(hr.Status.Actions[0].Outcome).To(Equal(selfhealv1alpha1.OutcomeDryRun))
	g.Consistently(func() int32 { return *getDeployment(t, ns, "sandfly").Spec.Replicas }).
		WithTimeout(time.Second).Should(Equal(int32(0)))
}

func TestDeadlineEndsTheHealingWithoutFurtherAction(t *testing.T) {
	defer startManager(t)()
	ctx := context.Background()
	ns := newNamespace(t)
	// Pods that are scheduled but never start: nothing fails, nothing gets ready, so
	// verification waits until the deadline.
	app(t, ns, "sandfly", 1, func(d *appsv1.Deployment) {
		d.Spec.Template.Labels[controlplane.StateLabel] = "never-starts"
	})
	policy(t, ns, func(p *selfhealv1alpha1.HealingPolicy) {
		p.Spec.Deadline = &metav1.Duration{Duration: 30 * time.Second}
	})
	hr := request(t, ns, "sandfly")
	g := NewWithT(t)
	g.Eventually(func(g Gomega) {
		got := &selfhealv1alpha1.HealingRequest{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(hr), got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseVerifying))
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())

	clk.Step(31 * time.Second)
	// Any event reconciles it; the controller's own timer would fire at the deadline.
	touch(t, hr)
	got := terminal(t, hr)
	expectStatusInvariants(t, got)
	g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseFailed))
	g.Expect(condition(got, selfhealv1alpha1.ConditionReady).Reason).To(Equal(selfhealv1alpha1.ReasonDeadlineExceeded))
	g.Expect(executed(got)).To(HaveLen(1), "the one restart before the deadline, none after")
}

func touch(t *testing.T, hr *selfhealv1alpha1.HealingRequest) {
	t.Helper()
	obj := &selfhealv1alpha1.HealingRequest{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(hr), obj); err != nil {
		return // already gone: nothing to wake
	}
	patch := client.MergeFrom(obj.DeepCopy())
	obj.Annotations = map[string]string{"test.selfheal.dev/touched": time.Now().Format(time.RFC3339Nano)}
	if err := k8s.Patch(context.Background(), obj, patch); client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
}

func TestCooldownHolds(t *testing.T) {
	defer startManager(t)()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 0)
	policy(t, ns, func(p *selfhealv1alpha1.HealingPolicy) {
		p.Spec.Cooldown = &metav1.Duration{Duration: 5 * time.Minute}
	})
	first := terminal(t, request(t, ns, "sandfly"))
	NewWithT(t).Expect(first.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed))

	// Break it again: within the cooldown nothing is done.
	breakAgain(t, ns, "sandfly")
	waitReady(t, ns, "sandfly", 0)
	second := terminal(t, request(t, ns, "sandfly"))
	g := NewWithT(t)
	g.Expect(second.Status.Phase).To(Equal(selfhealv1alpha1.PhaseSkipped))
	g.Expect(condition(second, selfhealv1alpha1.ConditionReady).Reason).To(Equal(selfhealv1alpha1.ReasonCooldown))
	g.Expect(second.Status.Actions).To(BeEmpty())

	// After the cooldown, it heals again.
	clk.Step(5 * time.Minute)
	third := terminal(t, request(t, ns, "sandfly"))
	g.Expect(third.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed), "progress: %v", third.Status.Progress)
}

func TestStormLimitHolds(t *testing.T) {
	defer startManager(t)()
	ns := newNamespace(t)
	app(t, ns, "alpha", 0)
	app(t, ns, "beta", 0)
	policy(t, ns, func(p *selfhealv1alpha1.HealingPolicy) {
		p.Spec.CircuitBreaker = &selfhealv1alpha1.CircuitBreaker{MaxActionsPerTarget: ptr.To[int32](1), NamespaceMaxActions: ptr.To[int32](1)}
	})
	first := terminal(t, request(t, ns, "alpha"))
	NewWithT(t).Expect(first.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed))
	second := terminal(t, request(t, ns, "beta"))
	g := NewWithT(t)
	g.Expect(second.Status.Phase).To(Equal(selfhealv1alpha1.PhaseSkipped))
	g.Expect(condition(second, selfhealv1alpha1.ConditionReady).Reason).To(Equal(selfhealv1alpha1.ReasonStormLimit))
	g.Expect(*getDeployment(t, ns, "beta").Spec.Replicas).To(Equal(int32(0)))

	// The policy reports the disruptive actions in its window.
	g.Eventually(func(g Gomega) {
		p := &selfhealv1alpha1.HealingPolicy{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "heal"}, p)).To(Succeed())
		g.Expect(p.Status.ActionsInWindow).To(Equal(int32(1)))
		g.Expect(p.Status.Ledger).To(HaveLen(1))
		g.Expect(p.Status.Mode).To(Equal(selfhealv1alpha1.ModeActive))
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
}

func TestDuplicateRequestsActOnce(t *testing.T) {
	defer startManager(t)()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 2)
	policy(t, ns)
	crashLoop(t, ns, "sandfly", 2, nil)
	var reqs []*selfhealv1alpha1.HealingRequest
	for range 5 {
		reqs = append(reqs, request(t, ns, "sandfly"))
	}
	actions, healed, duplicates, already := 0, 0, 0, 0
	for _, r := range reqs {
		got := terminal(t, r)
		expectStatusInvariants(t, got)
		actions += len(executed(got))
		switch {
		case got.Status.Phase == selfhealv1alpha1.PhaseHealed:
			healed++
		case got.Status.DuplicateOf != "":
			duplicates++
		case readyReasonOf(got) == selfhealv1alpha1.ReasonAlreadyHealthy:
			already++
		}
	}
	g := NewWithT(t)
	// Requests the controller first sees while the first is active defer to it; one it
	// first sees after the healing ended finds the service healthy, acts on nothing
	// and says so (Skipped, AlreadyHealthy): exactly one healing is recorded.
	g.Expect(healed).To(Equal(1))
	g.Expect(healed + duplicates + already).To(Equal(5))
	g.Expect(duplicates).To(BeNumerically(">=", 1))
	g.Expect(actions).To(Equal(1), "one restart for five requests")
}

// A manager that recorded the intent and executed it, then died before recording the
// outcome, must not act again: the next manager finds the action already done.
func TestRestartedManagerNeverRepeatsAnAction(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 1)
	policy(t, ns)
	waitReady(t, ns, "sandfly", 1)

	hr := request(t, ns, "sandfly")
	// The state the dead manager left: intent recorded, then the restart executed.
	intent := metav1.NewMicroTime(clk.Now().Truncate(time.Second))
	got := &selfhealv1alpha1.HealingRequest{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(hr), got); err != nil {
		t.Fatal(err)
	}
	got.Status = selfhealv1alpha1.HealingRequestStatus{
		Phase: selfhealv1alpha1.PhaseRemediating, Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Attempts: 1, Policy: "heal",
		StartTime: &intent, Deadline: ptr.To(metav1.NewMicroTime(intent.Add(2 * time.Minute))),
		Workload: &selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: "sandfly"},
		Actions: []selfhealv1alpha1.HealingAction{{Type: selfhealv1alpha1.ActionRolloutRestart, Attempt: 1, Workload: selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: "sandfly"},
			Outcome: selfhealv1alpha1.OutcomeIntended, StartedAt: metav1.NewMicroTime(intent.Time)}},
		LastAction: selfhealv1alpha1.ActionRolloutRestart,
	}
	if err := k8s.Status().Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	dep := getDeployment(t, ns, "sandfly")
	patch := client.MergeFrom(dep.DeepCopy())
	dep.Spec.Template.Annotations = map[string]string{restartedAt: intent.UTC().Format(time.RFC3339)}
	if err := k8s.Patch(ctx, dep, patch); err != nil {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func(g Gomega) {
		d := getDeployment(t, ns, "sandfly")
		g.Expect(d.Status.ObservedGeneration).To(Equal(d.Generation))
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
	generation := getDeployment(t, ns, "sandfly").Generation

	defer startManager(t)()
	final := terminal(t, hr)
	expectStatusInvariants(t, final)
	g := NewWithT(t)
	g.Expect(final.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed), "progress: %v", final.Status.Progress)
	g.Expect(final.Status.Actions).To(HaveLen(1))
	g.Expect(final.Status.Actions[0].Outcome).To(Equal(selfhealv1alpha1.OutcomeSucceeded))
	d := getDeployment(t, ns, "sandfly")
	g.Expect(d.Generation).To(Equal(generation), "no second restart: the pod template is unchanged")
	g.Expect(d.Spec.Template.Annotations[restartedAt]).To(Equal(intent.UTC().Format(time.RFC3339)))
}

// A request whose intent was recorded but not executed gets it executed exactly once.
func TestRecordedIntentIsExecutedOnce(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 1)
	policy(t, ns)
	waitReady(t, ns, "sandfly", 1)
	generation := getDeployment(t, ns, "sandfly").Generation

	hr := request(t, ns, "sandfly")
	intent := metav1.NewMicroTime(clk.Now().Truncate(time.Second))
	got := &selfhealv1alpha1.HealingRequest{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(hr), got); err != nil {
		t.Fatal(err)
	}
	got.Status = selfhealv1alpha1.HealingRequestStatus{
		Phase: selfhealv1alpha1.PhaseRemediating, Issue: selfhealv1alpha1.IssueCrashLoopBackOff, Attempts: 1, Policy: "heal",
		StartTime: &intent, Deadline: ptr.To(metav1.NewMicroTime(intent.Add(2 * time.Minute))),
		Actions: []selfhealv1alpha1.HealingAction{{Type: selfhealv1alpha1.ActionRolloutRestart, Attempt: 1, Workload: selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: "sandfly"},
			Outcome: selfhealv1alpha1.OutcomeIntended, StartedAt: metav1.NewMicroTime(intent.Time)}},
	}
	if err := k8s.Status().Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	defer startManager(t)()
	final := terminal(t, hr)
	g := NewWithT(t)
	g.Expect(final.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed))
	g.Expect(final.Status.Actions).To(HaveLen(1))
	d := getDeployment(t, ns, "sandfly")
	g.Expect(d.Generation).To(Equal(generation + 1))
	g.Expect(d.Spec.Template.Annotations[restartedAt]).To(Equal(intent.UTC().Format(time.RFC3339)))
}

func TestRetentionDeletesFinishedRequestsAfterTTL(t *testing.T) {
	defer startManager(t)()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 1)
	policy(t, ns, func(p *selfhealv1alpha1.HealingPolicy) {
		p.Spec.Retention = &selfhealv1alpha1.Retention{TTLAfterFinished: &metav1.Duration{Duration: time.Hour}, MaxHistoryPerTarget: ptr.To[int32](2)}
	})
	waitReady(t, ns, "sandfly", 1)
	var done []*selfhealv1alpha1.HealingRequest
	for range 3 {
		done = append(done, terminal(t, request(t, ns, "sandfly")))
	}
	g := NewWithT(t)
	// History per target: the oldest of three is deleted, two are kept.
	g.Eventually(func(g Gomega) {
		var list selfhealv1alpha1.HealingRequestList
		g.Expect(k8s.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
		g.Expect(list.Items).To(HaveLen(2))
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())

	clk.Step(time.Hour + time.Minute)
	// Wake the two that are left: which of the three the history limit deleted depends
	// on their completion times, which have whole seconds.
	for _, hr := range done {
		touch(t, hr)
	}
	g.Eventually(func(g Gomega) {
		var list selfhealv1alpha1.HealingRequestList
		g.Expect(k8s.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
		g.Expect(list.Items).To(BeEmpty())
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
}
