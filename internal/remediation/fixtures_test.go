package remediation

import (
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
)

// Builders of realistic objects for the pure tests: a Service "mcp-files" backed by a
// Deployment "mcp-files" in namespace "tools".

const (
	testNS      = "tools"
	testService = "mcp-files"
)

var appLabels = map[string]string{"app.kubernetes.io/name": "mcp-files"}

func testDeployment(replicas int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "mcp-files", Namespace: testNS, UID: "dep-uid", Generation: 3},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: appLabels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: appLabels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  "server",
					Image: "ghcr.io/example/mcp-files:1.4.2",
					Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
						corev1.ResourceMemory: resource.MustParse("128Mi"),
					}},
				}}},
			},
		},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: replicas,
			UpdatedReplicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas},
	}
}

func testStatefulSet(replicas int32) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "mcp-files", Namespace: testNS, UID: "sts-uid", Generation: 2},
		Spec: appsv1.StatefulSetSpec{
			Replicas:       ptr.To(replicas),
			Selector:       &metav1.LabelSelector{MatchLabels: appLabels},
			UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType},
		},
		Status: appsv1.StatefulSetStatus{ObservedGeneration: 2, Replicas: replicas, UpdatedReplicas: replicas,
			ReadyReplicas: replicas, AvailableReplicas: replicas, CurrentRevision: "mcp-files-7d9", UpdateRevision: "mcp-files-7d9"},
	}
}

func testPod(name string, phase corev1.PodPhase, ready bool) corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, Labels: appLabels, UID: types.UID(name + "-uid"),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet",
				Name: "mcp-files-6f7b9c", UID: "rs-uid", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "server", Image: "ghcr.io/example/mcp-files:1.4.2",
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
				corev1.ResourceMemory: resource.MustParse("128Mi"),
			}},
		}}},
		Status: corev1.PodStatus{
			Phase:      phase,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
			ContainerStatuses: []corev1.ContainerStatus{{
				Name: "server", Ready: ready, Image: "ghcr.io/example/mcp-files:1.4.2",
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
			}},
		},
	}
}

func crashLoopPod(name string) corev1.Pod {
	p := testPod(name, corev1.PodRunning, false)
	p.Status.ContainerStatuses[0].RestartCount = 7
	p.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
		Reason: "CrashLoopBackOff", Message: "back-off 5m0s restarting failed container=server"}}
	p.Status.ContainerStatuses[0].LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		Reason: "Error", ExitCode: 1}}
	return p
}

func oomPod(name string) corev1.Pod {
	p := crashLoopPod(name)
	p.Status.ContainerStatuses[0].LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		Reason: "OOMKilled", ExitCode: 137}}
	return p
}

// oomInitPod is a pod whose init container "migrate" (memory limit 64Mi) was
// OOMKilled and crashloops, so the app container never starts.
func oomInitPod(name string) corev1.Pod {
	p := testPod(name, corev1.PodPending, false)
	p.Spec.InitContainers = []corev1.Container{{
		Name: "migrate", Image: "ghcr.io/example/mcp-files-migrate:1.4.2",
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
	}}
	p.Status.InitContainerStatuses = []corev1.ContainerStatus{{
		Name: "migrate", Image: "ghcr.io/example/mcp-files-migrate:1.4.2", RestartCount: 4,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
			Reason: "CrashLoopBackOff", Message: "back-off 1m20s restarting failed container=migrate"}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137}},
	}}
	p.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}
	return p
}

func failedPod(name string) corev1.Pod {
	p := testPod(name, corev1.PodFailed, false)
	p.Status.Reason = "Evicted"
	p.Status.Message = "The node was low on resource: memory."
	p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		Reason: "Error", ExitCode: 137}}
	return p
}

func imagePullPod(name string) corev1.Pod {
	p := testPod(name, corev1.PodPending, false)
	p.Spec.Containers[0].Image = "ghcr.io/example/mcp-files:9.9.9"
	p.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
		Reason: "ImagePullBackOff", Message: `Back-off pulling image "ghcr.io/example/mcp-files:9.9.9"`}}
	return p
}

func configErrorPod(name string) corev1.Pod {
	p := testPod(name, corev1.PodPending, false)
	p.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
		Reason: "CreateContainerConfigError", Message: `secret "mcp-files-token" not found`}}
	return p
}

func unschedulablePod(name string) corev1.Pod {
	p := testPod(name, corev1.PodPending, false)
	p.Status.ContainerStatuses = nil
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
		Reason: "Unschedulable", Message: "0/3 nodes are available: 3 Insufficient memory."}}
	return p
}

func serviceFixture() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: testService, Namespace: testNS},
		Spec: corev1.ServiceSpec{Selector: appLabels, Ports: []corev1.ServicePort{{
			Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080)}}},
	}
}

func endpointSlice(endpoints ...discoveryv1.Endpoint) discoveryv1.EndpointSlice {
	return discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "mcp-files-x7k2p", Namespace: testNS,
			Labels: map[string]string{discoveryv1.LabelServiceName: testService}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   endpoints,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080))}},
	}
}

func endpoint(pod string, ready bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{"10.244.0.12"},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: testNS, Name: pod},
	}
}

func blockingPolicy() networkingv1.NetworkPolicy {
	return networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-all-ingress", Namespace: testNS},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: appLabels},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
}

// deploymentSnapshot is a snapshot of the Service backed by dep with pods.
func deploymentSnapshot(dep *appsv1.Deployment, pods ...corev1.Pod) *diagnostics.Snapshot {
	return &diagnostics.Snapshot{
		Target:     diagnostics.Target{Namespace: testNS, Service: testService},
		GatheredAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Service:    serviceFixture(),
		Workload:   &selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: dep.Name},
		Deployment: dep,
		Pods:       pods,
	}
}

func statefulSetSnapshot(sts *appsv1.StatefulSet, pods ...corev1.Pod) *diagnostics.Snapshot {
	return &diagnostics.Snapshot{
		Target:      diagnostics.Target{Namespace: testNS, Service: testService},
		Service:     serviceFixture(),
		Workload:    &selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadStatefulSet, Name: sts.Name},
		StatefulSet: sts,
		Pods:        pods,
	}
}

// testPolicy allows every action, with the defaults the API server would fill in.
func testPolicy(allowed ...selfhealv1alpha1.ActionType) *selfhealv1alpha1.HealingPolicy {
	if len(allowed) == 0 {
		allowed = []selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionRolloutRestart,
			selfhealv1alpha1.ActionScaleFromZero, selfhealv1alpha1.ActionDeleteFailedPods}
	}
	return &selfhealv1alpha1.HealingPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "tools-healing", Namespace: testNS},
		Spec: selfhealv1alpha1.HealingPolicySpec{
			AllowedActions: allowed,
			Cooldown:       &metav1.Duration{Duration: 2 * time.Minute},
			CircuitBreaker: &selfhealv1alpha1.CircuitBreaker{
				Window:              &metav1.Duration{Duration: time.Hour},
				MaxActionsPerTarget: ptr.To(int32(3)),
				NamespaceMaxActions: ptr.To(int32(5)),
			},
		},
	}
}
