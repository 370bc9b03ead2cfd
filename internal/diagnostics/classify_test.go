package diagnostics

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

func TestClassify(t *testing.T) {
	deny := func(s *Snapshot) { s.NetworkPolicies = []networkingv1.NetworkPolicy{defaultDeny()} }
	pullPod := runningPod("web-6f8d4c7b9-zz9xq", imagePullBackOff("ghcr.io/acme/web:9.9.9"))
	tests := []struct {
		name    string
		snap    *Snapshot
		want    selfhealv1alpha1.IssueType
		summary string
	}{
		{"nil snapshot", nil, selfhealv1alpha1.IssueTargetNotFound, "does not exist"},
		{"service missing", notFoundSnapshot(), selfhealv1alpha1.IssueTargetNotFound, "Service shop/web does not exist"},
		{"healthy", snapshot(healthyPods()), selfhealv1alpha1.IssueHealthy, "healthy"},
		{"ready but the caller timed out", snapshot(healthyPods(), func(s *Snapshot) { s.Target.FailureClass = selfhealv1alpha1.FailureTimeout }),
			selfhealv1alpha1.IssueUnresponsive, "fail with Timeout"},
		{"ready but the caller got 5xx", snapshot(healthyPods(), func(s *Snapshot) { s.Target.FailureClass = selfhealv1alpha1.FailureHTTP5xx }),
			selfhealv1alpha1.IssueUnresponsive, "the pods are not serving"},
		{"ready and the connection was refused", snapshot(healthyPods(), func(s *Snapshot) { s.Target.FailureClass = selfhealv1alpha1.FailureConnectionRefused }),
			selfhealv1alpha1.IssueHealthy, "healthy"},
		{"healthy with allowing policies", snapshot(healthyPods(), func(s *Snapshot) {
			s.NetworkPolicies = []networkingv1.NetworkPolicy{defaultDeny(), allowFrom("allow-gateway", gatewayPeer(), intstr.FromString("http"))}
		}), selfhealv1alpha1.IssueHealthy, ""},
		{"policy blocks healthy pods", snapshot(healthyPods(), deny), selfhealv1alpha1.IssueNetworkPolicyBlocked, "NetworkPolicy default-deny"},
		{"policy blocks and pods crashloop", snapshot([]corev1.Pod{runningPod("web-a", crashLooping(1, "Error", 3))}, deny),
			selfhealv1alpha1.IssueNetworkPolicyBlocked, "default-deny"},
		{"image pull", snapshot([]corev1.Pod{pullPod}, func(s *Snapshot) {
			s.Events = []corev1.Event{podEvent(pullPod.Name, "Warning", "Failed", notFoundPull, -5)}
		}), selfhealv1alpha1.IssueImagePullBackOff, "not found in the registry"},
		{"image pull during rollout, old pods serving", snapshot([]corev1.Pod{runningPod("web-a"), pullPod}),
			selfhealv1alpha1.IssueImagePullBackOff, "cannot pull"},
		{"config error", snapshot([]corev1.Pod{runningPod("web-c", configError(`configmap "web-config" not found`))}),
			selfhealv1alpha1.IssueConfigError, `configmap "web-config" not found`},
		{"selector mismatch", snapshot(nil, func(s *Snapshot) {
			s.Deployment = webDeployment(templateLabels(map[string]string{"app": "web-v2"}))
			s.EndpointSlices = nil
		}), selfhealv1alpha1.IssueConfigError, "does not match the pod template labels"},
		{"requested workload missing", snapshot(nil, func(s *Snapshot) {
			s.Target.Workload = &selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: "api"}
			s.Workload, s.Deployment, s.EndpointSlices = nil, nil, nil
		}), selfhealv1alpha1.IssueConfigError, "Deployment api named by the request does not exist"},
		{"unschedulable", snapshot([]corev1.Pod{runningPod("web-p", unschedulable("0/3 nodes are available: 3 Insufficient cpu."))}),
			selfhealv1alpha1.IssueUnschedulable, "3 Insufficient cpu"},
		{"crashloop caused by OOM", snapshot([]corev1.Pod{runningPod("web-a", crashLooping(137, "OOMKilled", 4))}),
			selfhealv1alpha1.IssueOOMKilled, "OOMKilled (memory limit 256Mi)"},
		{"OOM once, running again", snapshot([]corev1.Pod{runningPod("web-a", oomKilledOnce), runningPod("web-b")}),
			selfhealv1alpha1.IssueOOMKilled, "web-a was OOMKilled"},
		{"crashloop", snapshot([]corev1.Pod{runningPod("web-a", crashLooping(1, "Error", 4)), runningPod("web-b")}),
			selfhealv1alpha1.IssueCrashLoopBackOff, "CrashLoopBackOff"},
		{"paused and crashlooping", snapshot([]corev1.Pod{runningPod("web-a", crashLooping(1, "Error", 4))}, func(s *Snapshot) { paused(s.Deployment) }),
			selfhealv1alpha1.IssueDeploymentPaused, "paused"},
		{"paused but healthy", snapshot(healthyPods(), func(s *Snapshot) { paused(s.Deployment) }), selfhealv1alpha1.IssueHealthy, ""},
		{"scaled to zero", snapshot(nil, func(s *Snapshot) { scaledToZero(s.Deployment); s.EndpointSlices = nil }),
			selfhealv1alpha1.IssueNoPods, "deployment web wants 0 replicas"},
		// A leftover pod of an old ReplicaSet, not deleted yet, is not the cause: the
		// workload wants none. Catches: reporting the leftover's ImagePullBackOff or
		// OOMKilled (not healable) instead of NoPods (healed by scaling up).
		{"scaled to zero, a leftover pod cannot pull its image", snapshot([]corev1.Pod{pullPod}, func(s *Snapshot) { scaledToZero(s.Deployment); s.EndpointSlices = nil }),
			selfhealv1alpha1.IssueNoPods, "deployment web wants 0 replicas"},
		{"scaled to zero, a leftover pod was OOMKilled", snapshot([]corev1.Pod{runningPod("web-a", crashLooping(137, "OOMKilled", 4))}, func(s *Snapshot) {
			scaledToZero(s.Deployment)
			s.EndpointSlices = nil
		}), selfhealv1alpha1.IssueNoPods, "deployment web wants 0 replicas"},
		{"only failed pods", snapshot([]corev1.Pod{runningPod("web-e", evicted)}), selfhealv1alpha1.IssueNoPods, ""},
		{"running but not ready", snapshot([]corev1.Pod{runningPod("web-a", runningNotReady), runningPod("web-b", runningNotReady)}),
			selfhealv1alpha1.IssueNoReadyPods, "running but not ready"},
		{"pending, not yet scheduled", snapshot([]corev1.Pod{func() corev1.Pod {
			p := runningPod("web-n")
			p.Spec.NodeName, p.Status = "", corev1.PodStatus{Phase: corev1.PodPending}
			return p
		}()}), selfhealv1alpha1.IssueNoReadyPods, "pending"},
		{"ready pods, no endpoints", snapshot(healthyPods(), func(s *Snapshot) { s.EndpointSlices = nil }),
			selfhealv1alpha1.IssueEndpointsMissing, "no ready endpoints although 2"},
		{"failed pods linger", snapshot(append(healthyPods(), runningPod("web-old", evicted))), selfhealv1alpha1.IssueFailedPods, "phase Failed"},
		{"no selector, manual endpoints missing", snapshot(nil, func(s *Snapshot) {
			s.Service.Spec.Selector, s.Workload, s.Deployment, s.EndpointSlices = nil, nil, nil, nil
		}), selfhealv1alpha1.IssueEndpointsMissing, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Evaluate(tt.snap, DefaultChecks()...)
			if err != nil {
				t.Fatal(err)
			}
			if r.Issue != tt.want {
				t.Errorf("issue = %s, want %s (summary %q)", r.Issue, tt.want, r.Summary)
			}
			if !strings.Contains(r.Summary, tt.summary) {
				t.Errorf("summary %q does not contain %q", r.Summary, tt.summary)
			}
			if r.Summary == "" || len(r.Summary) > MaxMessageLength {
				t.Errorf("summary length %d out of bounds", len(r.Summary))
			}
			// Without findings the issue is the same: it comes from the snapshot.
			if issue, _ := Classify(tt.snap, nil); issue != tt.want {
				t.Errorf("Classify without findings = %s, want %s", issue, tt.want)
			}
		})
	}
}

func TestEvaluateReportsPanickingCheck(t *testing.T) {
	boom := func(*Snapshot, *Facts) selfhealv1alpha1.Finding { panic("bug") }
	if _, err := Evaluate(snapshot(healthyPods()), PodStatusCheck, boom); err == nil || !strings.Contains(err.Error(), "check 1: panicked: bug") {
		t.Fatalf("err = %v, want the panic reported as an error", err)
	}
}

func TestEvaluateBoundsCustomFindings(t *testing.T) {
	noisy := func(*Snapshot, *Facts) selfhealv1alpha1.Finding {
		ev := make([]string, 25)
		for i := range ev {
			ev[i] = strings.Repeat("é", 400)
		}
		return selfhealv1alpha1.Finding{Check: selfhealv1alpha1.CheckPodLogs, Result: fail, Message: strings.Repeat("m", 5000), Evidence: ev}
	}
	r, err := Evaluate(snapshot(healthyPods()), noisy)
	if err != nil {
		t.Fatal(err)
	}
	f := r.Findings[0]
	assertBounded(t, f)
	if got := f.Evidence[MaxEvidenceItems-1]; got != "… and 16 more" {
		t.Errorf("last evidence item = %q", got)
	}
	for _, e := range f.Evidence {
		if !strings.HasSuffix(e, "…") && !strings.HasPrefix(e, "…") {
			t.Errorf("long item not marked as truncated: %q", e)
		}
	}
}

// BenchmarkEvaluate runs every check and the classifier over a Service with 200 pods:
// crashlooping, OOMKilled, evicted and healthy ones, logs, events and policies.
func BenchmarkEvaluate(b *testing.B) {
	var pods []corev1.Pod
	pods = append(pods, manyPods(120)...)
	for _, p := range manyPods(40, crashLooping(1, "Error", 7)) {
		p.Name += "-crash"
		pods = append(pods, p)
	}
	for _, p := range manyPods(20, oomKilledOnce) {
		p.Name += "-oom"
		pods = append(pods, p)
	}
	for _, p := range manyPods(20, evicted) {
		p.Name += "-evicted"
		pods = append(pods, p)
	}
	s := snapshot(pods, func(s *Snapshot) {
		s.NetworkPolicies = []networkingv1.NetworkPolicy{defaultDeny(), allowFrom("allow-gateway", gatewayPeer(), intstr.FromString("http"))}
		for i := 0; i < 50; i++ {
			s.Events = append(s.Events, podEvent(pods[120+i%40].Name, "Warning", "BackOff", "Back-off restarting failed container app", 0))
		}
		lines := make([]string, 200)
		for i := range lines {
			lines[i] = `{"level":"info","msg":"request served","path":"/v1/tools","status":200}`
			if i%25 == 0 {
				lines[i] = `{"level":"error","msg":"upstream connection refused"}`
			}
		}
		s.Logs = []ContainerLog{{Pod: pods[120].Name, Container: "app", Previous: true, Lines: lines}, {Pod: pods[121].Name, Container: "app", Lines: lines}}
	})
	checks := DefaultChecks()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		// A new Snapshot each time, so the facts are derived each time too.
		fresh := &Snapshot{Target: s.Target, Caller: s.Caller, GatheredAt: s.GatheredAt, Service: s.Service,
			Workload: s.Workload, Deployment: s.Deployment, Pods: s.Pods, EndpointSlices: s.EndpointSlices,
			Events: s.Events, Logs: s.Logs, NetworkPolicies: s.NetworkPolicies, Usage: s.Usage}
		r, err := Evaluate(fresh, checks...)
		if err != nil || r.Issue != selfhealv1alpha1.IssueOOMKilled {
			b.Fatalf("issue %v, err %v", r, err)
		}
	}
}
