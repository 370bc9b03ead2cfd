package diagnostics

import (
	"fmt"
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
)

// Fixtures shaped as the API server, the deployment controller, the endpointslice
// controller and the kubelet write them.

const (
	testNS    = "shop"
	testImage = "ghcr.io/acme/web:1.4.2"
	rsName    = "web-5d7c9b8f4"
)

var (
	t0        = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	depUID    = types.UID("1f0f7c1e-4b8e-4c59-9a0e-6c0d3f1b2a01")
	rsUID     = types.UID("2a1e8d2f-5c9f-4d6a-8b1f-7d1e4a2c3b02")
	webLabels = map[string]string{"app": "web", "pod-template-hash": "5d7c9b8f4"}
	gateway   = Caller{Namespace: "selfheal-system", Labels: map[string]string{"app.kubernetes.io/name": "selfheal"}}
)

func mt(d time.Duration) metav1.Time { return metav1.NewTime(t0.Add(d)) }

func webService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: testNS, UID: "svc-uid"},
		Spec: corev1.ServiceSpec{
			Type:      corev1.ServiceTypeClusterIP,
			ClusterIP: "10.96.14.7",
			Selector:  map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{
				Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("http"),
			}},
		},
	}
}

func webContainer() corev1.Container {
	return corev1.Container{
		Name:  "app",
		Image: testImage,
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
		},
		TerminationMessagePath:   "/dev/termination-log",
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
		ImagePullPolicy:          corev1.PullIfNotPresent,
	}
}

type deployOpt func(*appsv1.Deployment)

func webDeployment(opts ...deployOpt) *appsv1.Deployment {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: testNS, UID: depUID, Generation: 3},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{webContainer()}},
			},
			ProgressDeadlineSeconds: ptr.To[int32](600),
		},
		Status: appsv1.DeploymentStatus{
			ObservedGeneration: 3, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2,
			Conditions: []appsv1.DeploymentCondition{
				{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable",
					Message: "Deployment has minimum availability.", LastUpdateTime: mt(0), LastTransitionTime: mt(0)},
				{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable",
					Message: fmt.Sprintf("ReplicaSet %q has successfully progressed.", rsName), LastUpdateTime: mt(0), LastTransitionTime: mt(0)},
			},
		},
	}
	for _, o := range opts {
		o(d)
	}
	return d
}

func scaledToZero(d *appsv1.Deployment) {
	d.Spec.Replicas = ptr.To[int32](0)
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Conditions: []appsv1.DeploymentCondition{
		{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable", Message: "Deployment has minimum availability."},
		{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable", Message: fmt.Sprintf("ReplicaSet %q has successfully progressed.", rsName)},
	}}
}

func paused(d *appsv1.Deployment) { d.Spec.Paused = true }

func unavailable(d *appsv1.Deployment) {
	d.Status.ReadyReplicas, d.Status.AvailableReplicas, d.Status.UnavailableReplicas = 0, 0, 2
	d.Status.Conditions[0] = appsv1.DeploymentCondition{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionFalse,
		Reason: "MinimumReplicasUnavailable", Message: "Deployment does not have minimum availability."}
}

func deadlineExceeded(d *appsv1.Deployment) {
	unavailable(d)
	d.Status.Conditions[1] = appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse,
		Reason: "ProgressDeadlineExceeded", Message: `ReplicaSet "web-6f8d4c7b9" has timed out progressing.`}
}

func templateLabels(l map[string]string) deployOpt {
	return func(d *appsv1.Deployment) { d.Spec.Template.Labels = l; d.Spec.Selector.MatchLabels = l }
}

type podOpt func(*corev1.Pod)

// runningPod is a pod as the kubelet reports it once its container runs and passes
// its readiness probe.
func runningPod(name string, opts ...podOpt) corev1.Pod {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: testNS, UID: types.UID("uid-" + name), Labels: webLabels,
			CreationTimestamp: mt(-time.Hour),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rsName, UID: rsUID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
		},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{webContainer()}, RestartPolicy: corev1.RestartPolicyAlways},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, HostIP: "172.18.0.2", PodIP: "10.244.1.17", QOSClass: corev1.PodQOSBurstable,
			StartTime: ptr.To(mt(-time.Hour)),
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionTrue, LastTransitionTime: mt(-time.Hour)},
				{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: mt(-time.Hour)},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: mt(-time.Hour)},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: mt(-time.Hour)},
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: mt(-time.Hour)},
			},
			ContainerStatuses: []corev1.ContainerStatus{{
				Name: "app", Image: testImage, ImageID: "ghcr.io/acme/web@sha256:9f2c", ContainerID: "containerd://4be1c0" + name,
				Ready: true, Started: ptr.To(true), RestartCount: 0,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: mt(-time.Hour)}},
			}},
		},
	}
	for _, o := range opts {
		o(&p)
	}
	return p
}

func setNotReady(p *corev1.Pod, reason string) {
	for i := range p.Status.Conditions {
		switch p.Status.Conditions[i].Type {
		case corev1.PodReady, corev1.ContainersReady:
			p.Status.Conditions[i].Status = corev1.ConditionFalse
			p.Status.Conditions[i].Reason = reason
			p.Status.Conditions[i].Message = "containers with unready status: [app]"
		}
	}
	p.Status.ContainerStatuses[0].Ready = false
}

// crashLooping: the container exited with exitCode and the kubelet backs off.
func crashLooping(exitCode int32, reason string, restarts int32) podOpt {
	return func(p *corev1.Pod) {
		setNotReady(p, "ContainersNotReady")
		st := &p.Status.ContainerStatuses[0]
		st.Started, st.RestartCount = ptr.To(false), restarts
		st.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off 2m40s restarting failed container=app pod=%s_%s(%s)", p.Name, testNS, p.UID)}}
		st.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: exitCode, Reason: reason, StartedAt: mt(-2 * time.Minute), FinishedAt: mt(-time.Minute), ContainerID: "containerd://9ad2"}}
	}
}

// oomKilledOnce: running and ready again after one OOM kill.
func oomKilledOnce(p *corev1.Pod) {
	st := &p.Status.ContainerStatuses[0]
	st.RestartCount = 1
	st.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: 137, Reason: "OOMKilled", StartedAt: mt(-3 * time.Hour), FinishedAt: mt(-time.Hour), ContainerID: "containerd://77aa"}}
}

func pendingWaiting(reason, message, image string) podOpt {
	return func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodPending
		p.Status.PodIP = "10.244.1.30"
		setNotReady(p, "ContainersNotReady")
		st := &p.Status.ContainerStatuses[0]
		st.Image, st.ImageID, st.ContainerID, st.Started = image, "", "", ptr.To(false)
		st.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}
		p.Spec.Containers[0].Image = image
	}
}

func imagePullBackOff(image string) podOpt {
	return pendingWaiting("ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q", image), image)
}

func configError(message string) podOpt {
	return pendingWaiting("CreateContainerConfigError", message, testImage)
}

func unschedulable(message string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.NodeName = ""
		p.Status = corev1.PodStatus{Phase: corev1.PodPending, QOSClass: corev1.PodQOSBurstable, Conditions: []corev1.PodCondition{{
			Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: message, LastTransitionTime: mt(0)}}}
	}
}

func runningNotReady(p *corev1.Pod) {
	setNotReady(p, "ContainersNotReady")
	p.Status.ContainerStatuses[0].Started = ptr.To(true)
}

func evicted(p *corev1.Pod) {
	p.Status = corev1.PodStatus{
		Phase: corev1.PodFailed, Reason: "Evicted",
		Message: "The node was low on resource: memory. Threshold quantity: 100Mi, available: 85432Ki. Container app was using 612Mi, request is 128Mi, has larger consumption of memory.",
		Conditions: []corev1.PodCondition{
			{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "TerminationByKubelet", Message: "The node was low on resource: memory."},
			{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "PodFailed"},
		},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Image: testImage, Started: ptr.To(false),
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "ContainerStatusUnknown",
				Message: "The container could not be located when the pod was terminated"}}}},
	}
}

func noLimits(p *corev1.Pod) { p.Spec.Containers[0].Resources.Limits = nil }

// sliceFor is the EndpointSlice the endpointslice controller writes for the pods.
func sliceFor(pods ...corev1.Pod) discoveryv1.EndpointSlice {
	s := discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "web-x7k2p", Namespace: testNS, Labels: map[string]string{
			discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for i, p := range pods {
		if p.Status.Phase == corev1.PodFailed || p.Status.PodIP == "" {
			continue
		}
		ready := PodReady(&p)
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.244.1.%d", 17+i)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready), Serving: ptr.To(ready), Terminating: ptr.To(false)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: testNS, Name: p.Name, UID: p.UID},
			NodeName:   ptr.To("node-a"),
		})
	}
	return s
}

func podEvent(pod, typ, reason, message string, at time.Duration) corev1.Event {
	return corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: pod + "." + reason, Namespace: testNS},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: testNS, Name: pod, APIVersion: "v1", FieldPath: "spec.containers{app}"},
		Type:           typ, Reason: reason, Message: message,
		Source:         corev1.EventSource{Component: "kubelet", Host: "node-a"},
		FirstTimestamp: mt(at), LastTimestamp: mt(at), Count: 1,
	}
}

// snapshot is a healthy two-pod web Service; opts change it.
func snapshot(pods []corev1.Pod, opts ...func(*Snapshot)) *Snapshot {
	s := &Snapshot{
		Target:     Target{Namespace: testNS, Service: "web"},
		Caller:     gateway,
		GatheredAt: t0,
		Service:    webService(),
		Workload:   &selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: "web"},
		Deployment: webDeployment(),
		Pods:       pods,
	}
	s.EndpointSlices = []discoveryv1.EndpointSlice{sliceFor(pods...)}
	for _, o := range opts {
		o(s)
	}
	return s
}

func healthyPods() []corev1.Pod {
	return []corev1.Pod{runningPod("web-5d7c9b8f4-abcde"), runningPod("web-5d7c9b8f4-fghij")}
}

func defaultDeny() networkingv1.NetworkPolicy {
	return networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "default-deny", Namespace: testNS},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
	}
}

func allowFrom(name string, peer networkingv1.NetworkPolicyPeer, port intstr.IntOrString) networkingv1.NetworkPolicy {
	return networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{peer},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: ptr.To(corev1.ProtocolTCP), Port: &port}},
			}},
		},
	}
}

func gatewayPeer() networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "selfheal-system"}},
		PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "selfheal"}},
	}
}

func statefulSet(want, ready int32) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: testNS, UID: "sts-uid"},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To(want), ServiceName: "db",
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{webContainer()}},
			},
		},
		Status: appsv1.StatefulSetStatus{Replicas: want, ReadyReplicas: ready, AvailableReplicas: ready,
			CurrentRevision: "db-7c9d6f8b5", UpdateRevision: "db-7c9d6f8b5"},
	}
}
