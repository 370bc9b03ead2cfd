package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controlplane"
	"github.com/selfheal-dev/selfheal/internal/demo/alerts"
	"github.com/selfheal-dev/selfheal/internal/demo/chat"
	"github.com/selfheal-dev/selfheal/internal/demo/fakeclaude"
	"github.com/selfheal-dev/selfheal/internal/demo/stack"
)

const question = "What security alerts do we have?"

// e2ePolicy allows every action with no cooldown and a breaker wide enough for the
// suite's scenarios, which heal the same service several times in a few minutes.
func e2ePolicy() *selfhealv1alpha1.HealingPolicy {
	return &selfhealv1alpha1.HealingPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: stack.Namespace, Name: "mcp-servers"},
		Spec: selfhealv1alpha1.HealingPolicySpec{
			ServiceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"selfheal.dev/heal": "true"}},
			AllowedActions:  []selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionRolloutRestart, selfhealv1alpha1.ActionScaleFromZero, selfhealv1alpha1.ActionDeleteFailedPods},
			Cooldown:        &metav1.Duration{},
			CircuitBreaker:  &selfhealv1alpha1.CircuitBreaker{MaxActionsPerTarget: ptr.To[int32](50), NamespaceMaxActions: ptr.To[int32](100)},
		},
	}
}

// eventLog collects the healing events of the stream it was opened on.
type eventLog struct {
	mu     sync.Mutex
	events []chat.Event
}

func (l *eventLog) all() []chat.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// forRequest returns the types of the events of one HealingRequest, in order.
func (l *eventLog) forRequest(name string) []string {
	var types []string
	for _, e := range l.all() {
		if e.Request == name {
			types = append(types, e.Type)
		}
	}
	return types
}

func (l *eventLog) types() []string {
	var types []string
	for _, e := range l.all() {
		types = append(types, e.Type)
	}
	return types
}

func subscribe(ctx context.Context, c *chat.Client, f chat.Filter) *eventLog {
	ch, err := c.Events(ctx, f)
	Expect(err).NotTo(HaveOccurred())
	l := &eventLog{}
	go func() {
		for e := range ch {
			l.mu.Lock()
			l.events = append(l.events, e)
			l.mu.Unlock()
		}
	}()
	return l
}

func newClient() *chat.Client {
	c := &chat.Client{
		GatewayURL: env.GatewayURL, Token: env.Token, Upstream: stack.Upstream,
		OnNotice: func(s string) { fmt.Fprintf(GinkgoWriter, "  mcp notice: %s\n", s) },
		OnStep:   func(s string) { fmt.Fprintf(GinkgoWriter, "  chat: %s\n", s) },
	}
	DeferCleanup(c.Close)
	return c
}

// requestsSince returns the HealingRequests created since the names in before.
func requestsSince(ctx context.Context, before map[string]bool) []selfhealv1alpha1.HealingRequest {
	all, err := env.Requests(ctx)
	Expect(err).NotTo(HaveOccurred())
	var out []selfhealv1alpha1.HealingRequest
	for _, r := range all {
		if !before[r.Name] {
			out = append(out, r)
		}
	}
	return out
}

func existingRequests(ctx context.Context) map[string]bool {
	all, err := env.Requests(ctx)
	Expect(err).NotTo(HaveOccurred())
	names := map[string]bool{}
	for _, r := range all {
		names[r.Name] = true
	}
	return names
}

// oneRequest waits until exactly one new HealingRequest exists and is terminal.
func oneRequest(ctx context.Context, before map[string]bool) selfhealv1alpha1.HealingRequest {
	var hr selfhealv1alpha1.HealingRequest
	Eventually(func(g Gomega) {
		news := requestsSince(ctx, before)
		g.Expect(news).To(HaveLen(1), "new HealingRequests: %s", describeRequests(news))
		hr = news[0]
		g.Expect(hr.Status.Phase.IsTerminal()).To(BeTrue())
	}).WithContext(ctx).WithTimeout(60 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
	return hr
}

func describeRequests(hrs []selfhealv1alpha1.HealingRequest) string {
	var parts []string
	for _, hr := range hrs {
		parts = append(parts, fmt.Sprintf("%s (trigger %s %q, phase %s, issue %s, duplicateOf %q)", hr.Name,
			hr.Spec.Trigger.FailureClass, hr.Spec.Trigger.Message, hr.Status.Phase, hr.Status.Issue, hr.Status.DuplicateOf))
	}
	return strings.Join(parts, "; ")
}

func executedActions(hr selfhealv1alpha1.HealingRequest) []selfhealv1alpha1.ActionType {
	var out []selfhealv1alpha1.ActionType
	for _, a := range hr.Status.Actions {
		if a.Outcome == selfhealv1alpha1.OutcomeSucceeded || a.Outcome == selfhealv1alpha1.OutcomeFailed {
			out = append(out, a.Type)
		}
	}
	return out
}

// readyCondition is the request's Ready condition; empty when it has none.
func readyCondition(hr selfhealv1alpha1.HealingRequest) metav1.Condition {
	if c := meta.FindStatusCondition(hr.Status.Conditions, selfhealv1alpha1.ConditionReady); c != nil {
		return *c
	}
	return metav1.Condition{}
}

func readyMessage(hr selfhealv1alpha1.HealingRequest) string { return readyCondition(hr).Message }

// inOrder asserts that start comes first, at least one progress event follows, and the
// given terminal event ends the sequence.
func expectInOrder(types []string, terminal string) {
	Expect(types).NotTo(BeEmpty())
	Expect(types[0]).To(Equal(chat.EventHealingStart), "events: %v", types)
	Expect(types[len(types)-1]).To(Equal(terminal), "events: %v", types)
	Expect(types[1:len(types)-1]).NotTo(BeEmpty(), "progress between start and end: %v", types)
	for _, t := range types[1 : len(types)-1] {
		Expect(t).To(Equal(chat.EventHealingProgress), "events: %v", types)
	}
}

func crashLoopAll(ctx context.Context, details map[string]string) {
	pods, err := env.Pods(ctx)
	Expect(err).NotTo(HaveOccurred())
	Expect(pods).NotTo(BeEmpty())
	for i := range pods {
		Expect(controlplane.SetPodState(ctx, env.Client, &pods[i], controlplane.StateCrashLoop, details)).To(Succeed())
	}
	Expect(env.WaitServing(ctx, false)).To(Succeed())
}

// onlyPodsWaiting waits until the MCP server has pods, none terminating, and every
// container of each waits for reason: the breakage a scenario set up is in place.
func onlyPodsWaiting(ctx context.Context, reason string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		var list corev1.PodList
		g.Expect(env.Client.List(ctx, &list, client.InNamespace(stack.Namespace), client.MatchingLabels{"app": stack.Service})).To(Succeed())
		g.Expect(list.Items).NotTo(BeEmpty())
		for _, p := range list.Items {
			g.Expect(p.DeletionTimestamp).To(BeNil(), "pod %s is terminating", p.Name)
			g.Expect(p.Status.ContainerStatuses).NotTo(BeEmpty(), "pod %s has no container status yet", p.Name)
			for _, st := range p.Status.ContainerStatuses {
				g.Expect(st.State.Waiting).NotTo(BeNil(), "pod %s container %s", p.Name, st.Name)
				g.Expect(st.State.Waiting.Reason).To(Equal(reason), "pod %s container %s", p.Name, st.Name)
			}
		}
	}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(50 * time.Millisecond).Should(Succeed())
}

func patchDeployment(ctx context.Context, mutate func(*appsv1.Deployment)) {
	dep, err := env.Deployment(ctx)
	Expect(err).NotTo(HaveOccurred())
	patch := client.MergeFrom(dep.DeepCopy())
	mutate(dep)
	Expect(env.Client.Patch(ctx, dep, patch)).To(Succeed())
}

func restartedAt(ctx context.Context) string {
	dep, err := env.Deployment(ctx)
	Expect(err).NotTo(HaveOccurred())
	return dep.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"]
}

// restoreHealthy puts the policy back and the MCP server exactly as Start deployed it,
// verified (stack.ResetMCPServer), whatever a scenario left; after a failure it first
// prints the state the scenario left.
func restoreHealthy(ctx SpecContext) {
	if CurrentSpecReport().Failed() {
		fmt.Fprintf(GinkgoWriter, "state after the failure:\n%s", describeTarget(ctx))
	}
	Expect(env.ApplyPolicy(ctx, e2ePolicy())).To(Succeed())
	env.Alerts.SetHang(false)
	Expect(env.ResetMCPServer(ctx)).To(Succeed(), func() string { return describeTarget(ctx) })
}

// Ordered: scenario 4 reads the metrics of the healings before it, and 12 replaces
// the controllers the others scrape, so it runs last. ContinueOnFailure: every scenario
// starts from the verified baseline (restoreHealthy), so one failure hides no other.
var _ = Describe("selfheal", Ordered, ContinueOnFailure, func() {
	BeforeAll(func(ctx SpecContext) {
		Expect(env.ApplyPolicy(ctx, e2ePolicy())).To(Succeed())
	})

	// Every scenario leaves the MCP server exactly as Start deployed it (verified), the
	// policy in place and the server answering, even when it failed half-way.
	AfterEach(restoreHealthy, NodeTimeout(3*time.Minute))

	It("1. heals a service scaled to zero while the question waits, streaming each step", func(ctx SpecContext) {
		c := newClient()
		Expect(c.Connect(ctx)).To(Succeed())
		events := subscribe(ctx, c, chat.Filter{Service: stack.Service})
		before := existingRequests(ctx)

		Expect(env.Scale(ctx, 0)).To(Succeed())
		Expect(env.WaitServing(ctx, false)).To(Succeed())
		start := time.Now()
		answer, err := c.Ask(ctx, question)
		Expect(err).NotTo(HaveOccurred())
		recovered("scaled to zero", time.Since(start))
		expectAlertsIn(answer)

		hr := oneRequest(ctx, before)
		Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed))
		Expect(hr.Status.Issue).To(Equal(selfhealv1alpha1.IssueNoPods))
		Expect(executedActions(hr)).To(Equal([]selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionScaleFromZero}))
		Eventually(func() []string { return events.forRequest(hr.Name) }).
			Should(ContainElement(chat.EventHealingComplete))
		expectInOrder(events.forRequest(hr.Name), chat.EventHealingComplete)
	})

	It("2. restarts crashlooping pods and answers", func(ctx SpecContext) {
		c := newClient()
		Expect(c.Connect(ctx)).To(Succeed())
		before := existingRequests(ctx)
		restarted := restartedAt(ctx)

		crashLoopAll(ctx, nil)
		start := time.Now()
		answer, err := c.Ask(ctx, question)
		Expect(err).NotTo(HaveOccurred())
		recovered("crashloop", time.Since(start))
		expectAlertsIn(answer)

		hr := oneRequest(ctx, before)
		Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed))
		Expect(hr.Status.Issue).To(Equal(selfhealv1alpha1.IssueCrashLoopBackOff))
		Expect(executedActions(hr)).To(Equal([]selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionRolloutRestart}))
		Expect(restartedAt(ctx)).NotTo(Equal(restarted))
	})

	It("3. diagnoses and heals a HealingRequest created with kubectl, watched with kubectl get hr", func(ctx SpecContext) {
		Expect(env.Scale(ctx, 0)).To(Succeed())
		Expect(env.WaitServing(ctx, false)).To(Succeed())
		manifest := filepath.Join(env.Dir, "manual-hr.yaml")
		Expect(os.WriteFile(manifest, []byte(`apiVersion: selfheal.dev/v1alpha1
kind: HealingRequest
metadata:
  name: sandfly-manual-check
  namespace: cortex-system
spec:
  target:
    service: sandfly-mcp-server
  trigger:
    source: manual
    failureClass: ConnectionRefused
    message: reported by the on-call engineer
`), 0o600)).To(Succeed())
		start := time.Now()
		_, err := env.KubectlRun(ctx, "create", "-f", manifest)
		Expect(err).NotTo(HaveOccurred())
		_, err = env.KubectlRun(ctx, "wait", "-n", stack.Namespace, "hr/sandfly-manual-check",
			"--for=jsonpath={.status.phase}=Healed", "--timeout=60s")
		Expect(err).NotTo(HaveOccurred())
		recovered("kubectl-created request", time.Since(start))

		out, err := env.KubectlRun(ctx, "get", "hr", "-n", stack.Namespace, "sandfly-manual-check")
		Expect(err).NotTo(HaveOccurred())
		fmt.Fprintln(GinkgoWriter, out)
		header := strings.Fields(strings.SplitN(out, "\n", 2)[0])
		Expect(header).To(Equal([]string{"NAME", "TARGET", "PHASE", "ISSUE", "ACTION", "AGE"}))
		Expect(out).To(MatchRegexp(`sandfly-manual-check\s+sandfly-mcp-server\s+Healed\s+NoPods\s+ScaleFromZero\s+\d+s`))

		hr := &selfhealv1alpha1.HealingRequest{}
		Expect(env.Client.Get(ctx, client.ObjectKey{Namespace: stack.Namespace, Name: "sandfly-manual-check"}, hr)).To(Succeed())
		Expect(hr.Status.Findings).To(HaveLen(8), "one finding per check")
		Expect(hr.Status.Actions).To(HaveLen(1))
		Expect(hr.Status.Actions[0].Outcome).To(Equal(selfhealv1alpha1.OutcomeSucceeded))
		Expect(hr.Status.Progress).NotTo(BeEmpty())
	})

	It("4. serves health, readiness and metrics", func(ctx SpecContext) {
		for _, url := range []string{env.ProbeURL + "/healthz", env.ProbeURL + "/readyz", env.GatewayURL + "/healthz", env.GatewayURL + "/readyz"} {
			resp, err := http.Get(url) //nolint:noctx
			Expect(err).NotTo(HaveOccurred())
			_ = resp.Body.Close()
			Expect(resp.StatusCode).To(Equal(http.StatusOK), url)
		}
		Expect(scrape(env.MetricsURL)).To(And(
			ContainSubstring(`selfheal_healings_total{issue="NoPods",outcome="Healed"}`),
			ContainSubstring(`selfheal_actions_total{outcome="Succeeded",type="ScaleFromZero"}`),
			ContainSubstring("selfheal_time_to_heal_seconds_bucket"),
			ContainSubstring("controller_runtime_reconcile_total"),
		))
		Expect(scrape(env.GatewayMetricsURL)).To(And(
			ContainSubstring("selfheal_gateway_upstream_requests_total"),
			ContainSubstring(`selfheal_gateway_healings_triggered_total{outcome="created",upstream="sandfly"}`),
		))
	})

	It("5. restarts a server whose calls time out and replays the call", func(ctx SpecContext) {
		c := newClient()
		Expect(c.Connect(ctx)).To(Succeed())
		before := existingRequests(ctx)
		env.Alerts.SetHang(true)
		start := time.Now()
		answer, err := c.Ask(ctx, question)
		Expect(err).NotTo(HaveOccurred())
		recovered("timeout", time.Since(start))
		expectAlertsIn(answer)
		hr := oneRequest(ctx, before)
		Expect(hr.Spec.Trigger.FailureClass).To(Equal(selfhealv1alpha1.FailureTimeout))
		Expect(hr.Status.Issue).To(Equal(selfhealv1alpha1.IssueUnresponsive))
		Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed))
		Expect(executedActions(hr)).To(Equal([]selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionRolloutRestart}))
	})

	It("6. fails fast with the cause when the image cannot be pulled, without restarting", func(ctx SpecContext) {
		c := newClient()
		Expect(c.Connect(ctx)).To(Succeed())
		events := subscribe(ctx, c, chat.Filter{Service: stack.Service})
		before := existingRequests(ctx)
		patchDeployment(ctx, func(d *appsv1.Deployment) {
			d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
			d.Spec.Template.Labels[controlplane.StateLabel] = string(controlplane.StateImagePull)
		})
		// Recreate removes the old pod before the new one exists: a call in between
		// finds no pod (NoPods), or one not yet staged (pending): wait for the failure.
		onlyPodsWaiting(ctx, "ImagePullBackOff")
		Expect(env.WaitServing(ctx, false)).To(Succeed())
		restarted := restartedAt(ctx)
		start := time.Now()
		_, err := c.Ask(ctx, question)
		took := time.Since(start)
		Expect(err).To(MatchError(ContainSubstring("ImagePullBackOff")))
		fmt.Fprintf(os.Stderr, "time to diagnosis [image pull]: %s\n", took.Round(time.Millisecond))
		Expect(took).To(BeNumerically("<", 30*time.Second), "fails fast, long before the 2m deadline")

		hr := oneRequest(ctx, before)
		Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseManualInterventionRequired))
		Expect(hr.Status.Issue).To(Equal(selfhealv1alpha1.IssueImagePullBackOff))
		Expect(readyMessage(hr)).To(ContainSubstring("ghcr.io/sandfly/security-alerts-mcp:2.4.1"))
		Expect(hr.Status.Actions).To(BeEmpty())
		Expect(restartedAt(ctx)).To(Equal(restarted), "no restart attempted")
		Eventually(func() []string { return events.forRequest(hr.Name) }).Should(ContainElement(chat.EventHealingFailed))
	})

	It("7. reports OOMKilled as needing a person, with the reason", func(ctx SpecContext) {
		c := newClient()
		Expect(c.Connect(ctx)).To(Succeed())
		before := existingRequests(ctx)
		restarted := restartedAt(ctx)
		crashLoopAll(ctx, map[string]string{controlplane.ReasonAnnotation: "OOMKilled"})
		_, err := c.Ask(ctx, question)
		Expect(err).To(MatchError(ContainSubstring("OOMKilled")))
		hr := oneRequest(ctx, before)
		Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseManualInterventionRequired))
		Expect(hr.Status.Issue).To(Equal(selfhealv1alpha1.IssueOOMKilled))
		Expect(readyMessage(hr)).To(ContainSubstring("256Mi"))
		Expect(restartedAt(ctx)).To(Equal(restarted), "a restart would be OOMKilled again")
	})

	It("8. only diagnoses and reports when no HealingPolicy exists", func(ctx SpecContext) {
		Expect(env.Client.Delete(ctx, e2ePolicy())).To(Succeed())
		c := newClient()
		Expect(c.Connect(ctx)).To(Succeed())
		before := existingRequests(ctx)
		Expect(env.Scale(ctx, 0)).To(Succeed())
		Expect(env.WaitServing(ctx, false)).To(Succeed())
		_, err := c.Ask(ctx, question)
		Expect(err).To(MatchError(ContainSubstring("No HealingPolicy governs service")))
		hr := oneRequest(ctx, before)
		Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseSkipped))
		Expect(hr.Status.Issue).To(Equal(selfhealv1alpha1.IssueNoPods))
		Expect(hr.Status.Findings).NotTo(BeEmpty())
		Expect(hr.Status.Actions).To(BeEmpty())
		dep, err := env.Deployment(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(*dep.Spec.Replicas).To(Equal(int32(0)), "nothing changed")
	})

	It("9. turns a storm of failing calls into one healing and one restart, and answers them all", func(ctx SpecContext) {
		c := newClient()
		Expect(c.Connect(ctx)).To(Succeed())
		before := existingRequests(ctx)
		crashLoopAll(ctx, nil)
		const calls = 50
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, calls)
		for range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				answer, err := c.Ask(ctx, question)
				if err == nil && !answersAlerts(answer) {
					err = fmt.Errorf("unexpected answer %q", answer)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		recovered(fmt.Sprintf("storm of %d calls", calls), time.Since(start))
		for err := range errs {
			Expect(err).NotTo(HaveOccurred())
		}
		hr := oneRequest(ctx, before)
		Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed))
		Expect(executedActions(hr)).To(Equal([]selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionRolloutRestart}))
	})

	It("10. rides out an overloaded Claude without creating a HealingRequest", func(ctx SpecContext) {
		if env.Claude == nil {
			Skip("the real Claude API is in use: overload cannot be injected")
		}
		c := newClient()
		Expect(c.Connect(ctx)).To(Succeed())
		events := subscribe(ctx, c, chat.Filter{}) // processing delays concern Claude, not a service
		before := existingRequests(ctx)
		retriesBefore := counter(scrape(env.GatewayMetricsURL), `selfheal_gateway_retries_total{`, `upstream="anthropic"`)
		env.Claude.Inject(fakeclaude.Fault529)
		start := time.Now()
		answer, err := c.Ask(ctx, question)
		Expect(err).NotTo(HaveOccurred())
		recovered("Claude overloaded (529)", time.Since(start))
		expectAlertsIn(answer)
		Expect(counter(scrape(env.GatewayMetricsURL), `selfheal_gateway_retries_total{`, `upstream="anthropic"`)).
			To(BeNumerically(">", retriesBefore), "the Claude retry is counted")
		Eventually(events.types).Should(ContainElement(chat.EventProcessingDelay))
		Expect(requestsSince(ctx, before)).To(BeEmpty(), "Claude failures never create HealingRequests")
	})

	It("11. is installed from config/default: restricted pods, two identities, writes only where opted in", func(ctx SpecContext) {
		// Both Deployments got their pods in selfheal-system, whose namespace enforces
		// the restricted Pod Security Standard (a pod violating it is never created).
		for _, name := range []string{"selfheal-controller", "selfheal-gateway"} {
			Eventually(func(g Gomega) {
				dep := &appsv1.Deployment{}
				g.Expect(env.Client.Get(ctx, client.ObjectKey{Namespace: stack.ManagerNamespace, Name: name}, dep)).To(Succeed())
				g.Expect(dep.Status.ReadyReplicas).To(Equal(*dep.Spec.Replicas), name)
			}).WithTimeout(time.Minute).Should(Succeed())
		}
		ns := &corev1.Namespace{}
		Expect(env.Client.Get(ctx, client.ObjectKey{Name: stack.ManagerNamespace}, ns)).To(Succeed())
		Expect(ns.Labels).To(HaveKeyWithValue("pod-security.kubernetes.io/enforce", "restricted"))

		can := func(sa, verb, group, resource, sub, namespace string) bool {
			GinkgoHelper()
			review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   controlplane.ServiceAccountUser(stack.ManagerNamespace, sa),
				Groups: controlplane.ServiceAccountGroups(stack.ManagerNamespace),
				ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: namespace, Verb: verb,
					Group: group, Resource: resource, Subresource: sub},
			}}
			Expect(env.Client.Create(ctx, review)).To(Succeed())
			return review.Status.Allowed
		}
		// The gateway: HealingRequests only.
		Expect(can(stack.GatewaySA, "create", "selfheal.dev", "healingrequests", "", stack.Namespace)).To(BeTrue())
		Expect(can(stack.GatewaySA, "patch", "apps", "deployments", "", stack.Namespace)).To(BeFalse())
		Expect(can(stack.GatewaySA, "get", "", "pods", "log", stack.Namespace)).To(BeFalse())
		Expect(can(stack.GatewaySA, "delete", "", "pods", "", stack.Namespace)).To(BeFalse())
		// The controller: reads everywhere, writes only where the namespace opted in.
		Expect(can(stack.ControllerSA, "list", "", "pods", "", "default")).To(BeTrue())
		Expect(can(stack.ControllerSA, "patch", "apps", "deployments", "", stack.Namespace)).To(BeTrue())
		Expect(can(stack.ControllerSA, "update", "apps", "deployments", "scale", stack.Namespace)).To(BeTrue())
		Expect(can(stack.ControllerSA, "patch", "apps", "deployments", "", "default")).To(BeFalse())
		Expect(can(stack.ControllerSA, "delete", "", "pods", "", "default")).To(BeFalse())
		Expect(can(stack.ControllerSA, "update", "", "secrets", "", stack.Namespace)).To(BeFalse())
	})

	It("13. serves one MCP session from either gateway replica, through a healing", replicas)

	It("14. resumes a healing's event stream on the other gateway replica with Last-Event-ID, missing nothing", resumeOnTheOtherReplica)

	It("15. a gateway SIGKILLed mid-healing: the call is retried in its session on the restarted gateway, the events resume, the healing ends once",
		restartMidHealing(syscall.SIGKILL, false))

	It("16. a gateway stopped with SIGTERM mid-healing: the same, after its graceful stop", restartMidHealing(syscall.SIGTERM, false))

	It("17. turns 1,000 failure reports over 3 s, on both gateway replicas, into one HealingRequest and one action", reportsMakeOneRequest)

	It("18. ends a request that needed no action Skipped, not counted as a healing", noActionIsNoHealing)

	It("19. a healing that ends while its gateway is down (SIGKILL): the restarted gateway resumes its events to the end",
		restartMidHealing(syscall.SIGKILL, true))

	It("12. SIGKILLed leaders mid-healing: the standby takes over, each healing ends once with one action", handover)
})

// scrape reads a metrics endpoint.
func scrape(base string) string {
	resp, err := http.Get(base + "/metrics") //nolint:noctx
	Expect(err).NotTo(HaveOccurred())
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	Expect(err).NotTo(HaveOccurred())
	return string(body)
}

// answersAlerts reports whether an answer carries every alert id the MCP server has:
// only a tool result that reached Claude has them (a failure reply mentions "security
// alerts" too, but no id).
func answersAlerts(answer string) bool {
	all, err := alerts.Alerts("")
	if err != nil || len(all) == 0 {
		return false
	}
	for _, a := range all {
		if !strings.Contains(answer, a.ID) {
			return false
		}
	}
	return true
}

func expectAlertsIn(answer string) {
	GinkgoHelper()
	Expect(answersAlerts(answer)).To(BeTrue(), "the answer carries every alert id the MCP server returned: %q", answer)
}

// counter sums the samples of a metric (name with its opening brace) whose labels
// contain label.
func counter(text, name, label string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name) || !strings.Contains(line, label) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		Expect(err).NotTo(HaveOccurred(), line)
		sum += v
	}
	return sum
}
