package controller_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controlplane"
)

// The safety limits are checked by counting the writes that really reached the
// workloads: a Deployment created with 0 replicas has generation 1, and each write of
// its spec (a scale from zero, a restart) adds one.

// scaleWrites is how many times selfheal wrote each of the namespace's Deployments.
func scaleWrites(t testing.TB, ns string) map[string]int64 {
	t.Helper()
	var list appsv1.DeploymentList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, d := range list.Items {
		out[d.Name] = d.Generation - 1
	}
	return out
}

func ledgerOf(t testing.TB, ns string) []selfhealv1alpha1.LedgerEntry {
	t.Helper()
	return ledgerOfG(NewWithT(t), ns)
}

// TestStormLimitIsExactUnderConcurrency breaks 20 Deployments at once in a namespace
// whose storm limit is 10, with 4 reconcile workers, ten times over: exactly 10 are
// scaled each time, never 11. Checking the limit and recording the action were once
// separate steps, and this overshot to 11 or 12.
func TestStormLimitIsExactUnderConcurrency(t *testing.T) {
	defer startManager(t)()
	const targets, limit, rounds = 20, 10, 10
	for round := range rounds {
		ns := newNamespace(t)
		for i := range targets {
			app(t, ns, fmt.Sprintf("mcp-%02d", i), 0)
		}
		policy(t, ns, func(p *selfhealv1alpha1.HealingPolicy) {
			p.Spec.CircuitBreaker = &selfhealv1alpha1.CircuitBreaker{MaxActionsPerTarget: ptr.To[int32](limit), NamespaceMaxActions: ptr.To[int32](limit)}
		})
		var reqs []*selfhealv1alpha1.HealingRequest
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range targets {
			wg.Go(func() {
				hr := request(t, ns, fmt.Sprintf("mcp-%02d", i))
				mu.Lock()
				reqs = append(reqs, hr)
				mu.Unlock()
			})
		}
		wg.Wait()
		healed, storm := 0, 0
		for _, hr := range reqs {
			got := terminal(t, hr)
			switch readyReasonOf(got) {
			case selfhealv1alpha1.ReasonHealed:
				healed++
			case selfhealv1alpha1.ReasonStormLimit:
				storm++
			default:
				t.Errorf("round %d: %s ended %s (%s)", round, got.Name, got.Status.Phase, readyReasonOf(got))
			}
		}
		written := 0
		for name, n := range scaleWrites(t, ns) {
			if n > 1 {
				t.Errorf("round %d: %s was written %d times", round, name, n)
			}
			written += int(n)
		}
		if written != limit || healed != limit || storm != targets-limit || len(ledgerOf(t, ns)) != limit {
			t.Fatalf("round %d: %d Deployments scaled, %d healed, %d refused by the storm limit, %d ledger entries; want exactly %d scaled",
				round, written, healed, storm, len(ledgerOf(t, ns)), limit)
		}
	}
}

func readyReasonOf(hr *selfhealv1alpha1.HealingRequest) string {
	if c := condition(hr, selfhealv1alpha1.ConditionReady); c != nil {
		return c.Reason
	}
	return ""
}

// breakAgain scales a Deployment back to zero, as an outage would.
func breakAgain(t testing.TB, ns, name string) {
	t.Helper()
	dep := getDeployment(t, ns, name)
	patch := client.MergeFrom(dep.DeepCopy())
	dep.Spec.Replicas = ptr.To[int32](0)
	if err := k8s.Patch(context.Background(), dep, patch); err != nil {
		t.Fatal(err)
	}
}

// TestBreakerIsExactForOneTarget reports one target broken again and again, several
// requests at once each time: with maxActionsPerTarget 2, exactly two scale-ups
// happen, and every later request is refused by the breaker.
func TestBreakerIsExactForOneTarget(t *testing.T) {
	defer startManager(t)()
	for range 3 {
		breakerRounds(t)
	}
}

func breakerRounds(t *testing.T) {
	ns := newNamespace(t)
	app(t, ns, "sandfly", 0)
	policy(t, ns, func(p *selfhealv1alpha1.HealingPolicy) {
		p.Spec.CircuitBreaker = &selfhealv1alpha1.CircuitBreaker{MaxActionsPerTarget: ptr.To[int32](2), NamespaceMaxActions: ptr.To[int32](10)}
	})
	ourWrites := 0
	for round := range 5 {
		before := getDeployment(t, ns, "sandfly").Generation
		var wg sync.WaitGroup
		reqs := make([]*selfhealv1alpha1.HealingRequest, 4)
		for i := range reqs {
			wg.Go(func() { reqs[i] = request(t, ns, "sandfly") })
		}
		wg.Wait()
		for _, hr := range reqs {
			terminal(t, hr)
		}
		ourWrites += int(getDeployment(t, ns, "sandfly").Generation - before)
		if round < 4 && *getDeployment(t, ns, "sandfly").Spec.Replicas != 0 {
			breakAgain(t, ns, "sandfly")
		}
	}
	g := NewWithT(t)
	g.Expect(ourWrites).To(Equal(2), "scale-ups of the one target")
	g.Expect(ledgerOf(t, ns)).To(HaveLen(2))
}

// TestBreakerSurvivesDeletedRequests heals a target once (maxActionsPerTarget 1), then
// deletes every HealingRequest, as retention or a person would: the next failure is
// still refused, because the breaker counts the ledger.
func TestBreakerSurvivesDeletedRequests(t *testing.T) {
	defer startManager(t)()
	ctx := context.Background()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 0)
	policy(t, ns, func(p *selfhealv1alpha1.HealingPolicy) {
		p.Spec.CircuitBreaker = &selfhealv1alpha1.CircuitBreaker{MaxActionsPerTarget: ptr.To[int32](1)}
	})
	g := NewWithT(t)
	g.Expect(terminal(t, request(t, ns, "sandfly")).Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed))
	g.Expect(k8s.DeleteAllOf(ctx, &selfhealv1alpha1.HealingRequest{}, client.InNamespace(ns))).To(Succeed())
	g.Eventually(func(g Gomega) {
		var list selfhealv1alpha1.HealingRequestList
		g.Expect(k8s.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		g.Expect(list.Items).To(BeEmpty())
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())

	breakAgain(t, ns, "sandfly")
	got := terminal(t, request(t, ns, "sandfly"))
	g.Expect(readyReasonOf(got)).To(Equal(selfhealv1alpha1.ReasonCircuitOpen), "progress: %v", got.Status.Progress)
	g.Expect(*getDeployment(t, ns, "sandfly").Spec.Replicas).To(Equal(int32(0)))
	g.Expect(ledgerOf(t, ns)).To(HaveLen(1))
}

// TestNamespaceWithoutOptInIsNotTouched: without the RoleBinding to
// selfheal-remediation, a healable failure ends ManualInterventionRequired naming the
// missing binding, nothing is written and nothing is reserved.
func TestNamespaceWithoutOptInIsNotTouched(t *testing.T) {
	defer startManager(t)()
	ns := newNamespaceWithoutOptIn(t)
	app(t, ns, "sandfly", 0)
	policy(t, ns)
	got := terminal(t, request(t, ns, "sandfly"))
	g := NewWithT(t)
	g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseManualInterventionRequired))
	ready := condition(got, selfhealv1alpha1.ConditionReady)
	g.Expect(ready.Reason).To(Equal(selfhealv1alpha1.ReasonNotPermitted))
	g.Expect(ready.Message).To(ContainSubstring("ClusterRole selfheal-remediation"))
	g.Expect(ready.Message).To(ContainSubstring("update deployments/scale"))
	g.Expect(got.Status.Actions).To(BeEmpty())
	g.Expect(scaleWrites(t, ns)["sandfly"]).To(BeZero())
	g.Expect(ledgerOf(t, ns)).To(BeEmpty())
}

// blockStatus makes the API server refuse the controller's HealingRequest status
// writes in ns that match (a CEL expression over object), and waits until the refusal
// is in force. It pins the point where a manager "dies": whatever it does, it cannot
// get past that write. The returned func lifts the block.
func blockStatus(t *testing.T, ns, name, forbidden string) func() {
	t.Helper()
	ctx := context.Background()
	policyName := "test-block-" + name + "-" + ns
	vap := &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: policyName},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionv1.Fail),
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: []admissionv1.OperationType{admissionv1.Update},
					Rule: admissionv1.Rule{APIGroups: []string{selfhealv1alpha1.GroupVersion.Group}, APIVersions: []string{"*"},
						Resources: []string{"healingrequests/status"}},
				},
			}}},
			MatchConditions: []admissionv1.MatchCondition{{Name: "controller",
				Expression: fmt.Sprintf("request.userInfo.username == %q", controlplane.ServiceAccountUser(managerNamespace, managerSA))}},
			Validations: []admissionv1.Validation{{Expression: "!(" + forbidden + ")", Message: "blocked by the test"}},
		},
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policyName},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policyName,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
			MatchResources: &admissionv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}},
		},
	}
	g := NewWithT(t)
	g.Expect(k8s.Create(ctx, vap)).To(Succeed())
	g.Expect(k8s.Create(ctx, binding)).To(Succeed())

	// In force once a matching write by the controller's identity is refused.
	cfg, err := cluster.AddUser(controlplane.ServiceAccountUser(managerNamespace, managerSA), controlplane.ServiceAccountGroups(managerNamespace))
	g.Expect(err).NotTo(HaveOccurred())
	as, err := client.New(cfg, client.Options{Scheme: controlplane.Scheme()})
	g.Expect(err).NotTo(HaveOccurred())
	probe := request(t, ns, "probe", func(hr *selfhealv1alpha1.HealingRequest) { hr.Name, hr.GenerateName = "probe-"+name, "" })
	g.Eventually(func(g Gomega) {
		got := &selfhealv1alpha1.HealingRequest{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(probe), got)).To(Succeed())
		got.Status.Phase = selfhealv1alpha1.PhaseRemediating
		got.Status.Actions = []selfhealv1alpha1.HealingAction{{Type: selfhealv1alpha1.ActionRolloutRestart, Attempt: 1, Outcome: selfhealv1alpha1.OutcomeIntended,
			Workload: selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: "probe"}, StartedAt: metav1.NewMicroTime(time.Now())}}
		got.Status.Actions = append(got.Status.Actions, got.Status.Actions[0])
		got.Status.Actions[1].Outcome = selfhealv1alpha1.OutcomeSucceeded
		err := as.Status().Update(ctx, got, client.DryRunAll)
		g.Expect(err).To(HaveOccurred())
		g.Expect(err.Error()).To(ContainSubstring("blocked by the test"))
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
	g.Expect(k8s.Delete(ctx, probe)).To(Succeed())

	return func() {
		_ = k8s.Delete(ctx, binding)
		_ = k8s.Delete(ctx, vap)
		NewWithT(t).Eventually(func(g Gomega) {
			err := k8s.Get(ctx, client.ObjectKeyFromObject(vap), &admissionv1.ValidatingAdmissionPolicy{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
		}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
	}
}

// managerProcess runs the manager binary (bin/manager, built by make test) as the
// controller's ServiceAccount, and returns a func that SIGKILLs it.
func managerProcess(t *testing.T) (kill func()) {
	t.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "bin", "manager")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing: run make build (make test does)", bin)
	}
	kubeconfig, err := cluster.WriteKubeconfig(controlplane.ServiceAccountUser(managerNamespace, managerSA), controlplane.ServiceAccountGroups(managerNamespace))
	if err != nil {
		t.Fatal(err)
	}
	log, err := os.CreateTemp(t.TempDir(), "manager-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--metrics-bind-address=0", "--health-probe-bind-address=0", "--zap-log-level=info") //nolint:gosec,noctx // our own binary
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			_ = log.Close()
		})
	}
	t.Cleanup(func() {
		kill()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("manager log:\n%s", tail(string(b), 60))
		}
	})
	return kill
}

func tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// Status writes a test refuses: one that records an intent not yet executed, and one
// that records an action done.
const (
	intentOpen  = "has(object.status.actions) && object.status.actions.exists(a, a.outcome == 'Intended')"
	afterAction = "has(object.status.actions) && object.status.actions.exists(a, a.outcome == 'Succeeded')"
)

// diesAt runs a manager process on a healing of a Deployment scaled to zero (app
// sandfly, in a fresh opted-in namespace) until it has reached the seam, SIGKILLs it
// and lifts the block. It returns the namespace and the request.
func diesAt(t *testing.T, name, seam string, reached func(g Gomega, ns string)) (string, *selfhealv1alpha1.HealingRequest) {
	t.Helper()
	clk.Reset()
	ns := newNamespace(t)
	app(t, ns, "sandfly", 0)
	policy(t, ns)
	unblock := blockStatus(t, ns, name, seam)
	kill := managerProcess(t)
	hr := request(t, ns, "sandfly")
	NewWithT(t).Eventually(func(g Gomega) { reached(g, ns) }).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
	kill()
	unblock()
	return ns, hr
}

func scaled(g Gomega, ns string) {
	d := &appsv1.Deployment{}
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "sandfly"}, d)).To(Succeed())
	g.Expect(*d.Spec.Replicas).To(Equal(int32(1)))
}

func ledgerOfG(g Gomega, ns string) []selfhealv1alpha1.LedgerEntry {
	p := &selfhealv1alpha1.HealingPolicy{}
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "heal"}, p)).To(Succeed())
	return p.Status.Ledger
}

// TestKilledManagerNeverDoublesNorLosesAnAction SIGKILLs a real manager process after
// the action, pinned by refusing the controller's status writes that record it. A new
// manager then finishes the healing: exactly one write on the workload, exactly one
// ledger entry, and status that says so. (A manager that dies between the reservation
// and the action: TestDiedBeforeActingIsAdopted.)
func TestKilledManagerNeverDoublesNorLosesAnAction(t *testing.T) {
	ns, hr := diesAt(t, "after-action", afterAction, scaled)
	defer startManager(t)()
	got := terminal(t, hr)
	expectStatusInvariants(t, got)
	g := NewWithT(t)
	g.Expect(got.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed), "progress: %v", got.Status.Progress)
	g.Expect(executed(got)).To(HaveLen(1))
	g.Expect(scaleWrites(t, ns)["sandfly"]).To(Equal(int64(1)), "one scale-up, never two")
	g.Expect(ledgerOf(t, ns)).To(HaveLen(1))
}

// TestDeadlineRecordsAnActionThatRan: the manager died after acting, before recording
// the outcome, and no manager ran until after the deadline. The next one finds the
// action on the workload and records it as done, not as "not executed".
func TestDeadlineRecordsAnActionThatRan(t *testing.T) {
	ns, hr := diesAt(t, "ran", afterAction, scaled)

	clk.Step(3 * time.Minute)
	defer startManager(t)()
	got := terminal(t, hr)
	g := NewWithT(t)
	g.Expect(readyReasonOf(got)).To(Equal(selfhealv1alpha1.ReasonDeadlineExceeded))
	g.Expect(got.Status.Actions).To(HaveLen(1))
	g.Expect(got.Status.Actions[0].Outcome).To(Equal(selfhealv1alpha1.OutcomeSucceeded), got.Status.Actions[0].Message)
	g.Expect(got.Status.Actions[0].Message).To(ContainSubstring("applied before the deadline"))
	g.Expect(ledgerOf(t, ns)).To(HaveLen(1))
}
