package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/selfheal-dev/selfheal/internal/controlplane"
	"github.com/selfheal-dev/selfheal/internal/demo/stack"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
)

// describeTarget prints the MCP server as the API server has it: the Deployment, its
// ReplicaSets, every pod (terminating ones too) and the HealingRequests, so a failed
// scenario says what state it ran in. It never fails: what it cannot read it says.
func describeTarget(ctx context.Context) string {
	var b strings.Builder
	dep, err := env.Deployment(ctx)
	if err != nil {
		return fmt.Sprintf("reading deployment: %v", err)
	}
	fmt.Fprintf(&b, "deployment %s: generation %d observed %d, replicas %d, strategy %s, template %s\n  status: replicas %d updated %d ready %d available %d\n",
		dep.Name, dep.Generation, dep.Status.ObservedGeneration, ptr.Deref(dep.Spec.Replicas, 1), dep.Spec.Strategy.Type,
		templateString(dep.Spec.Template.ObjectMeta), dep.Status.Replicas, dep.Status.UpdatedReplicas, dep.Status.ReadyReplicas, dep.Status.AvailableReplicas)
	var sets appsv1.ReplicaSetList
	if err := env.Client.List(ctx, &sets, client.InNamespace(stack.Namespace), client.MatchingLabels{"app": stack.Service}); err != nil {
		fmt.Fprintf(&b, "listing replicasets: %v\n", err)
	}
	for _, rs := range sets.Items {
		fmt.Fprintf(&b, "  replicaset %s: replicas %d (status %d, ready %d), template %s\n", rs.Name, ptr.Deref(rs.Spec.Replicas, 0),
			rs.Status.Replicas, rs.Status.ReadyReplicas, templateString(rs.Spec.Template.ObjectMeta))
	}
	b.WriteString(describePods(ctx, stack.Service))
	hrs, err := env.Requests(ctx)
	if err != nil {
		fmt.Fprintf(&b, "listing HealingRequests: %v\n", err)
	}
	sort.Slice(hrs, func(i, j int) bool { return hrs[i].CreationTimestamp.Before(&hrs[j].CreationTimestamp) })
	fmt.Fprintf(&b, "  HealingRequests: %s\n", describeRequests(hrs))
	return b.String()
}

// describePods prints the pods of an app (label app=name), terminating ones too.
func describePods(ctx context.Context, app string) string {
	var b strings.Builder
	var pods corev1.PodList
	if err := env.Client.List(ctx, &pods, client.InNamespace(stack.Namespace), client.MatchingLabels{"app": app}); err != nil {
		return fmt.Sprintf("listing pods: %v\n", err)
	}
	for _, p := range pods.Items {
		var waiting []string
		for _, st := range p.Status.ContainerStatuses {
			if st.State.Waiting != nil {
				waiting = append(waiting, st.State.Waiting.Reason)
			}
		}
		deleting := ""
		if p.DeletionTimestamp != nil {
			deleting = ", terminating since " + p.DeletionTimestamp.UTC().Format("15:04:05")
		}
		fmt.Fprintf(&b, "  pod %s: phase %s, ready %t, state %q, waiting %v%s\n", p.Name, p.Status.Phase, diagnostics.PodReady(&p),
			p.Labels[controlplane.StateLabel], waiting, deleting)
	}
	return b.String()
}

func templateString(m metav1.ObjectMeta) string {
	return fmt.Sprintf("labels %v annotations %v", m.Labels, m.Annotations)
}
