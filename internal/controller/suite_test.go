package controller_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controller"
	"github.com/selfheal-dev/selfheal/internal/controlplane"
)

// The controller tests run on the full local control plane: real apiserver, real
// Deployment and EndpointSlice controllers, scheduler, and kwok as the kubelet. The
// manager authenticates as the controller's ServiceAccount with exactly the RBAC and the
// admission policy that config/default installs; each test namespace opts in to
// remediation with a RoleBinding, as users do.

var (
	cluster *controlplane.ControlPlane
	k8s     client.Client
	// clk runs with real time plus an offset tests can add to, so deadlines and
	// cooldowns are crossed exactly, without sleeping.
	clk = &offsetClock{}
)

const (
	managerNamespace = "selfheal-system"
	managerSA        = "selfheal-controller"
	eventually       = 30 * time.Second
	poll             = 50 * time.Millisecond
)

type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) Now() time.Time                  { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *offsetClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c *offsetClock) Step(d time.Duration)            { c.offset.Add(int64(d)) }

// Reset puts the clock back on real time, for a test that shares the cluster with a
// manager process (which runs on real time) from its start. Tests run one at a time.
func (c *offsetClock) Reset() { c.offset.Store(0) }

func TestMain(m *testing.M) {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	ctx := context.Background()
	var err error
	cluster, err = controlplane.Start(ctx, controlplane.Options{Cluster: true, Progress: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the control plane:", err)
		os.Exit(1)
	}
	k8s = cluster.Client
	if err := cluster.Install(ctx, "config/default", controlplane.Kinds("Namespace", "ServiceAccount",
		"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")); err != nil {
		fmt.Fprintln(os.Stderr, "installing config/default:", err)
		_ = cluster.Stop()
		os.Exit(1)
	}
	code := m.Run()
	_ = cluster.Stop()
	os.Exit(code)
}

// startManager runs the controllers as the manager's ServiceAccount until the returned
// stop is called (which waits for the manager to exit). with, when given, changes the
// controllers' options (a test's diagnostics engine).
func startManager(t testing.TB, with ...func(ctrl.Manager, *controller.Options)) (stop func()) {
	t.Helper()
	cfg, err := cluster.AddUser(controlplane.ServiceAccountUser(managerNamespace, managerSA), controlplane.ServiceAccountGroups(managerNamespace))
	if err != nil {
		t.Fatal(err)
	}
	opts := ctrl.Options{
		Scheme:                 controlplane.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	}
	controller.TrimCache(&opts.Cache)
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	o := controller.Options{
		MaxConcurrentReconciles: 4,
		Clock:                   clk,
		Caller:                  controller.Caller{Namespace: "chat", Labels: map[string]string{"app": "gateway"}},
	}
	for _, w := range with {
		w(mgr, &o)
	}
	if err := controller.Setup(mgr, o); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { cancel(); wg.Wait() }) }
}

// newNamespace creates a namespace for one test that opts in to remediation, as
// config/samples/remediation_rolebinding.yaml does, and waits until the API server's
// authorizer sees the binding: a request created at once would otherwise find the
// namespace not opted in (ManualInterventionRequired, NotPermitted).
func newNamespace(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	ns := newNamespaceWithoutOptIn(t)
	if err := k8s.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "selfheal-remediation"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "selfheal-remediation"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: managerNamespace, Name: managerSA}},
	}); err != nil {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func(g Gomega) {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   controlplane.ServiceAccountUser(managerNamespace, managerSA),
			Groups: controlplane.ServiceAccountGroups(managerNamespace),
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Group: "apps", Resource: "deployments",
				Subresource: "scale", Verb: "update"},
		}}
		g.Expect(k8s.Create(ctx, review)).To(Succeed())
		g.Expect(review.Status.Allowed).To(BeTrue(), "the RoleBinding in %s is not effective yet", ns)
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
	return ns
}

// newNamespaceWithoutOptIn creates a namespace for one test where selfheal may only read.
func newNamespaceWithoutOptIn(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "heal-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// app creates a Deployment and a Service named name and waits until it serves.
func app(t testing.TB, ns, name string, replicas int32, mutate ...func(*appsv1.Deployment)) *appsv1.Deployment {
	t.Helper()
	labels := map[string]string{"app": name}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "server", Image: "ghcr.io/selfheal-dev/" + name + ":1.0",
					Ports: []corev1.ContainerPort{{Name: "mcp", ContainerPort: 8080}},
					// Small requests: the one kwok node (32 CPUs) hosts every test's pods.
					Resources: corev1.ResourceRequirements{
						Limits: corev1.ResourceList{
							corev1.ResourceMemory: mustQuantity("128Mi"), corev1.ResourceCPU: mustQuantity("500m"),
						},
						Requests: corev1.ResourceList{
							corev1.ResourceMemory: mustQuantity("16Mi"), corev1.ResourceCPU: mustQuantity("10m"),
						},
					},
				}}},
			},
		},
	}
	for _, m := range mutate {
		m(dep)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"selfheal.dev/heal": "true"}},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "mcp", Port: 80, TargetPort: intstr.FromString("mcp")}},
		},
	}
	ctx := context.Background()
	if err := k8s.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	return dep
}

// policy creates a HealingPolicy that allows every action, with no cooldown.
func policy(t testing.TB, ns string, mutate ...func(*selfhealv1alpha1.HealingPolicy)) *selfhealv1alpha1.HealingPolicy {
	t.Helper()
	p := &selfhealv1alpha1.HealingPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "heal"},
		Spec: selfhealv1alpha1.HealingPolicySpec{
			AllowedActions: []selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionRolloutRestart, selfhealv1alpha1.ActionScaleFromZero, selfhealv1alpha1.ActionDeleteFailedPods},
			Cooldown:       &metav1.Duration{},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// request creates a HealingRequest as the gateway would.
func request(t testing.TB, ns, service string, mutate ...func(*selfhealv1alpha1.HealingRequest)) *selfhealv1alpha1.HealingRequest {
	t.Helper()
	hr := &selfhealv1alpha1.HealingRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: service + "-"},
		Spec: selfhealv1alpha1.HealingRequestSpec{
			Target:  selfhealv1alpha1.HealingTarget{Service: service},
			Trigger: selfhealv1alpha1.HealingTrigger{Source: selfhealv1alpha1.TriggerSourceGateway, FailureClass: selfhealv1alpha1.FailureConnectionRefused, Message: "connect: connection refused"},
		},
	}
	for _, m := range mutate {
		m(hr)
	}
	if err := k8s.Create(context.Background(), hr); err != nil {
		t.Fatal(err)
	}
	return hr
}

// terminal waits for the request to reach a terminal phase and returns it.
func terminal(t testing.TB, hr *selfhealv1alpha1.HealingRequest) *selfhealv1alpha1.HealingRequest {
	t.Helper()
	return terminalWithin(t, hr, eventually)
}

// terminalWithin is terminal for a healing that may take longer than eventually (two
// attempts at a crashloop, a verification that must look again).
func terminalWithin(t testing.TB, hr *selfhealv1alpha1.HealingRequest, timeout time.Duration) *selfhealv1alpha1.HealingRequest {
	t.Helper()
	got := &selfhealv1alpha1.HealingRequest{}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(hr), got)).To(Succeed())
		g.Expect(got.Status.Phase.IsTerminal()).To(BeTrue(), "phase %s, progress %v", got.Status.Phase, got.Status.Progress)
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	return got
}

func readyPods(g Gomega, ns, app string) []corev1.Pod {
	var pods corev1.PodList
	g.Expect(k8s.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels{"app": app})).To(Succeed())
	var ready []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready = append(ready, p)
			}
		}
	}
	return ready
}

func waitReady(t testing.TB, ns, name string, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	NewWithT(t).Eventually(func(g Gomega) {
		pods = readyPods(g, ns, name)
		g.Expect(pods).To(HaveLen(n))
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
	return pods
}

func getDeployment(t testing.TB, ns, name string) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
		t.Fatal(err)
	}
	return d
}

func condition(hr *selfhealv1alpha1.HealingRequest, typ string) *metav1.Condition {
	for i := range hr.Status.Conditions {
		if hr.Status.Conditions[i].Type == typ {
			return &hr.Status.Conditions[i]
		}
	}
	return nil
}

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

// crashLoop waits for the app's n pods to be ready, puts them all into CrashLoopBackOff
// (with details such as an OOMKilled reason) and waits until none is ready; it returns
// the pods as they were.
func crashLoop(t testing.TB, ns, name string, n int, details map[string]string) []corev1.Pod {
	t.Helper()
	pods := waitReady(t, ns, name, n)
	for i := range pods {
		if err := controlplane.SetPodState(context.Background(), k8s, &pods[i], controlplane.StateCrashLoop, details); err != nil {
			t.Fatal(err)
		}
	}
	NewWithT(t).Eventually(func(g Gomega) { g.Expect(readyPods(g, ns, name)).To(BeEmpty()) }).
		WithTimeout(eventually).WithPolling(poll).Should(Succeed())
	return pods
}

// crashloopingApp creates the app sandfly whose every pod, restarted or not,
// crashloops (the kwok stage label is on the pod template; Recreate, so a restart
// settles), and waits until its pod does.
func crashloopingApp(t testing.TB, ns string) {
	t.Helper()
	app(t, ns, "sandfly", 1, func(d *appsv1.Deployment) {
		d.Spec.Template.Labels[controlplane.StateLabel] = string(controlplane.StateCrashLoop)
		d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	})
	NewWithT(t).Eventually(func(g Gomega) {
		var pods corev1.PodList
		g.Expect(k8s.List(context.Background(), &pods, client.InNamespace(ns))).To(Succeed())
		g.Expect(pods.Items).To(HaveLen(1))
		g.Expect(pods.Items[0].Status.ContainerStatuses).NotTo(BeEmpty())
		g.Expect(pods.Items[0].Status.ContainerStatuses[0].State.Waiting).NotTo(BeNil())
		g.Expect(pods.Items[0].Status.ContainerStatuses[0].State.Waiting.Reason).To(Equal("CrashLoopBackOff"))
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
}
