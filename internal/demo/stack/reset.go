package stack

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/selfheal-dev/selfheal/internal/controlplane"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
)

// resetTimeout bounds ResetMCPServer's wait: long enough for a healing left running
// by a failed scenario to reach its deadline (2m by default).
const resetTimeout = 150 * time.Second

// revisionAnnotation is the deployment controller's revision, on the Deployment and
// on each of its ReplicaSets: the ReplicaSet with the Deployment's is the current one.
const revisionAnnotation = "deployment.kubernetes.io/revision"

// ResetMCPServer brings the MCP server back to the state Start left it in, as a person
// would after an incident, and waits until it is verified there:
//   - the Deployment's replicas, strategy and pod template metadata (labels, such as
//     a kwok failure stage, and annotations, such as a restart stamp) are Start's,
//     and it is not paused;
//   - pods a test put into a failure state (the kwok stage label on the pod) are
//     deleted: a template already at the baseline would never replace them;
//
// then, verified: the rollout is complete; the only pods (terminating ones included)
// are the current ReplicaSet's, Running, Ready and without a stage label; every other
// ReplicaSet is at zero; the Service's ready endpoints are exactly those pods; the
// local MCP server serves; and no HealingRequest for the Service is active.
func (s *Stack) ResetMCPServer(ctx context.Context) error {
	want := mcpServerDeployment()
	dep, err := s.Deployment(ctx)
	if err != nil {
		return err
	}
	patch := client.MergeFrom(dep.DeepCopy())
	dep.Spec.Replicas, dep.Spec.Strategy, dep.Spec.Paused = want.Spec.Replicas, want.Spec.Strategy, false
	dep.Spec.Template.Labels = maps.Clone(want.Spec.Template.Labels)
	dep.Spec.Template.Annotations = maps.Clone(want.Spec.Template.Annotations)
	if err := s.Client.Patch(ctx, dep, patch); err != nil {
		return fmt.Errorf("resetting deployment %s: %w", Service, err)
	}
	if err := s.deleteStagedPods(ctx); err != nil {
		return err
	}
	var dirt string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, resetTimeout, true, func(ctx context.Context) (bool, error) {
		var err error
		if dirt, err = s.mcpServerDirt(ctx, want); err != nil {
			dirt = err.Error() // keep waiting through transient errors, and say so
		}
		return dirt == "", nil
	})
	if err != nil {
		return fmt.Errorf("resetting %s: not back to its baseline: %s: %w", Service, dirt, err)
	}
	return nil
}

// deleteStagedPods deletes the MCP server's pods that carry a kwok stage label.
func (s *Stack) deleteStagedPods(ctx context.Context) error {
	pods, err := s.Pods(ctx)
	if err != nil {
		return err
	}
	for i := range pods {
		if _, staged := pods[i].Labels[controlplane.StateLabel]; !staged {
			continue
		}
		if err := client.IgnoreNotFound(s.Client.Delete(ctx, &pods[i])); err != nil {
			return fmt.Errorf("deleting pod %s: %w", pods[i].Name, err)
		}
	}
	return nil
}

// mcpServerDirt says what still differs from the baseline want; empty when nothing.
func (s *Stack) mcpServerDirt(ctx context.Context, want *appsv1.Deployment) (string, error) {
	dep, err := s.Deployment(ctx)
	if err != nil {
		return "", err
	}
	replicas := ptr.Deref(want.Spec.Replicas, 1)
	st := dep.Status
	switch {
	case ptr.Deref(dep.Spec.Replicas, 1) != replicas || dep.Spec.Paused || !equality.Semantic.DeepEqual(dep.Spec.Strategy, want.Spec.Strategy) ||
		!equality.Semantic.DeepEqual(dep.Spec.Template.ObjectMeta, want.Spec.Template.ObjectMeta):
		return fmt.Sprintf("deployment spec differs: replicas %d, paused %t, strategy %s, template labels %v annotations %v",
			ptr.Deref(dep.Spec.Replicas, 1), dep.Spec.Paused, dep.Spec.Strategy.Type, dep.Spec.Template.Labels, dep.Spec.Template.Annotations), nil
	case st.ObservedGeneration < dep.Generation:
		return fmt.Sprintf("deployment generation %d not observed yet", dep.Generation), nil
	case st.Replicas != replicas || st.UpdatedReplicas != replicas || st.ReadyReplicas != replicas || st.AvailableReplicas != replicas || st.UnavailableReplicas != 0:
		return fmt.Sprintf("rollout not complete: replicas %d, updated %d, ready %d, available %d, unavailable %d",
			st.Replicas, st.UpdatedReplicas, st.ReadyReplicas, st.AvailableReplicas, st.UnavailableReplicas), nil
	}
	current, dirt, err := s.currentReplicaSet(ctx, dep)
	if err != nil || dirt != "" {
		return dirt, err
	}
	pods, dirt, err := s.podsOnlyOf(ctx, current, int(replicas))
	if err != nil || dirt != "" {
		return dirt, err
	}
	if dirt, err := s.endpointsExactly(ctx, pods); err != nil || dirt != "" {
		return dirt, err
	}
	if !s.Alerts.Serving() {
		return "the local MCP server does not serve", nil
	}
	hrs, err := s.Requests(ctx)
	if err != nil {
		return "", err
	}
	for _, hr := range hrs {
		if hr.Spec.Target.Service == Service && !hr.Status.Phase.IsTerminal() {
			return fmt.Sprintf("HealingRequest %s is still active (phase %q)", hr.Name, hr.Status.Phase), nil
		}
	}
	return "", nil
}

// currentReplicaSet is the Deployment's ReplicaSet of its current revision; every
// other one must be scaled to zero with no pods left.
func (s *Stack) currentReplicaSet(ctx context.Context, dep *appsv1.Deployment) (string, string, error) {
	var sets appsv1.ReplicaSetList
	if err := s.Client.List(ctx, &sets, client.InNamespace(Namespace), client.MatchingLabels{"app": Service}); err != nil {
		return "", "", err
	}
	current := ""
	for _, rs := range sets.Items {
		if !metav1.IsControlledBy(&rs, dep) {
			continue
		}
		if rs.Annotations[revisionAnnotation] == dep.Annotations[revisionAnnotation] {
			current = rs.Name
			continue
		}
		if ptr.Deref(rs.Spec.Replicas, 0) != 0 || rs.Status.Replicas != 0 {
			return "", fmt.Sprintf("old replicaset %s still has pods (spec %d, status %d)", rs.Name, ptr.Deref(rs.Spec.Replicas, 0), rs.Status.Replicas), nil
		}
	}
	if current == "" {
		return "", fmt.Sprintf("no replicaset of revision %s", dep.Annotations[revisionAnnotation]), nil
	}
	return current, "", nil
}

// podsOnlyOf checks that the MCP server's only pods, terminating ones included, are n
// Running, Ready, unstaged pods of the ReplicaSet rs, and returns their names.
func (s *Stack) podsOnlyOf(ctx context.Context, rs string, n int) ([]string, string, error) {
	var list corev1.PodList
	if err := s.Client.List(ctx, &list, client.InNamespace(Namespace), client.MatchingLabels{"app": Service}); err != nil {
		return nil, "", err
	}
	var names []string
	for _, p := range list.Items {
		owner := metav1.GetControllerOf(&p)
		_, staged := p.Labels[controlplane.StateLabel]
		switch {
		case owner == nil || owner.Name != rs:
			return nil, fmt.Sprintf("pod %s is not of the current replicaset %s", p.Name, rs), nil
		case p.DeletionTimestamp != nil:
			return nil, fmt.Sprintf("pod %s is terminating", p.Name), nil
		case staged:
			return nil, fmt.Sprintf("pod %s carries the stage %q", p.Name, p.Labels[controlplane.StateLabel]), nil
		case p.Status.Phase != corev1.PodRunning || !diagnostics.PodReady(&p):
			return nil, fmt.Sprintf("pod %s is %s and not ready", p.Name, p.Status.Phase), nil
		}
		names = append(names, p.Name)
	}
	if len(names) != n {
		return nil, fmt.Sprintf("%d pods, want %d", len(names), n), nil
	}
	return names, "", nil
}

// endpointsExactly checks that the Service's EndpointSlices list exactly the pods,
// each ready, and nothing else.
func (s *Stack) endpointsExactly(ctx context.Context, pods []string) (string, error) {
	var slicesList discoveryv1.EndpointSliceList
	if err := s.Client.List(ctx, &slicesList, client.InNamespace(Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: Service}); err != nil {
		return "", err
	}
	var ready, other []string
	for _, sl := range slicesList.Items {
		for _, ep := range sl.Endpoints {
			name := "(no pod)"
			if ep.TargetRef != nil {
				name = ep.TargetRef.Name
			}
			if ptr.Deref(ep.Conditions.Ready, true) && !ptr.Deref(ep.Conditions.Terminating, false) {
				ready = append(ready, name)
			} else {
				other = append(other, name)
			}
		}
	}
	slices.Sort(ready)
	want := slices.Sorted(slices.Values(pods))
	if !slices.Equal(ready, want) || len(other) > 0 {
		return fmt.Sprintf("endpoints: ready %v, not ready %v; want ready %v", ready, other, want), nil
	}
	return "", nil
}
