package e2e

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controlplane"
	"github.com/selfheal-dev/selfheal/internal/demo/stack"
)

// handoverApp creates a Service and a Deployment scaled to zero whose pods, once
// created, stay Pending (no kwok stage readies them while they carry the label), so a
// healing that scaled it waits in Verifying until the test lets the pod start.
func handoverApp(ctx context.Context, name string) {
	GinkgoHelper()
	labels := map[string]string{"app": name}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: stack.Namespace, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name, controlplane.StateLabel: "held"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "server", Image: "ghcr.io/selfheal-dev/" + name + ":1.0",
					Ports: []corev1.ContainerPort{{Name: "mcp", ContainerPort: 8080}},
					Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
						corev1.ResourceMemory: resource.MustParse("64Mi"), corev1.ResourceCPU: resource.MustParse("100m"),
					}},
				}}},
			},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: stack.Namespace, Name: name, Labels: map[string]string{"selfheal.dev/heal": "true"}},
		Spec: corev1.ServiceSpec{Selector: labels,
			Ports: []corev1.ServicePort{{Name: "mcp", Port: 80, TargetPort: intstr.FromString("mcp")}}},
	}
	Expect(env.Client.Create(ctx, dep)).To(Succeed())
	Expect(env.Client.Create(ctx, svc)).To(Succeed())
}

// releasePods lets the held pods of an app start.
func releasePods(ctx context.Context, name string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		var pods corev1.PodList
		g.Expect(env.Client.List(ctx, &pods, client.InNamespace(stack.Namespace), client.MatchingLabels{"app": name})).To(Succeed())
		g.Expect(pods.Items).NotTo(BeEmpty())
		for i := range pods.Items {
			p := &pods.Items[i]
			if _, held := p.Labels[controlplane.StateLabel]; !held {
				continue
			}
			patch := client.MergeFrom(p.DeepCopy())
			delete(p.Labels, controlplane.StateLabel)
			g.Expect(env.Client.Patch(ctx, p, patch)).To(Succeed())
		}
	}).WithTimeout(time.Minute).Should(Succeed())
}

// endedEvents counts the Events that announce the end of a healing.
func endedEvents(ctx context.Context, hr *selfhealv1alpha1.HealingRequest) int {
	GinkgoHelper()
	var list eventsv1.EventList
	Expect(env.Client.List(ctx, &list, client.InNamespace(hr.Namespace))).To(Succeed())
	n := 0
	for _, e := range list.Items {
		if e.Regarding.Name == hr.Name && selfhealv1alpha1.HealingPhase(e.Reason).IsTerminal() {
			n++
		}
	}
	return n
}

// handover SIGKILLs the leading controller mid-healing, again and again: the standby
// takes over within the lease, and each healing ends once, with one action. It runs
// last in the suite (it replaces the controllers the other scenarios scrape).
func handover(ctx SpecContext) {
	{
		const kills = 6
		for i := range kills {
			name := fmt.Sprintf("handover-%d", i)
			handoverApp(ctx, name)
			hr := &selfhealv1alpha1.HealingRequest{
				ObjectMeta: metav1.ObjectMeta{Namespace: stack.Namespace, Name: name},
				Spec: selfhealv1alpha1.HealingRequestSpec{
					Target:  selfhealv1alpha1.HealingTarget{Service: name},
					Trigger: selfhealv1alpha1.HealingTrigger{Source: selfhealv1alpha1.TriggerSourceManual, FailureClass: selfhealv1alpha1.FailureConnectionRefused},
				},
			}
			Expect(env.Client.Create(ctx, hr)).To(Succeed())
			// Every other kill lands wherever the leader is (a request just created);
			// the others while the healing verifies, after its action.
			if i%2 == 1 {
				Eventually(func(g Gomega) {
					g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(hr), hr)).To(Succeed())
					g.Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseVerifying))
				}).WithTimeout(time.Minute).Should(Succeed())
			}
			killed, err := env.KillLeader()
			Expect(err).NotTo(HaveOccurred())
			start := time.Now()
			next, err := env.WaitLeader(ctx)
			Expect(err).NotTo(HaveOccurred())
			Expect(next).NotTo(Equal(killed))
			took := time.Since(start)
			AddReportEntry("leader handover", fmt.Sprintf("%s -> %s in %s", killed, next, took.Round(time.Millisecond)))
			GinkgoWriter.Printf("handover %d: %s killed, %s leads after %s\n", i, killed, next, took.Round(time.Millisecond))
			Expect(took).To(BeNumerically("<", 30*time.Second), "the standby takes over within the lease")
			// Keep two controllers, as the Deployment would.
			_, err = env.StartController(ctx)
			Expect(err).NotTo(HaveOccurred())

			releasePods(ctx, name)
			Eventually(func(g Gomega) {
				g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(hr), hr)).To(Succeed())
				g.Expect(hr.Status.Phase.IsTerminal()).To(BeTrue(), "progress: %v", hr.Status.Progress)
			}).WithTimeout(2 * time.Minute).Should(Succeed())
			Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed), "progress: %v; pods:\n%s", hr.Status.Progress, describePods(ctx, name))
			Expect(executedActions(*hr)).To(Equal([]selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionScaleFromZero}))
			dep := &appsv1.Deployment{}
			Expect(env.Client.Get(ctx, client.ObjectKey{Namespace: stack.Namespace, Name: name}, dep)).To(Succeed())
			Expect(dep.Generation).To(Equal(int64(2)), "created, then scaled once: never twice")
			Eventually(func() int { return endedEvents(ctx, hr) }).WithTimeout(30 * time.Second).Should(Equal(1))
			Consistently(func() int { return endedEvents(ctx, hr) }).WithTimeout(2*time.Second).Should(Equal(1), "the healing ends exactly once")
		}
	}
}
