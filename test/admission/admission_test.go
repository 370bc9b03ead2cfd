// Package admission_test proves, on a real kube-apiserver, that the ValidatingAdmissionPolicy
// in config/admission lets the selfheal controller's ServiceAccount make only the three
// remediations (a rollout restart, a scale from 0 to 1, deleting a Failed pod), that it
// denies everything else that identity tries on core and apps resources with 403 and
// the rule's message, dry run included, and that it leaves every other user alone. RBAC
// is enforced too: without the namespace's opt-in RoleBinding even the three
// remediations are forbidden, before admission runs.
package admission_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/selfheal-dev/selfheal/internal/controlplane"
)

const (
	// The identity config/admission is matched to (config/rbac/service_account.yaml).
	controllerNamespace = "selfheal-system"
	controllerName      = "selfheal-controller"

	policyName  = "selfheal-controller-remediations"
	restartedAt = "kubectl.kubernetes.io/restartedAt"

	// Each rule's own message (config/admission/validating_admission_policy.yaml).
	msgRestart   = "selfheal may change a Deployment or StatefulSet only by the kubectl.kubernetes.io/restartedAt pod-template annotation"
	msgScale     = "selfheal may scale only from 0 to 1 replica"
	msgPodDelete = "selfheal may delete only pods in phase Failed"

	// writerRole grants the controller every write the cases try, so that RBAC is never
	// what denies them: the admission policy is. readerRole is what a namespace that did
	// not opt in leaves it (the controller reads cluster-wide).
	writerRole = "selfheal-admission-test-writer"
	readerRole = "selfheal-admission-test-reader"

	// Generous: 2 shared cores, the race detector, and informer-driven RBAC and policy.
	timeout = 60 * time.Second
)

var (
	cluster *controlplane.ControlPlane
	// admin is a cluster administrator (system:masters): the policy never matches it.
	admin client.Client
	// controller authenticates as the selfheal controller's ServiceAccount.
	controller       client.Client
	controllerConfig *rest.Config
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	logf.SetLogger(logr.Discard()) // the clients' own logs; the tests report what matters
	ctx := context.Background()
	var err error
	cluster, err = controlplane.Start(ctx, controlplane.Options{Progress: os.Stderr})
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: the admission tests need the local control plane (etcd and kube-apiserver, built by hack/controlplane.sh) and could not start it: %v\n", err)
		return 1
	}
	defer func() {
		if err := cluster.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping the control plane: %v\n", err)
		}
	}()
	admin = cluster.Client
	if err := setUp(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: setting up the admission tests: %v\n", err)
		return 1
	}
	return m.Run()
}

// setUp installs config/admission, the test's RBAC, and waits until the policy denies.
func setUp(ctx context.Context) error {
	if err := applyAdmissionConfig(ctx); err != nil {
		return err
	}
	for _, role := range []*rbacv1.ClusterRole{writerClusterRole(), readerClusterRole()} {
		if err := admin.Create(ctx, role); err != nil {
			return fmt.Errorf("creating ClusterRole %s: %w", role.Name, err)
		}
	}
	var err error
	controllerConfig, err = cluster.AddUser(
		controlplane.ServiceAccountUser(controllerNamespace, controllerName),
		controlplane.ServiceAccountGroups(controllerNamespace))
	if err != nil {
		return err
	}
	if controller, err = client.New(controllerConfig, client.Options{Scheme: admin.Scheme()}); err != nil {
		return err
	}
	return waitForPolicy(ctx)
}

// applyAdmissionConfig creates, as admin, every object of the files that
// config/admission/kustomization.yaml lists.
func applyAdmissionConfig(ctx context.Context) error {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return err
	}
	dir := filepath.Join(root, "config", "admission")
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return err
	}
	var kustomization struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(data, &kustomization); err != nil {
		return fmt.Errorf("reading %s/kustomization.yaml: %w", dir, err)
	}
	kinds := map[string]bool{}
	for _, file := range kustomization.Resources {
		f, err := os.Open(filepath.Join(dir, file))
		if err != nil {
			return err
		}
		decoder := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
		for {
			obj := &unstructured.Unstructured{}
			if err := decoder.Decode(&obj.Object); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				_ = f.Close()
				return fmt.Errorf("decoding %s: %w", file, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			if err := admin.Create(ctx, obj); err != nil {
				_ = f.Close()
				return fmt.Errorf("creating %s %s from %s: %w", obj.GetKind(), obj.GetName(), file, err)
			}
			kinds[obj.GetKind()] = true
		}
		_ = f.Close()
	}
	if !kinds["ValidatingAdmissionPolicy"] || !kinds["ValidatingAdmissionPolicyBinding"] {
		return fmt.Errorf("config/admission must hold a ValidatingAdmissionPolicy and its binding; it holds %v", kinds)
	}
	return nil
}

// waitForPolicy polls a server-side dry run of a write the policy denies until it is
// denied by the policy (not by RBAC, whose binding also takes effect asynchronously):
// a policy takes effect some time after it is created.
func waitForPolicy(ctx context.Context) error {
	ns, err := createNamespace(ctx, writerRole)
	if err != nil {
		return err
	}
	var last error
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"}}
		last = controller.Create(ctx, cm, client.DryRunAll)
		return last != nil && strings.Contains(last.Error(), "selfheal may not create configmaps"), nil
	})
	if err != nil {
		return fmt.Errorf("the admission policy %s was not in force after %s (last answer to a dry-run create of a ConfigMap as %s: %v)",
			policyName, timeout, controllerName, last)
	}
	return nil
}

func writerClusterRole() *rbacv1.ClusterRole {
	all := []string{"get", "list", "watch", "create", "update", "patch", "delete"}
	return &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: writerRole},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods", "configmaps"}, Verbs: all},
			{APIGroups: []string{""}, Resources: []string{"pods/eviction"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"get", "create"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
			{APIGroups: []string{"apps"}, Resources: []string{"deployments", "statefulsets"}, Verbs: all},
			{APIGroups: []string{"apps"}, Resources: []string{"deployments/scale", "statefulsets/scale"}, Verbs: []string{"get", "update", "patch"}},
			{APIGroups: []string{"apps"}, Resources: []string{"deployments/status", "statefulsets/status"}, Verbs: []string{"get", "update", "patch"}},
		},
	}
}

func readerClusterRole() *rbacv1.ClusterRole {
	read := []string{"get", "list", "watch"}
	return &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: readerRole},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods", "configmaps", "events"}, Verbs: read},
			{APIGroups: []string{"apps"}, Resources: []string{"deployments", "statefulsets", "deployments/scale", "statefulsets/scale"}, Verbs: read},
		},
	}
}

// createNamespace creates a namespace in which the controller's ServiceAccount is bound
// to role, and waits until the authorizer sees the binding.
func createNamespace(ctx context.Context, role string) (string, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "admission-"}}
	if err := admin.Create(ctx, ns); err != nil {
		return "", err
	}
	if err := bind(ctx, ns.Name, role, controllerName); err != nil {
		return "", err
	}
	return ns.Name, nil
}

// bind binds role to the ServiceAccount selfheal-system/sa in ns and waits until the
// authorizer allows the ServiceAccount to get pods there (both test roles grant it).
func bind(ctx context.Context, ns, role, sa string) error {
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa + "-" + role},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: controllerNamespace}},
	}
	if err := admin.Create(ctx, rb); err != nil {
		return err
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   controlplane.ServiceAccountUser(controllerNamespace, sa),
			Groups: controlplane.ServiceAccountGroups(controllerNamespace),
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: ns, Verb: "get", Resource: "pods",
			},
		}}
		if err := admin.Create(ctx, review); err != nil {
			return false, err
		}
		return review.Status.Allowed, nil
	})
	if err != nil {
		return fmt.Errorf("the RoleBinding %s/%s did not take effect within %s: %w", ns, rb.Name, timeout, err)
	}
	return nil
}

func newNamespace(t *testing.T, role string) string {
	t.Helper()
	ns, err := createNamespace(t.Context(), role)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// --- fixtures, created as admin ---

func deployment(ns, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels:      map[string]string{"app": name, "team": "payments"},
			Annotations: map[string]string{"example.com/owner": "sre"},
		},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: podTemplate(labels),
		},
	}
}

func statefulSet(ns, name string, replicas int32) *appsv1.StatefulSet {
	labels := map[string]string{"app": name}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels:      map[string]string{"app": name, "team": "payments"},
			Annotations: map[string]string{"example.com/owner": "sre"},
		},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To(replicas),
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			ServiceName: name,
			Template:    podTemplate(labels),
		},
	}
}

func podTemplate(labels map[string]string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{
			Labels:      labels,
			Annotations: map[string]string{"prometheus.io/scrape": "true"},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: "app",
			Containers:         []corev1.Container{{Name: "server", Image: "ghcr.io/selfheal-dev/example:1.0"}},
		},
	}
}

func pod(ns, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "server", Image: "ghcr.io/selfheal-dev/example:1.0"}},
		},
	}
}

// create creates obj as admin and returns it.
func create[T client.Object](t *testing.T, obj T) T {
	t.Helper()
	if err := admin.Create(t.Context(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
	return obj
}

// podInPhase creates a pod (unscheduled, so deleting it takes effect at once) and sets
// its phase with a status update, as the kubelet would.
func podInPhase(t *testing.T, ns, name string, phase corev1.PodPhase) *corev1.Pod {
	t.Helper()
	p := create(t, pod(ns, name))
	p.Status.Phase = phase
	if err := admin.Status().Update(t.Context(), p); err != nil {
		t.Fatalf("setting pod %s to phase %s: %v", name, phase, err)
	}
	return p
}

// --- writes, as any client; dryRun makes them server-side dry runs ---

func opts[T any](dryRun bool) []T {
	if dryRun {
		return []T{any(client.DryRunAll).(T)}
	}
	return nil
}

// strategicPatch applies a strategic merge patch to a copy of obj.
func strategicPatch(patch string) func(context.Context, client.Client, client.Object, bool) error {
	return func(ctx context.Context, c client.Client, obj client.Object, dryRun bool) error {
		return c.Patch(ctx, obj.DeepCopyObject().(client.Object),
			client.RawPatch(types.StrategicMergePatchType, []byte(patch)), opts[client.PatchOption](dryRun)...)
	}
}

// restartPatch is the patch kubectl rollout restart (and selfheal) sends.
func restartPatch(stamp string) string {
	return fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`, restartedAt, stamp)
}

// restartAnd is the restart patch merged with another patch (JSON objects merged key by
// key, so both may set spec.template).
func restartAnd(other string) string {
	var patch, more map[string]any
	if err := json.Unmarshal([]byte(restartPatch("2026-01-02T03:04:05.000001Z")), &patch); err != nil {
		panic(err)
	}
	if err := json.Unmarshal([]byte(other), &more); err != nil {
		panic(fmt.Sprintf("patch %s: %v", other, err))
	}
	merge(patch, more)
	data, err := json.Marshal(patch)
	if err != nil {
		panic(err)
	}
	return string(data)
}

func merge(dst, src map[string]any) {
	for k, v := range src {
		if sub, ok := v.(map[string]any); ok {
			if into, ok := dst[k].(map[string]any); ok {
				merge(into, sub)
				continue
			}
		}
		dst[k] = v
	}
}

// scaleTo updates the scale subresource of a copy of obj (a Deployment or StatefulSet).
func scaleTo(replicas int32) func(context.Context, client.Client, client.Object, bool) error {
	return func(ctx context.Context, c client.Client, obj client.Object, dryRun bool) error {
		scale := &autoscalingv1.Scale{
			ObjectMeta: metav1.ObjectMeta{Namespace: obj.GetNamespace(), Name: obj.GetName()},
			Spec:       autoscalingv1.ScaleSpec{Replicas: replicas},
		}
		return c.SubResource("scale").Update(ctx, obj.DeepCopyObject().(client.Object),
			append([]client.SubResourceUpdateOption{client.WithSubResourceBody(scale)}, opts[client.SubResourceUpdateOption](dryRun)...)...)
	}
}

func deleteObject(ctx context.Context, c client.Client, obj client.Object, dryRun bool) error {
	return c.Delete(ctx, obj.DeepCopyObject().(client.Object), opts[client.DeleteOption](dryRun)...)
}

// --- observations, as admin ---

// state is what a denied write must leave as it was: "absent", or the object's
// resourceVersion (which every persisted write changes) and deletion mark.
func state(t *testing.T, obj client.Object) string {
	t.Helper()
	current := obj.DeepCopyObject().(client.Object)
	err := admin.Get(t.Context(), client.ObjectKeyFromObject(obj), current)
	if apierrors.IsNotFound(err) {
		return "absent"
	}
	if err != nil {
		t.Fatalf("reading %T %s: %v", obj, obj.GetName(), err)
	}
	return fmt.Sprintf("resourceVersion=%s deleting=%t", current.GetResourceVersion(), current.GetDeletionTimestamp() != nil)
}

func getDeployment(g Gomega, ns, name string) *appsv1.Deployment {
	var d appsv1.Deployment
	g.Expect(admin.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &d)).To(Succeed())
	return &d
}

func getStatefulSet(g Gomega, ns, name string) *appsv1.StatefulSet {
	var s appsv1.StatefulSet
	g.Expect(admin.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &s)).To(Succeed())
	return &s
}

// expectDeniedByPolicy asserts a 403 from this admission policy with the rule's message.
func expectDeniedByPolicy(g Gomega, err error, message string) {
	g.Expect(err).To(HaveOccurred(), "want the admission policy to deny the write")
	var status apierrors.APIStatus
	g.Expect(errors.As(err, &status)).To(BeTrue(), "want an API status error, got %v", err)
	g.Expect(status.Status().Code).To(BeEquivalentTo(403), "want 403, got %v", err)
	g.Expect(status.Status().Reason).To(Equal(metav1.StatusReasonForbidden), "got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("ValidatingAdmissionPolicy '%s'", policyName))
	g.Expect(err.Error()).To(ContainSubstring(message))
}

// expectForbiddenByRBAC asserts a 403 from the authorizer, before admission.
func expectForbiddenByRBAC(g Gomega, err error, verb, resource string) {
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "want 403 Forbidden, got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("cannot %s resource %q", verb, resource))
	g.Expect(err.Error()).NotTo(ContainSubstring("ValidatingAdmissionPolicy"))
}

// --- the three remediations are admitted ---

// Each allowed write is first tried as a dry run, which must succeed and change nothing.
func TestRemediationsAreAdmitted(t *testing.T) {
	t.Run("rollout restart of a Deployment adds, then changes, the annotation", func(t *testing.T) {
		t.Parallel()
		g := NewWithT(t)
		ns := newNamespace(t, writerRole)
		d := create(t, deployment(ns, "web", 2))
		before := state(t, d)

		g.Expect(strategicPatch(restartPatch("2026-01-02T03:04:05.000001Z"))(t.Context(), controller, d, true)).To(Succeed())
		g.Expect(state(t, d)).To(Equal(before), "a dry run must change nothing")

		for _, stamp := range []string{"2026-01-02T03:04:05.000001Z", "2026-01-02T03:04:06.000002Z"} {
			g.Expect(strategicPatch(restartPatch(stamp))(t.Context(), controller, d, false)).To(Succeed())
			got := getDeployment(g, ns, "web")
			g.Expect(got.Spec.Template.Annotations).To(Equal(map[string]string{restartedAt: stamp, "prometheus.io/scrape": "true"}))
			g.Expect(got.Spec.Template.Spec.Containers[0].Image).To(Equal("ghcr.io/selfheal-dev/example:1.0"))
			g.Expect(got.Spec.Replicas).To(Equal(ptr.To[int32](2)))
			g.Expect(got.Labels).To(Equal(d.Labels))
			g.Expect(got.Annotations).To(Equal(d.Annotations))
		}
	})

	t.Run("rollout restart of a StatefulSet", func(t *testing.T) {
		t.Parallel()
		g := NewWithT(t)
		ns := newNamespace(t, writerRole)
		s := create(t, statefulSet(ns, "db", 1))
		before := state(t, s)
		patch := strategicPatch(restartPatch("2026-01-02T03:04:05.000001Z"))

		g.Expect(patch(t.Context(), controller, s, true)).To(Succeed())
		g.Expect(state(t, s)).To(Equal(before), "a dry run must change nothing")
		g.Expect(patch(t.Context(), controller, s, false)).To(Succeed())
		got := getStatefulSet(g, ns, "db")
		g.Expect(got.Spec.Template.Annotations).To(HaveKeyWithValue(restartedAt, "2026-01-02T03:04:05.000001Z"))
		g.Expect(got.Spec.Template.Spec.Containers[0].Image).To(Equal("ghcr.io/selfheal-dev/example:1.0"))
	})

	for _, kind := range []string{"Deployment", "StatefulSet"} {
		t.Run("scale of a "+kind+" from 0 to 1", func(t *testing.T) {
			t.Parallel()
			g := NewWithT(t)
			ns := newNamespace(t, writerRole)
			var obj client.Object = deployment(ns, "web", 0)
			if kind == "StatefulSet" {
				obj = statefulSet(ns, "web", 0)
			}
			create(t, obj)
			before := state(t, obj)

			g.Expect(scaleTo(1)(t.Context(), controller, obj, true)).To(Succeed())
			g.Expect(state(t, obj)).To(Equal(before), "a dry run must change nothing")
			g.Expect(scaleTo(1)(t.Context(), controller, obj, false)).To(Succeed())
			if kind == "StatefulSet" {
				g.Expect(getStatefulSet(g, ns, "web").Spec.Replicas).To(Equal(ptr.To[int32](1)))
			} else {
				g.Expect(getDeployment(g, ns, "web").Spec.Replicas).To(Equal(ptr.To[int32](1)))
			}
		})
	}

	t.Run("delete of a pod in phase Failed", func(t *testing.T) {
		t.Parallel()
		g := NewWithT(t)
		ns := newNamespace(t, writerRole)
		p := podInPhase(t, ns, "web-failed", corev1.PodFailed)
		before := state(t, p)

		g.Expect(deleteObject(t.Context(), controller, p, true)).To(Succeed())
		g.Expect(state(t, p)).To(Equal(before), "a dry run must change nothing")
		g.Expect(deleteObject(t.Context(), controller, p, false)).To(Succeed())
		g.Expect(state(t, p)).To(Equal("absent"))
	})

	// Not a remediation, but the controller's leader election records core events: the
	// policy excludes them.
	t.Run("a core event is not matched", func(t *testing.T) {
		t.Parallel()
		g := NewWithT(t)
		ns := newNamespace(t, writerRole)
		event := &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Namespace: ns, GenerateName: "selfheal-"},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web"},
			Reason:         "LeaderElection", Message: "became leader", Type: corev1.EventTypeNormal,
			Source: corev1.EventSource{Component: "selfheal"},
		}
		g.Expect(controller.Create(t.Context(), event)).To(Succeed())
	})
}

// --- everything else is denied ---

type deniedCase struct {
	name string
	// setup creates the fixture as admin and returns the object the write targets (which
	// may not exist yet, for a create).
	setup func(t *testing.T, ns string) client.Object
	// write acts on the target as c.
	write   func(ctx context.Context, c client.Client, target client.Object, dryRun bool) error
	message string
	// noop: the write changes nothing even for admin (the API server then keeps the
	// resourceVersion).
	noop bool
}

// TestOtherWritesAreDenied tries each write as the controller (dry run, then for real),
// expecting 403 with its rule's message and no change, then as admin (dry run, then for
// real), expecting success: the policy denies the identity, not the write.
func TestOtherWritesAreDenied(t *testing.T) {
	web := func(replicas int32) func(*testing.T, string) client.Object {
		return func(t *testing.T, ns string) client.Object { return create(t, deployment(ns, "web", replicas)) }
	}
	db := func(t *testing.T, ns string) client.Object { return create(t, statefulSet(ns, "db", 1)) }
	stamp := "2026-01-02T03:04:05.000001Z"
	cases := []deniedCase{
		// Rule 1: a Deployment or StatefulSet changes only by the restart annotation. A
		// write without the annotation is denied for that alone, so the writes that must be
		// denied for another change carry it too (restartAnd).
		{name: "image change (patch)", setup: web(3), message: msgRestart,
			write: strategicPatch(`{"spec":{"template":{"spec":{"containers":[{"name":"server","image":"ghcr.io/selfheal-dev/example:2.0"}]}}}}`)},
		{name: "image change (update)", setup: web(3), message: msgRestart,
			write: func(ctx context.Context, c client.Client, target client.Object, dryRun bool) error {
				d := target.DeepCopyObject().(*appsv1.Deployment)
				d.Spec.Template.Spec.Containers[0].Image = "ghcr.io/selfheal-dev/example:2.0"
				return c.Update(ctx, d, opts[client.UpdateOption](dryRun)...)
			}},
		{name: "serviceAccountName change", setup: web(3), message: msgRestart,
			write: strategicPatch(`{"spec":{"template":{"spec":{"serviceAccountName":"admin"}}}}`)},
		{name: "replicas 3 to 0 through a Deployment patch", setup: web(3), message: msgRestart,
			write: strategicPatch(`{"spec":{"replicas":0}}`)},
		{name: "replicas 0 to 1 through a Deployment patch, not the scale subresource", setup: web(0), message: msgRestart,
			write: strategicPatch(`{"spec":{"replicas":1}}`)},
		{name: "removing the restart annotation", message: msgRestart,
			setup: func(t *testing.T, ns string) client.Object {
				d := deployment(ns, "web", 3)
				d.Spec.Template.Annotations[restartedAt] = stamp
				return create(t, d)
			},
			write: strategicPatch(`{"spec":{"template":{"metadata":{"annotations":{"` + restartedAt + `":null}}}}}`)},
		{name: "restart and an image change", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"template":{"spec":{"containers":[{"name":"server","image":"ghcr.io/selfheal-dev/example:2.0"}]}}}}`))},
		{name: "restart and a serviceAccountName change", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"template":{"spec":{"serviceAccountName":"admin"}}}}`))},
		{name: "restart and a label of the Deployment", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"metadata":{"labels":{"team":"billing"}}}`))},
		{name: "restart and an annotation of the Deployment", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"metadata":{"annotations":{"example.com/owner":"someone-else"}}}`))},
		{name: "restart and a finalizer on the Deployment", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"metadata":{"finalizers":["example.com/hold"]}}`))},
		{name: "restart and an owner of the Deployment", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"owner","uid":"7c1c8e1e-0000-4000-8000-000000000001"}]}}`))},
		{name: "restart and a pod-template label", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"template":{"metadata":{"labels":{"tier":"frontend"}}}}}`))},
		{name: "restart and other pod-template metadata", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"template":{"metadata":{"finalizers":["example.com/hold"]}}}}`))},
		{name: "restart and another pod-template annotation changed", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"template":{"metadata":{"annotations":{"prometheus.io/scrape":"false"}}}}}`))},
		{name: "restart and another pod-template annotation added", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"template":{"metadata":{"annotations":{"example.com/debug":"true"}}}}}`))},
		{name: "restart and another pod-template annotation removed", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"template":{"metadata":{"annotations":{"prometheus.io/scrape":null}}}}}`))},
		{name: "restart and Deployment replicas", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"replicas":0}}`))},
		{name: "restart and Deployment strategy", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}`))},
		{name: "restart and Deployment minReadySeconds", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"minReadySeconds":30}}`))},
		{name: "restart and Deployment revisionHistoryLimit", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"revisionHistoryLimit":1}}`))},
		{name: "restart and pause the Deployment", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"paused":true}}`))},
		{name: "restart and Deployment progressDeadlineSeconds", setup: web(3), message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"progressDeadlineSeconds":60}}`))},
		{name: "StatefulSet image change", setup: db, message: msgRestart,
			write: strategicPatch(`{"spec":{"template":{"spec":{"containers":[{"name":"server","image":"ghcr.io/selfheal-dev/example:2.0"}]}}}}`)},
		{name: "restart and a StatefulSet image change", setup: db, message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"template":{"spec":{"containers":[{"name":"server","image":"ghcr.io/selfheal-dev/example:2.0"}]}}}}`))},
		{name: "restart and a label of the StatefulSet", setup: db, message: msgRestart,
			write: strategicPatch(restartAnd(`{"metadata":{"labels":{"team":"billing"}}}`))},
		// The StatefulSet spec fields an update may change (the others are immutable).
		{name: "restart and StatefulSet replicas", setup: db, message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"replicas":2}}`))},
		{name: "restart and StatefulSet updateStrategy", setup: db, message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}`))},
		{name: "restart and StatefulSet revisionHistoryLimit", setup: db, message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"revisionHistoryLimit":1}}`))},
		{name: "restart and StatefulSet minReadySeconds", setup: db, message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"minReadySeconds":30}}`))},
		{name: "restart and StatefulSet persistentVolumeClaimRetentionPolicy", setup: db, message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"persistentVolumeClaimRetentionPolicy":{"whenDeleted":"Delete","whenScaled":"Delete"}}}`))},
		{name: "restart and StatefulSet ordinals", setup: db, message: msgRestart,
			write: strategicPatch(restartAnd(`{"spec":{"ordinals":{"start":5}}}`))},

		// Rule 2: scale only from 0 to 1.
		{name: "scale 3 to 0", setup: web(3), message: msgScale + " (requested 3 to 0)", write: scaleTo(0)},
		{name: "scale 0 to 5", setup: web(0), message: msgScale + " (requested 0 to 5)", write: scaleTo(5)},
		{name: "scale 1 to 2", setup: web(1), message: msgScale + " (requested 1 to 2)", write: scaleTo(2)},
		{name: "scale 3 to 1", setup: web(3), message: msgScale + " (requested 3 to 1)", write: scaleTo(1)},
		{name: "scale 0 to 0", setup: web(0), message: msgScale + " (requested 0 to 0)", write: scaleTo(0), noop: true},
		{name: "scale a StatefulSet 1 to 0", setup: db, message: msgScale + " (requested 1 to 0)", write: scaleTo(0)},

		// Rule 3: delete only pods in phase Failed.
		{name: "delete a Running pod", message: msgPodDelete, write: deleteObject,
			setup: func(t *testing.T, ns string) client.Object {
				return podInPhase(t, ns, "web-running", corev1.PodRunning)
			}},
		{name: "delete a Succeeded pod", message: msgPodDelete, write: deleteObject,
			setup: func(t *testing.T, ns string) client.Object { return podInPhase(t, ns, "web-done", corev1.PodSucceeded) }},

		// Rule 4: nothing else on core and apps resources.
		{name: "create a pod", message: "selfheal may not create pods",
			setup: func(t *testing.T, ns string) client.Object { return pod(ns, "new") },
			write: func(ctx context.Context, c client.Client, target client.Object, dryRun bool) error {
				return c.Create(ctx, target.DeepCopyObject().(client.Object), opts[client.CreateOption](dryRun)...)
			}},
		{name: "evict a Failed pod", message: "selfheal may not create pods/eviction",
			setup: func(t *testing.T, ns string) client.Object { return podInPhase(t, ns, "web-failed", corev1.PodFailed) },
			write: func(ctx context.Context, c client.Client, target client.Object, dryRun bool) error {
				eviction := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: target.GetNamespace(), Name: target.GetName()}}
				if dryRun {
					eviction.DeleteOptions = &metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}
				}
				return c.SubResource("eviction").Create(ctx, target.DeepCopyObject().(client.Object), eviction)
			}},
		{name: "delete a Deployment", setup: web(3), message: "selfheal may not delete deployments.apps", write: deleteObject},
		{name: "create a Deployment", message: "selfheal may not create deployments.apps",
			setup: func(t *testing.T, ns string) client.Object { return deployment(ns, "new", 1) },
			write: func(ctx context.Context, c client.Client, target client.Object, dryRun bool) error {
				return c.Create(ctx, target.DeepCopyObject().(client.Object), opts[client.CreateOption](dryRun)...)
			}},
		{name: "update the status of a Deployment that carries the restart annotation",
			message: "selfheal may not update deployments.apps/status",
			setup: func(t *testing.T, ns string) client.Object {
				d := deployment(ns, "web", 3)
				d.Spec.Template.Annotations[restartedAt] = stamp
				return create(t, d)
			},
			write: func(ctx context.Context, c client.Client, target client.Object, dryRun bool) error {
				d := target.DeepCopyObject().(*appsv1.Deployment)
				d.Status.ObservedGeneration = 42
				return c.Status().Update(ctx, d, opts[client.SubResourceUpdateOption](dryRun)...)
			}},
		{name: "patch a ConfigMap", message: "selfheal may not update configmaps",
			setup: func(t *testing.T, ns string) client.Object {
				return create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"}, Data: map[string]string{"level": "info"}})
			},
			write: strategicPatch(`{"data":{"level":"debug"}}`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := NewWithT(t)
			ns := newNamespace(t, writerRole)
			target := tc.setup(t, ns)
			before := state(t, target)

			for _, dryRun := range []bool{true, false} {
				err := tc.write(t.Context(), controller, target, dryRun)
				expectDeniedByPolicy(g, err, tc.message)
				g.Expect(state(t, target)).To(Equal(before), "a denied write (dry run %t) must change nothing", dryRun)
			}

			g.Expect(tc.write(t.Context(), admin, target, true)).To(Succeed(), "admin's dry run")
			g.Expect(state(t, target)).To(Equal(before), "a dry run must change nothing")
			g.Expect(tc.write(t.Context(), admin, target, false)).To(Succeed(), "admin is not subject to the policy")
			if !tc.noop {
				g.Expect(state(t, target)).NotTo(Equal(before), "admin's write must take effect")
			}
		})
	}
}

// TestPolicyFailsClosed checks what no request here can exercise: an evaluation error
// (a CEL runtime error, an exhausted cost budget) denies rather than admits.
func TestPolicyFailsClosed(t *testing.T) {
	g := NewWithT(t)
	var vap unstructured.Unstructured
	vap.SetAPIVersion("admissionregistration.k8s.io/v1")
	vap.SetKind("ValidatingAdmissionPolicy")
	g.Expect(admin.Get(t.Context(), client.ObjectKey{Name: policyName}, &vap)).To(Succeed())
	failurePolicy, _, err := unstructured.NestedString(vap.Object, "spec", "failurePolicy")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(failurePolicy).To(Equal("Fail"))
}

// TestConnectIsDenied opens pods/exec (a CONNECT) as the controller. The pod is on no
// node, so even admin's request fails, but later and otherwise: past admission.
func TestConnectIsDenied(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t, writerRole)
	p := podInPhase(t, ns, "web-running", corev1.PodRunning)
	exec := func(cfg *rest.Config) error {
		cs, err := kubernetes.NewForConfig(cfg)
		g.Expect(err).NotTo(HaveOccurred())
		return cs.CoreV1().RESTClient().Post().Namespace(ns).Resource("pods").Name(p.Name).
			SubResource("exec").Param("container", "server").Param("command", "true").Param("stdout", "true").
			Do(t.Context()).Error()
	}
	expectDeniedByPolicy(g, exec(controllerConfig), "selfheal may not connect pods/exec")

	err := exec(cluster.Config)
	g.Expect(err).To(HaveOccurred(), "the pod has no node to exec on")
	g.Expect(err.Error()).NotTo(ContainSubstring("ValidatingAdmissionPolicy"))
}

// TestOtherServiceAccountsAreUnaffected gives another ServiceAccount of selfheal's
// namespace the same rights: the policy matches the controller's user name only, not
// its namespace's groups.
func TestOtherServiceAccountsAreUnaffected(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t, writerRole)
	const other = "selfheal-gateway"
	g.Expect(bind(t.Context(), ns, writerRole, other)).To(Succeed())
	cfg, err := cluster.AddUser(controlplane.ServiceAccountUser(controllerNamespace, other), controlplane.ServiceAccountGroups(controllerNamespace))
	g.Expect(err).NotTo(HaveOccurred())
	c, err := client.New(cfg, client.Options{Scheme: admin.Scheme()})
	g.Expect(err).NotTo(HaveOccurred())

	d := create(t, deployment(ns, "web", 3))
	g.Expect(strategicPatch(`{"spec":{"template":{"spec":{"containers":[{"name":"server","image":"ghcr.io/selfheal-dev/example:2.0"}]}}}}`)(t.Context(), c, d, false)).To(Succeed())
	g.Expect(getDeployment(g, ns, "web").Spec.Template.Spec.Containers[0].Image).To(Equal("ghcr.io/selfheal-dev/example:2.0"))
	g.Expect(scaleTo(0)(t.Context(), c, d, false)).To(Succeed())
	g.Expect(getDeployment(g, ns, "web").Spec.Replicas).To(Equal(ptr.To[int32](0)))
}

// --- without the opt-in RoleBinding, RBAC forbids even the remediations ---

// TestWithoutOptInRBACForbidsRemediations runs the three admitted writes in a namespace
// where the controller may only read (no opt-in RoleBinding): each is forbidden by
// RBAC, before admission, and nothing changes.
func TestWithoutOptInRBACForbidsRemediations(t *testing.T) {
	cases := []struct {
		name     string
		setup    func(t *testing.T, ns string) client.Object
		write    func(context.Context, client.Client, client.Object, bool) error
		verb     string
		resource string
	}{
		{name: "rollout restart", verb: "patch", resource: "deployments",
			setup: func(t *testing.T, ns string) client.Object { return create(t, deployment(ns, "web", 1)) },
			write: strategicPatch(restartPatch("2026-01-02T03:04:05.000001Z"))},
		{name: "rollout restart of a StatefulSet", verb: "patch", resource: "statefulsets",
			setup: func(t *testing.T, ns string) client.Object { return create(t, statefulSet(ns, "db", 1)) },
			write: strategicPatch(restartPatch("2026-01-02T03:04:05.000001Z"))},
		{name: "scale 0 to 1", verb: "update", resource: "deployments/scale",
			setup: func(t *testing.T, ns string) client.Object { return create(t, deployment(ns, "web", 0)) },
			write: scaleTo(1)},
		{name: "delete a Failed pod", verb: "delete", resource: "pods",
			setup: func(t *testing.T, ns string) client.Object { return podInPhase(t, ns, "web-failed", corev1.PodFailed) },
			write: deleteObject},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := NewWithT(t)
			ns := newNamespace(t, readerRole)
			target := tc.setup(t, ns)
			before := state(t, target)
			for _, dryRun := range []bool{true, false} {
				expectForbiddenByRBAC(g, tc.write(t.Context(), controller, target, dryRun), tc.verb, tc.resource)
				g.Expect(state(t, target)).To(Equal(before), "a forbidden write (dry run %t) must change nothing", dryRun)
			}
		})
	}
}
