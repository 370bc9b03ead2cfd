package controlplane_test

import (
	"context"
	"io"
	"os"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/selfheal-dev/selfheal/internal/controlplane"
)

var cluster *controlplane.ControlPlane

func TestMain(m *testing.M) {
	ctx := context.Background()
	var err error
	cluster, err = controlplane.Start(ctx, controlplane.Options{Cluster: true, Progress: os.Stderr})
	if err != nil {
		_, _ = io.WriteString(os.Stderr, "starting the control plane: "+err.Error()+"\n")
		os.Exit(1)
	}
	code := m.Run()
	if err := cluster.Stop(); err != nil {
		_, _ = io.WriteString(os.Stderr, "stopping the control plane: "+err.Error()+"\n")
	}
	os.Exit(code)
}

func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "cp-test-"}}
	if err := cluster.Client.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func deployment(ns, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "server", Image: "ghcr.io/selfheal-dev/example:1.0",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				}}},
			},
		},
	}
}

func service(ns, name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}
}

func listPods(g Gomega, ns, app string) []corev1.Pod {
	var pods corev1.PodList
	g.Expect(cluster.Client.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels{"app": app})).To(Succeed())
	return pods.Items
}

func readyPods(pods []corev1.Pod) []corev1.Pod {
	var ready []corev1.Pod
	for _, p := range pods {
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

func readyEndpoints(g Gomega, ns, svc string) int {
	var slices discoveryv1.EndpointSliceList
	g.Expect(cluster.Client.List(context.Background(), &slices, client.InNamespace(ns),
		client.MatchingLabels{discoveryv1.LabelServiceName: svc})).To(Succeed())
	n := 0
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if ptr.Deref(e.Conditions.Ready, false) {
				n++
			}
		}
	}
	return n
}

// A Deployment behind a Service comes up Running and Ready with ready endpoints; a pod
// put into CrashLoopBackOff with an OOMKilled last state reads back exactly so and
// leaves the endpoints.
func TestDeploymentReadyThenCrashLoopOOMKilled(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g.Expect(cluster.Client.Create(ctx, deployment(ns, "mcp", 2))).To(Succeed())
	g.Expect(cluster.Client.Create(ctx, service(ns, "mcp"))).To(Succeed())

	g.Eventually(func(g Gomega) {
		g.Expect(readyPods(listPods(g, ns, "mcp"))).To(HaveLen(2))
		g.Expect(readyEndpoints(g, ns, "mcp")).To(Equal(2))
	}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())

	pod := readyPods(listPods(g, ns, "mcp"))[0]
	g.Expect(controlplane.SetPodState(ctx, cluster.Client, &pod, controlplane.StateCrashLoop,
		map[string]string{controlplane.ReasonAnnotation: "OOMKilled", controlplane.RestartCountAnnotation: "7"})).To(Succeed())

	g.Eventually(func(g Gomega) {
		var got corev1.Pod
		g.Expect(cluster.Client.Get(ctx, client.ObjectKeyFromObject(&pod), &got)).To(Succeed())
		g.Expect(got.Status.ContainerStatuses).To(HaveLen(1))
		cs := got.Status.ContainerStatuses[0]
		g.Expect(cs.State.Waiting).NotTo(BeNil())
		g.Expect(cs.State.Waiting.Reason).To(Equal("CrashLoopBackOff"))
		g.Expect(cs.LastTerminationState.Terminated).NotTo(BeNil())
		g.Expect(cs.LastTerminationState.Terminated.Reason).To(Equal("OOMKilled"))
		g.Expect(cs.LastTerminationState.Terminated.ExitCode).To(Equal(int32(137)))
		g.Expect(cs.RestartCount).To(Equal(int32(7)))
		g.Expect(cs.Ready).To(BeFalse())
	}).WithTimeout(15 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())

	g.Eventually(func(g Gomega) {
		g.Expect(readyEndpoints(g, ns, "mcp")).To(Equal(1))
	}).WithTimeout(15 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())

	// The state holds: the stage does not loop back to Running.
	g.Consistently(func(g Gomega) {
		var got corev1.Pod
		g.Expect(cluster.Client.Get(ctx, client.ObjectKeyFromObject(&pod), &got)).To(Succeed())
		g.Expect(got.Status.ContainerStatuses[0].State.Waiting).NotTo(BeNil())
	}).WithTimeout(2 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
}

// A rollout restart (the pod-template annotation kubectl sets) replaces the pods with
// new ones that become Ready.
func TestRolloutRestartReplacesPods(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	dep := deployment(ns, "web", 2)
	g.Expect(cluster.Client.Create(ctx, dep)).To(Succeed())
	var before []corev1.Pod
	g.Eventually(func(g Gomega) {
		before = readyPods(listPods(g, ns, "web"))
		g.Expect(before).To(HaveLen(2))
	}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())

	patch := client.MergeFrom(dep.DeepCopy())
	dep.Spec.Template.Annotations = map[string]string{"kubectl.kubernetes.io/restartedAt": time.Now().Format(time.RFC3339)}
	g.Expect(cluster.Client.Patch(ctx, dep, patch)).To(Succeed())

	old := map[string]bool{}
	for _, p := range before {
		old[string(p.UID)] = true
	}
	g.Eventually(func(g Gomega) {
		pods := listPods(g, ns, "web")
		g.Expect(pods).To(HaveLen(2), "old pods are gone")
		ready := readyPods(pods)
		g.Expect(ready).To(HaveLen(2))
		for _, p := range ready {
			g.Expect(old).NotTo(HaveKey(string(p.UID)))
		}
	}).WithTimeout(60 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
}

// Failure stages applied through the pod template hold new pods in a waiting state.
func TestTemplateImagePullBackOffAndFailedPods(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	dep := deployment(ns, "broken", 1)
	dep.Spec.Template.Labels[controlplane.StateLabel] = string(controlplane.StateImagePull)
	g.Expect(cluster.Client.Create(ctx, dep)).To(Succeed())
	g.Eventually(func(g Gomega) {
		pods := listPods(g, ns, "broken")
		g.Expect(pods).To(HaveLen(1))
		g.Expect(pods[0].Status.Phase).To(Equal(corev1.PodPending))
		g.Expect(pods[0].Status.ContainerStatuses).To(HaveLen(1))
		g.Expect(pods[0].Status.ContainerStatuses[0].State.Waiting).NotTo(BeNil())
		g.Expect(pods[0].Status.ContainerStatuses[0].State.Waiting.Reason).To(Equal("ImagePullBackOff"))
		g.Expect(pods[0].Status.ContainerStatuses[0].State.Waiting.Message).To(ContainSubstring("ghcr.io/selfheal-dev/example:1.0"))
	}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())

	ok := deployment(ns, "batch", 1)
	g.Expect(cluster.Client.Create(ctx, ok)).To(Succeed())
	var pod corev1.Pod
	g.Eventually(func(g Gomega) {
		ready := readyPods(listPods(g, ns, "batch"))
		g.Expect(ready).To(HaveLen(1))
		pod = ready[0]
	}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
	g.Expect(controlplane.SetPodState(ctx, cluster.Client, &pod, controlplane.StateFailed, nil)).To(Succeed())
	g.Eventually(func(g Gomega) {
		var got corev1.Pod
		g.Expect(cluster.Client.Get(ctx, client.ObjectKeyFromObject(&pod), &got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(corev1.PodFailed))
		// The ReplicaSet replaces the failed pod; the failed one lingers for cleanup.
		g.Expect(readyPods(listPods(g, ns, "batch"))).To(HaveLen(1))
	}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// pods/log, current and previous, is served by kwok's kubelet server from log files.
func TestPodLogs(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g.Expect(cluster.Client.Create(ctx, deployment(ns, "logger", 1))).To(Succeed())
	var pod corev1.Pod
	g.Eventually(func(g Gomega) {
		ready := readyPods(listPods(g, ns, "logger"))
		g.Expect(ready).To(HaveLen(1))
		pod = ready[0]
	}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
	g.Expect(cluster.SetPodLogs(ctx, &pod, "server", []string{"starting", "listening on :8080"},
		[]string{"panic: runtime error: invalid memory address"})).To(Succeed())

	cs, err := kubernetes.NewForConfig(cluster.Config)
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(func(g Gomega) {
		cur, err := cs.CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{Container: "server"}).DoRaw(ctx)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(string(cur)).To(ContainSubstring("listening on :8080"))
		prev, err := cs.CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{Container: "server", Previous: true}).DoRaw(ctx)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(string(prev)).To(ContainSubstring("panic: runtime error"))
	}).WithTimeout(20 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
}
