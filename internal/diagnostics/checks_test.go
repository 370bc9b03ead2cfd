package diagnostics

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

type checkCase struct {
	name     string
	snap     *Snapshot
	result   selfhealv1alpha1.FindingResult
	message  []string // substrings the message must contain
	evidence []string // substrings some evidence item must contain
}

func runCheckTable(t *testing.T, check Check, name selfhealv1alpha1.CheckName, cases []checkCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := check(tc.snap, tc.snap.Facts())
			assertBounded(t, f)
			if f.Check != name {
				t.Errorf("check = %q, want %q", f.Check, name)
			}
			if f.Result != tc.result {
				t.Errorf("result = %s, want %s (message %q, evidence %q)", f.Result, tc.result, f.Message, f.Evidence)
			}
			for _, want := range tc.message {
				if !strings.Contains(f.Message, want) {
					t.Errorf("message %q does not contain %q", f.Message, want)
				}
			}
			for _, want := range tc.evidence {
				found := false
				for _, e := range f.Evidence {
					found = found || strings.Contains(e, want)
				}
				if !found {
					t.Errorf("no evidence contains %q: %q", want, f.Evidence)
				}
			}
		})
	}
}

func assertBounded(t *testing.T, f selfhealv1alpha1.Finding) {
	t.Helper()
	if f.Message == "" || len(f.Message) > MaxMessageLength {
		t.Errorf("message length %d out of bounds", len(f.Message))
	}
	if len(f.Evidence) > MaxEvidenceItems {
		t.Errorf("%d evidence items, max %d", len(f.Evidence), MaxEvidenceItems)
	}
	for _, e := range f.Evidence {
		if len(e) > MaxEvidenceLength {
			t.Errorf("evidence item of %d bytes, max %d", len(e), MaxEvidenceLength)
		}
	}
	switch f.Result {
	case pass, warn, fail, skipped:
	default:
		t.Errorf("result %q is not a valid FindingResult", f.Result)
	}
}

func notFoundSnapshot() *Snapshot {
	return &Snapshot{Target: Target{Namespace: testNS, Service: "web"}, Caller: gateway, GatheredAt: t0}
}

const (
	notFoundPull = `Failed to pull image "ghcr.io/acme/web:9.9.9": rpc error: code = NotFound desc = failed to pull and unpack image "ghcr.io/acme/web:9.9.9": failed to resolve reference "ghcr.io/acme/web:9.9.9": ghcr.io/acme/web:9.9.9: not found`
	deniedPull   = `Failed to pull image "ghcr.io/acme/private:1.0": failed to pull and unpack image "ghcr.io/acme/private:1.0": failed to resolve reference "ghcr.io/acme/private:1.0": failed to authorize: failed to fetch anonymous token: unexpected status from GET request to https://ghcr.io/token?scope=repository%3Aacme%2Fprivate%3Apull&service=ghcr.io: 401 Unauthorized`
	manifestPull = `Failed to pull image "nginx:1.99": Error response from daemon: manifest for nginx:1.99 not found: manifest unknown: manifest unknown`
)

func TestPodStatusCheck(t *testing.T) {
	pullPods := func(image, msg string) *Snapshot {
		p := runningPod("web-6f8d4c7b9-zz9xq", imagePullBackOff(image))
		return snapshot([]corev1.Pod{p}, func(s *Snapshot) {
			s.Events = []corev1.Event{
				podEvent(p.Name, "Normal", "Pulling", fmt.Sprintf("Pulling image %q", image), -50),
				podEvent(p.Name, "Warning", "Failed", msg, -40),
				podEvent(p.Name, "Warning", "Failed", "Error: ErrImagePull", -39),
				podEvent(p.Name, "Normal", "BackOff", fmt.Sprintf("Back-off pulling image %q", image), -10),
				podEvent(p.Name, "Warning", "Failed", "Error: ImagePullBackOff", -9),
			}
		})
	}
	runCheckTable(t, PodStatusCheck, selfhealv1alpha1.CheckPodStatus, []checkCase{
		{name: "healthy", snap: snapshot(healthyPods()), result: pass, message: []string{"All 2 active pods", "running and ready"}},
		{name: "service not found", snap: notFoundSnapshot(), result: skipped, message: []string{"shop/web not found"}},
		{name: "crashloop", snap: snapshot([]corev1.Pod{runningPod("web-5d7c9b8f4-abcde", crashLooping(1, "Error", 5))}),
			result: fail, message: []string{"0 of 1", "CrashLoopBackOff", "last exit code 1 (Error)", "restarts 5"},
			evidence: []string{"pod web-5d7c9b8f4-abcde container app: CrashLoopBackOff"}},
		{name: "one of two crashlooping", snap: snapshot([]corev1.Pod{runningPod("web-a"), runningPod("web-b", crashLooping(2, "Error", 3))}),
			result: warn, message: []string{"1 of 2 active pods are ready", "web-b"}},
		{name: "image not found", snap: pullPods("ghcr.io/acme/web:9.9.9", notFoundPull), result: fail,
			message: []string{"cannot pull its image (ImagePullBackOff)", "image ghcr.io/acme/web:9.9.9 not found in the registry"}},
		{name: "manifest unknown", snap: pullPods("nginx:1.99", manifestPull), result: fail, message: []string{"image nginx:1.99 not found"}},
		{name: "image unauthorized", snap: pullPods("ghcr.io/acme/private:1.0", deniedPull), result: fail,
			message: []string{"registry denied access to image ghcr.io/acme/private:1.0", "imagePullSecrets"}},
		{name: "err image pull without events", snap: snapshot([]corev1.Pod{runningPod("web-x", pendingWaiting("ErrImagePull",
			`rpc error: code = Unknown desc = failed to pull and unpack image "ghcr.io/acme/web:2": failed to resolve reference: dial tcp: lookup ghcr.io: no such host`, "ghcr.io/acme/web:2"))}),
			result: fail, message: []string{"ErrImagePull", "cannot be reached"}},
		{name: "missing secret", snap: snapshot([]corev1.Pod{runningPod("web-c", configError(`secret "db-credentials" not found`))}),
			result: fail, message: []string{"cannot be created (CreateContainerConfigError)", `secret "db-credentials" not found`}},
		{name: "missing configmap key", snap: snapshot([]corev1.Pod{runningPod("web-c", configError(`couldn't find key DATABASE_URL in ConfigMap shop/web-config`))}),
			result: fail, message: []string{"DATABASE_URL"}},
		{name: "unschedulable", snap: snapshot([]corev1.Pod{runningPod("web-p", unschedulable("0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."))}),
			result: fail, message: []string{"cannot be scheduled", "3 Insufficient memory"}},
		{name: "pending not yet scheduled", snap: snapshot([]corev1.Pod{func() corev1.Pod {
			p := runningPod("web-n")
			p.Spec.NodeName = ""
			p.Status = corev1.PodStatus{Phase: corev1.PodPending}
			return p
		}()}), result: fail, message: []string{"is pending", "not scheduled yet"}},
		{name: "running not ready", snap: snapshot([]corev1.Pod{runningPod("web-r", runningNotReady)}),
			result: fail, message: []string{"running but not ready", "app not ready"}},
		{name: "no pods", snap: snapshot(nil, func(s *Snapshot) { scaledToZero(s.Deployment) }),
			result: fail, message: []string{"No pods match the selector app=web", "wants 0 replicas"}},
		{name: "all pods failed", snap: snapshot([]corev1.Pod{runningPod("web-e", evicted)}),
			result: fail, message: []string{"have terminated"}, evidence: []string{"Evicted"}},
		{name: "no selector", snap: snapshot(nil, func(s *Snapshot) { s.Service.Spec.Selector = nil }), result: skipped, message: []string{"no selector"}},
		{name: "many crashlooping pods are bounded", snap: snapshot(manyPods(40, crashLooping(1, "Error", 9))), result: fail,
			evidence: []string{"… and 31 more"}},
	})
}

func manyPods(n int, opts ...podOpt) []corev1.Pod {
	pods := make([]corev1.Pod, n)
	for i := range pods {
		pods[i] = runningPod(fmt.Sprintf("web-5d7c9b8f4-%05d", i), opts...)
	}
	return pods
}

func TestEndpointsCheck(t *testing.T) {
	ready := healthyPods()
	notReady := []corev1.Pod{runningPod("web-a", runningNotReady), runningPod("web-b", runningNotReady)}
	runCheckTable(t, EndpointsCheck, selfhealv1alpha1.CheckEndpoints, []checkCase{
		{name: "ready endpoints", snap: snapshot(ready), result: pass, message: []string{"2 ready endpoints"}, evidence: []string{"endpointslice web-x7k2p: 2 endpoints"}},
		{name: "none ready", snap: snapshot(notReady), result: fail, message: []string{"no ready endpoints (2 not ready)"}, evidence: []string{"not ready: web-a (10.244.1.17)"}},
		{name: "some ready", snap: snapshot([]corev1.Pod{runningPod("web-a"), runningPod("web-b", runningNotReady)}), result: warn,
			message: []string{"1 ready and 1 not ready"}},
		{name: "pods ready but no slices", snap: snapshot(ready, func(s *Snapshot) { s.EndpointSlices = nil }), result: fail,
			message: []string{"no ready endpoints although 2 of its pods are ready"}},
		{name: "slice with no endpoints", snap: snapshot(ready, func(s *Snapshot) { s.EndpointSlices[0].Endpoints = nil }), result: fail},
		{name: "unset ready condition counts as ready", snap: snapshot(ready, func(s *Snapshot) {
			for i := range s.EndpointSlices[0].Endpoints {
				s.EndpointSlices[0].Endpoints[i].Conditions = discoveryv1.EndpointConditions{}
			}
		}), result: pass},
		{name: "dual stack slices are not double counted", snap: snapshot(ready, func(s *Snapshot) {
			v6 := sliceFor(ready...)
			v6.Name, v6.AddressType = "web-v6", discoveryv1.AddressTypeIPv6
			s.EndpointSlices = append(s.EndpointSlices, v6)
		}), result: pass, message: []string{"has 2 ready endpoints"}},
		{name: "selector matches no pods", snap: snapshot(nil, func(s *Snapshot) { s.EndpointSlices = nil }), result: fail,
			message: []string{"selector app=web of service web matches no pods"}},
		{name: "no selector, manual endpoints", snap: snapshot(nil, func(s *Snapshot) {
			s.Service.Spec.Selector = nil
			s.EndpointSlices = []discoveryv1.EndpointSlice{{ObjectMeta: metav1.ObjectMeta{Name: "web-1"}, AddressType: discoveryv1.AddressTypeIPv4,
				Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"192.168.10.4"}}}}}
		}), result: pass, message: []string{"no selector", "1 ready endpoints"}},
		{name: "no selector, nothing ready", snap: snapshot(nil, func(s *Snapshot) { s.Service.Spec.Selector = nil; s.EndpointSlices = nil }),
			result: fail, message: []string{"no selector and no ready endpoints"}},
		{name: "external name", snap: snapshot(nil, func(s *Snapshot) { s.Service.Spec.Type = corev1.ServiceTypeExternalName }), result: skipped},
		{name: "service not found", snap: notFoundSnapshot(), result: skipped},
	})
}

func TestPodLogsCheck(t *testing.T) {
	crashing := []corev1.Pod{runningPod("web-a", crashLooping(1, "Error", 4))}
	goLog := []string{
		`{"level":"info","msg":"starting server","addr":":8080"}`,
		`{"level":"info","msg":"connecting to database","dsn":"postgres://app:[REDACTED]@db:5432/app"}`,
		`{"level":"error","msg":"dial tcp 10.96.3.4:5432: connect: connection refused"}`,
		`{"level":"fatal","msg":"cannot start without database"}`,
	}
	runCheckTable(t, PodLogsCheck, selfhealv1alpha1.CheckPodLogs, []checkCase{
		{name: "no logs read", snap: snapshot(healthyPods()), result: skipped, message: []string{"no logs were read"}},
		{name: "error lines", snap: snapshot(crashing, func(s *Snapshot) {
			s.Logs = []ContainerLog{
				{Pod: "web-a", Container: "app", Lines: []string{"waiting"}},
				{Pod: "web-a", Container: "app", Previous: true, Lines: goLog},
			}
		}), result: fail, message: []string{"Error lines found in 1 of 2 container logs"},
			evidence: []string{"web-a/app (previous): {\"level\":\"error\"", "connection refused", "cannot start without database"}},
		{name: "clean logs", snap: snapshot(crashing, func(s *Snapshot) {
			s.Logs = []ContainerLog{{Pod: "web-a", Container: "app", Previous: true, Lines: []string{"starting", "listening on :8080"}}}
		}), result: pass, message: []string{"No error lines"}},
		{name: "unreadable logs are skipped, not failed", snap: snapshot(crashing, func(s *Snapshot) {
			s.Logs = []ContainerLog{{Pod: "web-a", Container: "app", Err: `pods "web-a" does not have a host assigned`}}
		}), result: skipped, message: []string{"logs could not be read", "does not have a host assigned"}},
		{name: "some unreadable", snap: snapshot(crashing, func(s *Snapshot) {
			s.Logs = []ContainerLog{
				{Pod: "web-a", Container: "app", Previous: true, Err: "previous terminated container not found"},
				{Pod: "web-a", Container: "app", Lines: []string{"panic: runtime error: invalid memory address"}},
			}
		}), result: fail, evidence: []string{"unreadable web-a/app (previous)", "panic: runtime error"}},
		{name: "long lines are truncated", snap: snapshot(crashing, func(s *Snapshot) {
			s.Logs = []ContainerLog{{Pod: "web-a", Container: "app", Lines: []string{"error: " + strings.Repeat("x", 5000)}}}
		}), result: fail},
		{name: "service not found", snap: notFoundSnapshot(), result: skipped},
	})
}

func TestErrorWindow(t *testing.T) {
	lines := []string{
		"boot", "error: first", "ok 1", "ok 2", "ok 3", "ok 4",
		"WARN retry", "error: second", "ok 5", "ok 6", "panic: boom", "goroutine 1 [running]:",
	}
	got := ErrorWindow(lines, 2, 1)
	want := []string{"WARN retry", "error: second", "ok 5", "ok 6", "panic: boom", "goroutine 1 [running]:"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("window of the last 2 matches:\n got %q\nwant %q", got, want)
	}
	got = ErrorWindow(lines, 5, 0)
	want = []string{"error: first", "…", "error: second", "…", "panic: boom"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("all matches without context:\n got %q\nwant %q", got, want)
	}
	if got := ErrorWindow([]string{"all good", "still good"}, 5, 1); got != nil {
		t.Errorf("no matches should give nil, got %q", got)
	}
	klog := []string{"I0301 12:00:00.000000 1 main.go:10] started", "E0301 12:00:01.000000 1 main.go:20] lost leader"}
	if got := ErrorWindow(klog, 1, 0); len(got) != 1 || !strings.Contains(got[0], "lost leader") {
		t.Errorf("klog error line not found: %q", got)
	}
}

func TestDeploymentConfigCheck(t *testing.T) {
	runCheckTable(t, DeploymentConfigCheck, selfhealv1alpha1.CheckDeploymentConfig, []checkCase{
		{name: "healthy", snap: snapshot(healthyPods()), result: pass, evidence: []string{"condition Available=True reason MinimumReplicasAvailable"}},
		{name: "scaled to zero", snap: snapshot(nil, func(s *Snapshot) { scaledToZero(s.Deployment) }), result: fail,
			message: []string{"Deployment web is scaled to zero replicas"}},
		{name: "paused", snap: snapshot(healthyPods(), func(s *Snapshot) { paused(s.Deployment) }), result: warn, message: []string{"paused"}},
		{name: "progress deadline exceeded", snap: snapshot(nil, func(s *Snapshot) { deadlineExceeded(s.Deployment) }), result: fail,
			message:  []string{"exceeded its progress deadline", `"web-6f8d4c7b9" has timed out progressing`, "2 of 2 replicas unavailable"},
			evidence: []string{"condition Progressing=False reason ProgressDeadlineExceeded"}},
		{name: "unavailable replicas", snap: snapshot(nil, func(s *Snapshot) { unavailable(s.Deployment) }), result: warn,
			message: []string{"2 of 2 replicas unavailable"}},
		{name: "selector mismatch", snap: snapshot(nil, func(s *Snapshot) {
			s.Deployment = webDeployment(templateLabels(map[string]string{"app": "web-v2"}))
		}), result: fail, message: []string{"selector app=web of service web does not match the pod template labels of Deployment web"}},
		{name: "requested workload missing", snap: snapshot(nil, func(s *Snapshot) {
			s.Target.Workload = &selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: "api"}
			s.Workload, s.Deployment = nil, nil
		}), result: fail, message: []string{"Deployment api named by the request does not exist"}},
		{name: "no workload", snap: snapshot(nil, func(s *Snapshot) { s.Workload, s.Deployment = nil, nil }), result: skipped},
		{name: "statefulset not ready", snap: snapshot(nil, func(s *Snapshot) {
			s.Deployment = nil
			s.Workload = &selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadStatefulSet, Name: "db"}
			s.StatefulSet = statefulSet(3, 1)
		}), result: warn, message: []string{"StatefulSet db has 1 of 3 replicas ready"}},
		{name: "service not found", snap: notFoundSnapshot(), result: skipped},
	})
}

func TestResourceLimitsCheck(t *testing.T) {
	runCheckTable(t, ResourceLimitsCheck, selfhealv1alpha1.CheckResourceLimits, []checkCase{
		{name: "limits set", snap: snapshot(healthyPods()), result: pass, message: []string{"All 1 containers have memory and CPU limits"}},
		{name: "OOMKilled without crashloop", snap: snapshot([]corev1.Pod{runningPod("web-a", oomKilledOnce), runningPod("web-b")}), result: fail,
			message: []string{"Container app of pod web-a was OOMKilled (memory limit 256Mi)"}, evidence: []string{"pod web-a container app restarts: 1"}},
		{name: "OOMKilled crashloop", snap: snapshot([]corev1.Pod{runningPod("web-a", crashLooping(137, "OOMKilled", 6))}), result: fail,
			message: []string{"OOMKilled"}, evidence: []string{"restarts: 6"}},
		{name: "no limits in template", snap: snapshot(healthyPods(), func(s *Snapshot) {
			s.Deployment.Spec.Template.Spec.Containers[0].Resources.Limits = nil
		}), result: warn, message: []string{"Containers without memory or CPU limits: app"}, evidence: []string{"has no memory or cpu limit"}},
		{name: "no limits, no workload: from pods", snap: snapshot([]corev1.Pod{runningPod("web-a", noLimits)}, func(s *Snapshot) {
			s.Workload, s.Deployment = nil, nil
		}), result: warn, evidence: []string{"pods container app has no memory or cpu limit"}},
		{name: "nothing to read", snap: snapshot(nil, func(s *Snapshot) { s.Workload, s.Deployment = nil, nil }), result: skipped},
	})
}

func TestFailedPodsCheck(t *testing.T) {
	runCheckTable(t, FailedPodsCheck, selfhealv1alpha1.CheckFailedPods, []checkCase{
		{name: "none", snap: snapshot(healthyPods()), result: pass},
		{name: "evicted pods", snap: snapshot(append(healthyPods(), runningPod("web-old1", evicted), runningPod("web-old2", evicted))), result: warn,
			message: []string{"2 pods of service web are in phase Failed"}, evidence: []string{"pod web-old1: Evicted: The node was low on resource: memory."}},
		{name: "service not found", snap: notFoundSnapshot(), result: skipped},
	})
}

func TestResourceUsageCheck(t *testing.T) {
	usage := func(mem, cpu string) func(*Snapshot) {
		return func(s *Snapshot) {
			s.Usage = Usage{Available: true, Containers: []ContainerUsage{{Pod: "web-5d7c9b8f4-abcde", Container: "app",
				CPU: resource.MustParse(cpu), Memory: resource.MustParse(mem)}}}
		}
	}
	runCheckTable(t, ResourceUsageCheck, selfhealv1alpha1.CheckResourceUsage, []checkCase{
		{name: "not available", snap: snapshot(healthyPods()), result: skipped, message: []string{"skipped: metrics API not available"}},
		{name: "read failed", snap: snapshot(healthyPods(), func(s *Snapshot) { s.Usage.Err = "the server is currently unable to handle the request" }),
			result: skipped, message: []string{"skipped: metrics API not available: the server is currently unable"}},
		{name: "below limits", snap: snapshot(healthyPods(), usage("64Mi", "50m")), result: pass,
			evidence: []string{"memory 64Mi (25% of limit 256Mi)", "cpu 10% of limit 500m"}},
		{name: "memory near limit", snap: snapshot(healthyPods(), usage("250Mi", "50m")), result: warn, message: []string{"web-5d7c9b8f4-abcde/app memory"}},
		{name: "cpu at limit", snap: snapshot(healthyPods(), usage("64Mi", "500m")), result: warn, message: []string{"app cpu"}},
		{name: "no usage items", snap: snapshot(healthyPods(), func(s *Snapshot) { s.Usage = Usage{Available: true} }), result: skipped},
	})
}

func TestNetworkPolicyCheck(t *testing.T) {
	with := func(policies ...networkingv1.NetworkPolicy) func(*Snapshot) {
		return func(s *Snapshot) { s.NetworkPolicies = policies }
	}
	otherNS := networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}}
	egressOnly := defaultDeny()
	egressOnly.Name, egressOnly.Spec.PolicyTypes = "egress-only", []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	otherApp := defaultDeny()
	otherApp.Name, otherApp.Spec.PodSelector = "db-deny", metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}
	ipOnly := allowFrom("allow-cidr", networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}}, intstr.FromInt32(8080))
	sameNSPods := allowFrom("allow-frontend", networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "frontend"}}}, intstr.FromInt32(8080))
	rangePolicy := allowFrom("allow-range", gatewayPeer(), intstr.FromInt32(8000))
	rangePolicy.Spec.Ingress[0].Ports[0].EndPort = ptr.To[int32](8100)
	exprPolicy := allowFrom("allow-expr", networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{"platform", "sre"}}}}}, intstr.FromString("http"))
	allowAll := defaultDeny()
	allowAll.Name, allowAll.Spec.Ingress = "allow-all", []networkingv1.NetworkPolicyIngressRule{{}}

	runCheckTable(t, NetworkPolicyCheck, selfhealv1alpha1.CheckNetworkPolicy, []checkCase{
		{name: "no policies", snap: snapshot(healthyPods()), result: pass, message: []string{"No ingress NetworkPolicy selects"}},
		{name: "default deny blocks", snap: snapshot(healthyPods(), with(defaultDeny())), result: fail,
			message: []string{"NetworkPolicy default-deny selects the pods of service web and does not admit namespace selfheal-system labels app.kubernetes.io/name=selfheal on port 80/TCP (target port 8080)"}},
		{name: "deny plus allow for gateway", snap: snapshot(healthyPods(), with(defaultDeny(), allowFrom("allow-gateway", gatewayPeer(), intstr.FromInt32(8080)))),
			result: pass, message: []string{"allow-gateway,default-deny", "admit namespace selfheal-system"}},
		{name: "allow by named port", snap: snapshot(healthyPods(), with(defaultDeny(), allowFrom("allow-gateway", gatewayPeer(), intstr.FromString("http")))),
			result: pass},
		{name: "allow on the wrong port", snap: snapshot(healthyPods(), with(defaultDeny(), allowFrom("allow-gateway", gatewayPeer(), intstr.FromInt32(9090)))),
			result: fail, message: []string{"NetworkPolicies allow-gateway,default-deny select the pods of service web and none admits", "on port 80/TCP (target port 8080)"}},
		{name: "allow other namespace only", snap: snapshot(healthyPods(), with(allowFrom("allow-monitoring", otherNS, intstr.FromInt32(8080)))),
			result: fail, message: []string{"NetworkPolicy allow-monitoring"}},
		{name: "gateway labels do not match", snap: snapshot(healthyPods(), with(allowFrom("allow-gateway", gatewayPeer(), intstr.FromInt32(8080))), func(s *Snapshot) {
			s.Caller.Labels = map[string]string{"app.kubernetes.io/name": "other"}
		}), result: fail},
		{name: "ipBlock cannot admit by label", snap: snapshot(healthyPods(), with(ipOnly)), result: fail, message: []string{"allow-cidr"}},
		{name: "podSelector peer is same namespace only", snap: snapshot(healthyPods(), with(sameNSPods), func(s *Snapshot) {
			s.Caller = Caller{Namespace: testNS, Labels: map[string]string{"app": "frontend"}}
		}), result: pass},
		{name: "podSelector peer from another namespace", snap: snapshot(healthyPods(), with(sameNSPods)), result: fail},
		{name: "port range", snap: snapshot(healthyPods(), with(rangePolicy)), result: pass},
		{name: "namespace expression selector", snap: snapshot(healthyPods(), with(exprPolicy), func(s *Snapshot) {
			s.Caller.NamespaceLabels = map[string]string{"team": "sre"}
		}), result: pass},
		{name: "egress-only policy does not isolate ingress", snap: snapshot(healthyPods(), with(egressOnly)), result: pass},
		{name: "policy for other pods", snap: snapshot(healthyPods(), with(otherApp)), result: pass},
		{name: "empty rule admits everything", snap: snapshot(healthyPods(), with(defaultDeny(), allowAll)), result: pass},
		{name: "unknown caller", snap: snapshot(healthyPods(), with(allowFrom("allow-gateway", gatewayPeer(), intstr.FromInt32(8080))), func(s *Snapshot) {
			s.Caller = Caller{}
		}), result: warn, message: []string{"no caller was given"}},
		{name: "no pods: template labels are used", snap: snapshot(nil, with(defaultDeny()), func(s *Snapshot) { scaledToZero(s.Deployment) }),
			result: fail, message: []string{"default-deny"}},
		{name: "nothing to evaluate", snap: snapshot(nil, with(defaultDeny()), func(s *Snapshot) { s.Workload, s.Deployment = nil, nil }), result: skipped},
		{name: "caller port selects one of two service ports", snap: snapshot(healthyPods(), with(defaultDeny(), allowFrom("allow-gateway", gatewayPeer(), intstr.FromInt32(8080))), func(s *Snapshot) {
			s.Service.Spec.Ports = append(s.Service.Spec.Ports, corev1.ServicePort{Name: "metrics", Port: 9090, TargetPort: intstr.FromInt32(9090), Protocol: corev1.ProtocolTCP})
			s.Caller.Port = 9090
		}), result: fail, message: []string{"on port 9090/TCP"}},
		{name: "one of two ports blocked", snap: snapshot(healthyPods(), with(defaultDeny(), allowFrom("allow-gateway", gatewayPeer(), intstr.FromInt32(8080))), func(s *Snapshot) {
			s.Service.Spec.Ports = append(s.Service.Spec.Ports, corev1.ServicePort{Name: "metrics", Port: 9090, TargetPort: intstr.FromInt32(9090), Protocol: corev1.ProtocolTCP})
		}), result: warn, message: []string{"not on 9090/TCP"}},
		{name: "service not found", snap: notFoundSnapshot(), result: skipped},
	})
}

func TestChecksSurviveEmptySnapshots(t *testing.T) {
	for _, s := range []*Snapshot{nil, {}, {Service: &corev1.Service{}}, {Service: webService(), Pods: []corev1.Pod{{}}}} {
		for i, check := range DefaultChecks() {
			f := check(s, s.Facts())
			assertBounded(t, f)
			if f.Check == "" {
				t.Errorf("check %d returned no check name", i)
			}
		}
		r, err := Evaluate(s, DefaultChecks()...)
		if err != nil {
			t.Fatalf("Evaluate: %v", err)
		}
		if len(r.Findings) != len(DefaultChecks()) {
			t.Errorf("%d findings, want one per check", len(r.Findings))
		}
	}
}

func TestDefaultChecksCoverEveryCheckName(t *testing.T) {
	want := []selfhealv1alpha1.CheckName{
		selfhealv1alpha1.CheckPodStatus, selfhealv1alpha1.CheckEndpoints, selfhealv1alpha1.CheckPodLogs,
		selfhealv1alpha1.CheckDeploymentConfig, selfhealv1alpha1.CheckResourceLimits, selfhealv1alpha1.CheckNetworkPolicy,
		selfhealv1alpha1.CheckFailedPods, selfhealv1alpha1.CheckResourceUsage,
	}
	s := snapshot(healthyPods())
	checks := DefaultChecks()
	if len(checks) != len(want) {
		t.Fatalf("%d default checks, want %d", len(checks), len(want))
	}
	for i, c := range checks {
		if got := c(s, s.Facts()).Check; got != want[i] {
			t.Errorf("check %d is %s, want %s", i, got, want[i])
		}
	}
}
