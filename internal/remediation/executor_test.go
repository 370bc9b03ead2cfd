package remediation

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
)

// The executor tests run against a real kube-apiserver and etcd (envtest), which
// TestMain builds (hack/controlplane.sh, once) and starts before any test runs. There is
// no kubelet nor controller-manager: the tests create ReplicaSets and pods themselves
// and check the resulting state of the objects.

var (
	env       *envtest.Environment
	envCfg    *rest.Config
	envScheme = runtime.NewScheme()
)

func TestMain(m *testing.M) {
	if err := startAPIServer(); err != nil {
		fmt.Fprintf(os.Stderr, "internal/remediation: the executor tests need a kube-apiserver and etcd: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping envtest: %v\n", err)
	}
	os.Exit(code)
}

// startAPIServer starts the shared API server with the selfheal CRDs, from
// KUBEBUILDER_ASSETS or else the binaries hack/controlplane.sh builds and caches.
func startAPIServer() error {
	if err := clientgoscheme.AddToScheme(envScheme); err != nil {
		return err
	}
	if err := selfhealv1alpha1.AddToScheme(envScheme); err != nil {
		return err
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return err
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		// Idempotent: prints the cached binaries' directory (compiles them once).
		out, err := exec.Command("bash", filepath.Join(root, "hack", "controlplane.sh")).Output()
		if err != nil {
			return fmt.Errorf("building them with hack/controlplane.sh (or set KUBEBUILDER_ASSETS): %w", err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		assets = lines[len(lines)-1]
	}
	env = &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing:    true,
		Scheme:                   envScheme,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	if envCfg, err = env.Start(); err != nil {
		return fmt.Errorf("starting it from %s: %w", assets, err)
	}
	return nil
}

// apiServer is the API server TestMain started.
func apiServer(t *testing.T) *rest.Config {
	t.Helper()
	return envCfg
}

type execFixture struct {
	ctx   context.Context
	c     client.Client
	ns    string
	clock *testingclock.FakeClock
	exec  *Executor
}

// newExecFixture gives each test a fresh namespace and an Executor whose clients talk
// to the real API server. wrap, when given, wraps the writing client.
func newExecFixture(t *testing.T, wrap func(client.WithWatch) client.Client) *execFixture {
	t.Helper()
	cfg := apiServer(t)
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: envScheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "remediation-"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	f := &execFixture{ctx: ctx, c: c, ns: ns.Name,
		clock: testingclock.NewFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))}
	var writer client.Client = c
	if wrap != nil {
		writer = wrap(c)
	}
	f.exec = &Executor{Client: writer, APIReader: c, Clock: f.clock}
	return f
}

func (f *execFixture) create(t *testing.T, obj client.Object) {
	t.Helper()
	obj.SetNamespace(f.ns)
	if err := f.c.Create(f.ctx, obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func (f *execFixture) deployment(t *testing.T, name string, replicas int32, paused bool) *appsv1.Deployment {
	t.Helper()
	labels := map[string]string{"app.kubernetes.io/name": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Paused:   paused,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "server", Image: "ghcr.io/example/" + name + ":1.4.2",
				}}},
			},
		},
	}
	f.create(t, d)
	return d
}

// replicaSet creates a ReplicaSet controlled by d, as the deployment controller would.
func (f *execFixture) replicaSet(t *testing.T, d *appsv1.Deployment, name string) *appsv1.ReplicaSet {
	t.Helper()
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: d.Spec.Template.Labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))}},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To(int32(1)), Selector: d.Spec.Selector, Template: d.Spec.Template},
	}
	f.create(t, rs)
	return rs
}

// pod creates a pod controlled by owner (nil: no owner) and sets its phase.
func (f *execFixture) pod(t *testing.T, name string, labels map[string]string, owner client.Object, kind string, phase corev1.PodPhase) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "server", Image: "ghcr.io/example/app:1.4.2"}}},
	}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(owner, appsv1.SchemeGroupVersion.WithKind(kind))}
	}
	f.create(t, p)
	p.Status.Phase = phase
	if phase == corev1.PodFailed {
		p.Status.Reason = "Evicted"
		p.Status.Message = "The node was low on resource: memory."
	}
	if err := f.c.Status().Update(f.ctx, p); err != nil {
		t.Fatalf("setting phase of pod %s: %v", name, err)
	}
	return p
}

func (f *execFixture) getDeployment(t *testing.T, name string) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	if err := f.c.Get(f.ctx, client.ObjectKey{Namespace: f.ns, Name: name}, d); err != nil {
		t.Fatal(err)
	}
	return d
}

func (f *execFixture) podNames(t *testing.T) []string {
	t.Helper()
	var pods corev1.PodList
	if err := f.c.List(f.ctx, &pods, client.InNamespace(f.ns)); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			names = append(names, p.Name)
		}
	}
	return names
}

func TestExecuteRolloutRestartDeployment(t *testing.T) {
	f := newExecFixture(t, nil)
	d := f.deployment(t, "mcp-files", 2, false)
	before := f.getDeployment(t, "mcp-files")

	msg, err := f.exec.Execute(f.ctx, f.ns, Step{Type: selfhealv1alpha1.ActionRolloutRestart, Workload: deploy("mcp-files")}, nil)
	if err != nil {
		t.Fatalf("Execute: %v", err)
	}
	after := f.getDeployment(t, d.Name)
	if got := after.Spec.Template.Annotations[RestartedAtAnnotation]; got != "2026-03-01T12:00:00Z" {
		t.Errorf("restartedAt = %q, want the fake clock's time in RFC3339", got)
	}
	if after.Generation != before.Generation+1 {
		t.Errorf("generation %d -> %d: the template change must start a rollout", before.Generation, after.Generation)
	}
	// Never edits anything but the annotation.
	if after.Spec.Template.Spec.Containers[0].Image != before.Spec.Template.Spec.Containers[0].Image ||
		*after.Spec.Replicas != 2 || after.Spec.Paused {
		t.Errorf("restart changed the spec: %+v", after.Spec)
	}
	if !strings.Contains(msg, "Restarted deployment/mcp-files") {
		t.Errorf("message = %q", msg)
	}

	// A second restart, later, moves the annotation on, like kubectl does.
	f.clock.Step(90 * time.Second)
	if _, err := f.exec.Execute(f.ctx, f.ns, Step{Type: selfhealv1alpha1.ActionRolloutRestart, Workload: deploy("mcp-files")}, nil); err != nil {
		t.Fatal(err)
	}
	if got := f.getDeployment(t, d.Name).Spec.Template.Annotations[RestartedAtAnnotation]; got != "2026-03-01T12:01:30Z" {
		t.Errorf("second restartedAt = %q", got)
	}
}

func TestExecuteRolloutRestartStatefulSet(t *testing.T) {
	f := newExecFixture(t, nil)
	labels := map[string]string{"app.kubernetes.io/name": "mcp-db"}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "mcp-db"},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "ghcr.io/example/db:2"}}},
			},
		},
	}
	f.create(t, sts)
	if _, err := f.exec.Execute(f.ctx, f.ns, Step{Type: selfhealv1alpha1.ActionRolloutRestart, Workload: selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadStatefulSet, Name: "mcp-db"}}, nil); err != nil {
		t.Fatal(err)
	}
	got := &appsv1.StatefulSet{}
	if err := f.c.Get(f.ctx, client.ObjectKeyFromObject(sts), got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Template.Annotations[RestartedAtAnnotation] != "2026-03-01T12:00:00Z" {
		t.Errorf("annotations = %v", got.Spec.Template.Annotations)
	}
}

func TestExecuteRefusesPausedDeployment(t *testing.T) {
	f := newExecFixture(t, nil)
	f.deployment(t, "mcp-files", 1, true)
	_, err := f.exec.Execute(f.ctx, f.ns, Step{Type: selfhealv1alpha1.ActionRolloutRestart, Workload: deploy("mcp-files")}, nil)
	if !errors.Is(err, ErrDeploymentPaused) || !IsPermanent(err) {
		t.Fatalf("err = %v, want ErrDeploymentPaused", err)
	}
	if ann := f.getDeployment(t, "mcp-files").Spec.Template.Annotations; ann[RestartedAtAnnotation] != "" {
		t.Errorf("paused deployment was restarted: %v", ann)
	}
}

func TestExecuteRestartOnlyInItsNamespace(t *testing.T) {
	a := newExecFixture(t, nil)
	b := newExecFixture(t, nil)
	a.deployment(t, "mcp-files", 1, false)
	b.deployment(t, "mcp-files", 1, false)
	if _, err := a.exec.Execute(a.ctx, a.ns, Step{Type: selfhealv1alpha1.ActionRolloutRestart, Workload: deploy("mcp-files")}, nil); err != nil {
		t.Fatal(err)
	}
	if ann := b.getDeployment(t, "mcp-files").Spec.Template.Annotations; ann[RestartedAtAnnotation] != "" {
		t.Errorf("deployment in another namespace was restarted")
	}
	if a.getDeployment(t, "mcp-files").Spec.Template.Annotations[RestartedAtAnnotation] == "" {
		t.Errorf("deployment in the given namespace was not restarted")
	}
}

func TestExecuteWorkloadGone(t *testing.T) {
	f := newExecFixture(t, nil)
	for _, a := range []selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionRolloutRestart, selfhealv1alpha1.ActionScaleFromZero, selfhealv1alpha1.ActionDeleteFailedPods} {
		_, err := f.exec.Execute(f.ctx, f.ns, Step{Type: a, Workload: deploy("nope")}, nil)
		if !errors.Is(err, ErrWorkloadGone) || !IsPermanent(err) {
			t.Errorf("%s: err = %v, want ErrWorkloadGone", a, err)
		}
	}

	// A Deployment recreated under the same name since the diagnosis is not the one
	// diagnosed: nothing is done to it.
	d := f.deployment(t, "mcp-files", 1, false)
	snap := &diagnostics.Snapshot{Target: diagnostics.Target{Namespace: f.ns, Service: "mcp-files"},
		Deployment: &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: d.Name, UID: "uid-of-the-old-one"}}}
	_, err := f.exec.Execute(f.ctx, f.ns, Step{Type: selfhealv1alpha1.ActionRolloutRestart, Workload: deploy("mcp-files")}, snap)
	if !errors.Is(err, ErrWorkloadGone) {
		t.Errorf("replaced deployment: err = %v", err)
	}
	if f.getDeployment(t, d.Name).Spec.Template.Annotations[RestartedAtAnnotation] != "" {
		t.Errorf("replaced deployment was restarted")
	}
}

func TestExecuteInvalidSteps(t *testing.T) {
	f := newExecFixture(t, nil)
	f.deployment(t, "mcp-files", 1, false)
	for _, s := range []Step{
		{Type: selfhealv1alpha1.ActionRolloutRestart, Workload: selfhealv1alpha1.WorkloadReference{Kind: "DaemonSet", Name: "mcp-files"}},
		{Type: selfhealv1alpha1.ActionRolloutRestart, Workload: selfhealv1alpha1.WorkloadReference{Name: "mcp-files"}},
		{Type: selfhealv1alpha1.ActionRolloutRestart, Workload: selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment}},
		{Type: selfhealv1alpha1.ActionType("EditImage"), Workload: deploy("mcp-files")},
	} {
		if _, err := f.exec.Execute(f.ctx, f.ns, s, nil); !errors.Is(err, ErrInvalidStep) {
			t.Errorf("%+v: err = %v, want ErrInvalidStep", s, err)
		}
	}
	if _, err := f.exec.Execute(f.ctx, "other-ns", Step{Type: selfhealv1alpha1.ActionRolloutRestart, Workload: deploy("mcp-files")},
		&diagnostics.Snapshot{Target: diagnostics.Target{Namespace: f.ns}}); !errors.Is(err, ErrInvalidStep) {
		t.Errorf("snapshot of another namespace: err = %v", err)
	}
}

func TestExecuteScaleFromZero(t *testing.T) {
	f := newExecFixture(t, nil)
	f.deployment(t, "mcp-files", 0, false)
	msg, err := f.exec.Execute(f.ctx, f.ns, Step{Type: selfhealv1alpha1.ActionScaleFromZero, Workload: deploy("mcp-files")}, nil)
	if err != nil {
		t.Fatalf("Execute: %v", err)
	}
	d := f.getDeployment(t, "mcp-files")
	if *d.Spec.Replicas != 1 {
		t.Errorf("replicas = %d, want 1", *d.Spec.Replicas)
	}
	if d.Spec.Template.Annotations[RestartedAtAnnotation] != "" {
		t.Errorf("scale from zero also restarted")
	}
	if !strings.Contains(msg, "from 0 to 1") {
		t.Errorf("message = %q", msg)
	}

	// Not at zero: nothing is done, and the message says so.
	f.deployment(t, "mcp-git", 3, false)
	msg, err = f.exec.Execute(f.ctx, f.ns, Step{Type: selfhealv1alpha1.ActionScaleFromZero, Workload: deploy("mcp-git")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := *f.getDeployment(t, "mcp-git").Spec.Replicas; got != 3 {
		t.Errorf("replicas = %d, want 3 untouched", got)
	}
	if !strings.Contains(msg, "already wants 3 replicas") {
		t.Errorf("message = %q", msg)
	}
}

func TestExecuteDeleteFailedPods(t *testing.T) {
	f := newExecFixture(t, nil)
	d := f.deployment(t, "mcp-files", 2, false)
	rsOld := f.replicaSet(t, d, "mcp-files-5d8c7")
	rsNew := f.replicaSet(t, d, "mcp-files-6f7b9")
	labels := d.Spec.Template.Labels

	f.pod(t, "mcp-files-5d8c7-evicted", labels, rsOld, "ReplicaSet", corev1.PodFailed)
	f.pod(t, "mcp-files-6f7b9-failed", labels, rsNew, "ReplicaSet", corev1.PodFailed)
	f.pod(t, "mcp-files-6f7b9-running", labels, rsNew, "ReplicaSet", corev1.PodRunning)
	// Same labels, but not the Deployment's: another workload's failed pod, and a bare one.
	other := f.deployment(t, "mcp-files-canary", 1, false)
	rsOther := f.replicaSet(t, other, "mcp-files-canary-7c6d5")
	f.pod(t, "mcp-files-canary-7c6d5-failed", labels, rsOther, "ReplicaSet", corev1.PodFailed)
	f.pod(t, "debug-copy-failed", labels, nil, "", corev1.PodFailed)

	msg, err := f.exec.Execute(f.ctx, f.ns, Step{Type: selfhealv1alpha1.ActionDeleteFailedPods, Workload: deploy("mcp-files")}, nil)
	if err != nil {
		t.Fatalf("Execute: %v", err)
	}
	want := []string{"debug-copy-failed", "mcp-files-6f7b9-running", "mcp-files-canary-7c6d5-failed"}
	if got := f.podNames(t); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("pods left = %v, want %v", got, want)
	}
	if !strings.Contains(msg, "Deleted 2 failed pods") {
		t.Errorf("message = %q", msg)
	}

	// Nothing left to delete: says so.
	msg, err = f.exec.Execute(f.ctx, f.ns, Step{Type: selfhealv1alpha1.ActionDeleteFailedPods, Workload: deploy("mcp-files")}, nil)
	if err != nil || !strings.Contains(msg, "No failed pods") {
		t.Errorf("second run: %q, %v", msg, err)
	}
}

func TestExecuteDeleteFailedPodsStatefulSet(t *testing.T) {
	f := newExecFixture(t, nil)
	labels := map[string]string{"app.kubernetes.io/name": "mcp-db"}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "mcp-db"},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "ghcr.io/example/db:2"}}},
			},
		},
	}
	f.create(t, sts)
	f.pod(t, "mcp-db-0", labels, sts, "StatefulSet", corev1.PodFailed)
	f.pod(t, "mcp-db-1", labels, sts, "StatefulSet", corev1.PodRunning)
	if _, err := f.exec.Execute(f.ctx, f.ns, Step{Type: selfhealv1alpha1.ActionDeleteFailedPods, Workload: selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadStatefulSet, Name: "mcp-db"}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := f.podNames(t); strings.Join(got, ",") != "mcp-db-1" {
		t.Errorf("pods left = %v", got)
	}
}

// A failed pod replaced under the same name (as a StatefulSet does) between the list
// and the delete must survive: the delete's UID precondition protects it.
func TestExecuteDeleteFailedPodsNeverDeletesAReplacement(t *testing.T) {
	var f *execFixture
	var replacedUID string
	f = newExecFixture(t, func(c client.WithWatch) client.Client {
		return interceptor.NewClient(c, interceptor.Funcs{
			Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
				if pod, ok := obj.(*corev1.Pod); ok && pod.Name == "mcp-db-0" && replacedUID == "" {
					// The StatefulSet controller replaces the pod right now.
					if err := c.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace}}); err != nil {
						return err
					}
					fresh := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace,
						Labels: pod.Labels, OwnerReferences: pod.OwnerReferences}, Spec: pod.Spec}
					fresh.Spec.NodeName = ""
					if err := c.Create(ctx, fresh); err != nil {
						return err
					}
					replacedUID = string(fresh.UID)
				}
				return c.Delete(ctx, obj, opts...)
			},
		})
	})
	labels := map[string]string{"app.kubernetes.io/name": "mcp-db"}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "mcp-db"},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "ghcr.io/example/db:2"}}},
			},
		},
	}
	f.create(t, sts)
	f.pod(t, "mcp-db-0", labels, sts, "StatefulSet", corev1.PodFailed)

	msg, err := f.exec.Execute(f.ctx, f.ns, Step{Type: selfhealv1alpha1.ActionDeleteFailedPods, Workload: selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadStatefulSet, Name: "mcp-db"}}, nil)
	if err != nil {
		t.Fatalf("Execute: %v", err)
	}
	got := &corev1.Pod{}
	if err := f.c.Get(f.ctx, client.ObjectKey{Namespace: f.ns, Name: "mcp-db-0"}, got); err != nil {
		if apierrors.IsNotFound(err) {
			t.Fatal("the replacement pod was deleted")
		}
		t.Fatal(err)
	}
	if replacedUID == "" || string(got.UID) != replacedUID || got.DeletionTimestamp != nil {
		t.Errorf("pod mcp-db-0 uid %s (deleting: %v), want the replacement %s untouched", got.UID, got.DeletionTimestamp != nil, replacedUID)
	}
	if !strings.Contains(msg, "No failed pods") {
		t.Errorf("message = %q, want nothing deleted", msg)
	}
}

// A Deployment paused between the executor's read and its patch is not restarted: the
// patch carries the resourceVersion read, so it fails with a conflict (transient: the
// controller retries, reads again and then sees the pause).
func TestExecuteRestartRacesWithPause(t *testing.T) {
	var paused bool
	f := newExecFixture(t, func(c client.WithWatch) client.Client {
		return interceptor.NewClient(c, interceptor.Funcs{
			Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
				if !paused {
					live := &appsv1.Deployment{}
					if err := c.Get(ctx, client.ObjectKeyFromObject(obj), live); err != nil {
						return err
					}
					live.Spec.Paused = true // kubectl rollout pause, by someone else, right now
					if err := c.Update(ctx, live); err != nil {
						return err
					}
					paused = true
				}
				return c.Patch(ctx, obj, patch, opts...)
			},
		})
	})
	f.deployment(t, "mcp-files", 1, false)
	step := Step{Type: selfhealv1alpha1.ActionRolloutRestart, Workload: deploy("mcp-files")}
	_, err := f.exec.Execute(f.ctx, f.ns, step, nil)
	if !apierrors.IsConflict(err) || IsPermanent(err) {
		t.Fatalf("err = %v, want a transient conflict", err)
	}
	if ann := f.getDeployment(t, "mcp-files").Spec.Template.Annotations; ann[RestartedAtAnnotation] != "" {
		t.Fatalf("deployment paused concurrently was restarted")
	}
	// The retry sees the pause.
	if _, err := f.exec.Execute(f.ctx, f.ns, step, nil); !errors.Is(err, ErrDeploymentPaused) {
		t.Fatalf("retry: err = %v, want ErrDeploymentPaused", err)
	}
}

func deploy(name string) selfhealv1alpha1.WorkloadReference {
	return selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: name}
}

// countingReader counts the uncached reads the executor makes.
type countingReader struct {
	client.Reader
	gets int
}

func (r *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	r.gets++
	return r.Reader.Get(ctx, key, obj, opts...)
}

// TestExecuteFromTheDiagnosedWorkload: the workload as diagnosed is written on with
// its resourceVersion, with no read first; when it changed since (the cache was
// behind, someone scaled or restarted it), the API server refuses that write and the
// executor decides again on an uncached read, so a stale diagnosis never overrides a
// newer state.
func TestExecuteFromTheDiagnosedWorkload(t *testing.T) {
	f := newExecFixture(t, nil)
	reads := &countingReader{Reader: f.c}
	f.exec.APIReader = reads
	snapOf := func(name string) *diagnostics.Snapshot {
		return &diagnostics.Snapshot{Target: diagnostics.Target{Namespace: f.ns}, Deployment: f.getDeployment(t, name)}
	}
	scale := func(name string) Step {
		return Step{Type: selfhealv1alpha1.ActionScaleFromZero, Workload: deploy(name)}
	}

	// Fresh: scaled with no uncached read.
	f.deployment(t, "fresh", 0, false)
	if _, err := f.exec.Execute(f.ctx, f.ns, scale("fresh"), snapOf("fresh")); err != nil {
		t.Fatal(err)
	}
	if got := *f.getDeployment(t, "fresh").Spec.Replicas; got != 1 || reads.gets != 0 {
		t.Fatalf("replicas %d after %d uncached reads, want 1 after none", got, reads.gets)
	}

	// Stale: scaled to 3 by someone after the diagnosis saw 0.
	f.deployment(t, "stale", 0, false)
	stale := snapOf("stale")
	live := f.getDeployment(t, "stale")
	live.Spec.Replicas = ptr.To(int32(3))
	if err := f.c.Update(f.ctx, live); err != nil {
		t.Fatal(err)
	}
	msg, err := f.exec.Execute(f.ctx, f.ns, scale("stale"), stale)
	if err != nil {
		t.Fatal(err)
	}
	if got := *f.getDeployment(t, "stale").Spec.Replicas; got != 3 || !strings.Contains(msg, "already wants 3 replicas") || reads.gets != 1 {
		t.Fatalf("replicas %d (%q) after %d uncached reads, want 3 untouched after one", got, msg, reads.gets)
	}

	// Stale: restarted for this intent already (a manager that acted and died), then
	// the intent is executed again from the diagnosis before it.
	f.deployment(t, "restarted", 1, false)
	before := snapOf("restarted")
	restart := Step{Type: selfhealv1alpha1.ActionRolloutRestart, Workload: deploy("restarted"), At: f.clock.Now()}
	if _, err := f.exec.Execute(f.ctx, f.ns, restart, before); err != nil {
		t.Fatal(err)
	}
	generation := f.getDeployment(t, "restarted").Generation
	msg, err = f.exec.Execute(f.ctx, f.ns, restart, before)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.getDeployment(t, "restarted").Generation; got != generation || !strings.Contains(msg, "already restarted for this intent") {
		t.Fatalf("generation %d -> %d (%q): the intent ran twice", generation, got, msg)
	}
}

// An intent older than the workload's last restart (a late reconcile executing attempt
// 1 after attempt 2 restarted it) does not restart it again, from the live workload or
// from a diagnosis made before both. Catches: restarts that compare the stamp for
// equality only (the older intent restarts again, and moves the stamp back).
func TestExecuteOlderIntentDoesNotRestartAgain(t *testing.T) {
	f := newExecFixture(t, nil)
	f.deployment(t, "twice", 1, false)
	before := &diagnostics.Snapshot{Target: diagnostics.Target{Namespace: f.ns}, Deployment: f.getDeployment(t, "twice")}
	first := Step{Type: selfhealv1alpha1.ActionRolloutRestart, Workload: deploy("twice"), At: f.clock.Now()}
	second := first
	second.At = first.At.Add(40 * time.Second)
	for _, st := range []Step{first, second} {
		if _, err := f.exec.Execute(f.ctx, f.ns, st, before); err != nil {
			t.Fatal(err)
		}
	}
	generation := f.getDeployment(t, "twice").Generation
	for _, snap := range []*diagnostics.Snapshot{nil, before} {
		msg, err := f.exec.Execute(f.ctx, f.ns, first, snap)
		if err != nil {
			t.Fatal(err)
		}
		after := f.getDeployment(t, "twice")
		if after.Generation != generation || after.Spec.Template.Annotations[RestartedAtAnnotation] != RestartStamp(second.At) ||
			!strings.Contains(msg, "restarted after this intent") {
			t.Fatalf("generation %d -> %d, stamp %q (%q): the older intent restarted again",
				generation, after.Generation, after.Spec.Template.Annotations[RestartedAtAnnotation], msg)
		}
	}
}
