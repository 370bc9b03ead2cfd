package remediation

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/diagnostics"
)

func TestVerify(t *testing.T) {
	readyPod := testPod("mcp-files-6f7b9c-a1", corev1.PodRunning, true)
	notReadyPod := testPod("mcp-files-6f7b9c-b2", corev1.PodRunning, false)
	healthy := func(dep *appsv1.Deployment) *diagnostics.Snapshot {
		s := deploymentSnapshot(dep, readyPod)
		s.EndpointSlices = []discoveryv1.EndpointSlice{endpointSlice(endpoint(readyPod.Name, true))}
		return s
	}
	mod := func(f func(d *appsv1.Deployment)) *diagnostics.Snapshot {
		d := testDeployment(3)
		f(d)
		return healthy(d)
	}

	tests := []struct {
		name     string
		snap     *diagnostics.Snapshot
		done     bool
		contains string
	}{
		{"rollout complete and a ready endpoint", healthy(testDeployment(3)), true, "1 ready endpoints"},
		{"nil snapshot", nil, false, "no observation"},
		{"service gone", func() *diagnostics.Snapshot { s := healthy(testDeployment(1)); s.Service = nil; return s }(), false, "not found"},
		{"deployment gone", func() *diagnostics.Snapshot { s := healthy(testDeployment(1)); s.Deployment = nil; return s }(), false, `deployment "mcp-files" not found`},
		{"generation not observed", mod(func(d *appsv1.Deployment) { d.Generation = 4 }), false, "observe generation 4"},
		{"pods not updated", mod(func(d *appsv1.Deployment) { d.Status.UpdatedReplicas = 1 }), false, "1/3 pods updated"},
		{"pods not available", mod(func(d *appsv1.Deployment) { d.Status.AvailableReplicas = 2 }), false, "2/3 pods available"},
		{"scaled to zero", func() *diagnostics.Snapshot { return healthy(testDeployment(0)) }(), false, "scaled to 0"},
		{"progress deadline exceeded", mod(func(d *appsv1.Deployment) {
			d.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing,
				Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded"}}
		}), false, "progress deadline"},
		{"old replicas still terminating do not block", mod(func(d *appsv1.Deployment) { d.Status.Replicas = 4 }), true, ""},
		{"no endpoint slices", func() *diagnostics.Snapshot {
			s := healthy(testDeployment(1))
			s.EndpointSlices = nil
			return s
		}(), false, "no ready endpoints yet"},
		{"endpoint not ready", func() *diagnostics.Snapshot {
			s := healthy(testDeployment(1))
			s.EndpointSlices = []discoveryv1.EndpointSlice{endpointSlice(endpoint(readyPod.Name, false))}
			return s
		}(), false, "no ready endpoints yet"},
		{"endpoint terminating", func() *diagnostics.Snapshot {
			s := healthy(testDeployment(1))
			ep := endpoint(readyPod.Name, true)
			ep.Conditions.Terminating = ptr.To(true)
			s.EndpointSlices = []discoveryv1.EndpointSlice{endpointSlice(ep)}
			return s
		}(), false, "no ready endpoints yet"},
		{"ready endpoint of a pod that is not ready", func() *diagnostics.Snapshot {
			s := deploymentSnapshot(testDeployment(1), notReadyPod)
			s.EndpointSlices = []discoveryv1.EndpointSlice{endpointSlice(endpoint(notReadyPod.Name, true))}
			return s
		}(), false, "no ready endpoints yet"},
		{"ready endpoint of an unknown pod", func() *diagnostics.Snapshot {
			s := healthy(testDeployment(1))
			s.EndpointSlices = []discoveryv1.EndpointSlice{endpointSlice(endpoint("someone-else", true))}
			return s
		}(), false, "no ready endpoints yet"},
		{"ready endpoint of a terminating pod", func() *diagnostics.Snapshot {
			p := readyPod.DeepCopy()
			p.DeletionTimestamp = &metav1.Time{}
			s := deploymentSnapshot(testDeployment(1), *p)
			s.EndpointSlices = []discoveryv1.EndpointSlice{endpointSlice(endpoint(p.Name, true))}
			return s
		}(), false, "no ready endpoints yet"},
		{"nil ready condition means ready", func() *diagnostics.Snapshot {
			s := healthy(testDeployment(1))
			ep := endpoint(readyPod.Name, true)
			ep.Conditions.Ready = nil
			s.EndpointSlices = []discoveryv1.EndpointSlice{endpointSlice(ep)}
			return s
		}(), true, ""},
		{"one ready endpoint among several suffices", func() *diagnostics.Snapshot {
			s := deploymentSnapshot(testDeployment(2), notReadyPod, readyPod)
			s.Deployment.Status.AvailableReplicas = 2
			s.EndpointSlices = []discoveryv1.EndpointSlice{
				endpointSlice(endpoint(notReadyPod.Name, false)), endpointSlice(endpoint(readyPod.Name, true))}
			return s
		}(), true, "1 ready endpoints"},
		{"statefulset rolled", func() *diagnostics.Snapshot {
			s := statefulSetSnapshot(testStatefulSet(1), readyPod)
			s.EndpointSlices = []discoveryv1.EndpointSlice{endpointSlice(endpoint(readyPod.Name, true))}
			return s
		}(), true, ""},
		{"statefulset revision not current", func() *diagnostics.Snapshot {
			sts := testStatefulSet(2)
			sts.Status.UpdateRevision = "mcp-files-8aa"
			s := statefulSetSnapshot(sts, readyPod)
			s.EndpointSlices = []discoveryv1.EndpointSlice{endpointSlice(endpoint(readyPod.Name, true))}
			return s
		}(), false, "revision mcp-files-8aa"},
		{"statefulset pods not ready", func() *diagnostics.Snapshot {
			sts := testStatefulSet(2)
			sts.Status.ReadyReplicas = 1
			s := statefulSetSnapshot(sts, readyPod)
			s.EndpointSlices = []discoveryv1.EndpointSlice{endpointSlice(endpoint(readyPod.Name, true))}
			return s
		}(), false, "1/2 pods ready"},
		{"statefulset pods not updated", func() *diagnostics.Snapshot {
			sts := testStatefulSet(2)
			sts.Status.UpdatedReplicas = 0
			s := statefulSetSnapshot(sts, readyPod)
			s.EndpointSlices = []discoveryv1.EndpointSlice{endpointSlice(endpoint(readyPod.Name, true))}
			return s
		}(), false, "0/2 pods updated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Verify(nil, tc.snap)
			if done := got.Outcome == VerdictHealed; done != tc.done {
				t.Fatalf("healed = %v, want %v (%s: %s)", done, tc.done, got.Outcome, got.Message)
			}
			if got.Message == "" {
				t.Error("no message")
			}
			if !strings.Contains(got.Message, tc.contains) {
				t.Errorf("message %q does not contain %q", got.Message, tc.contains)
			}
		})
	}
}

// TestVerifyJudgesTheAttempt covers every outcome of Verify for the actions of an
// attempt, on snapshots shaped as the cache shows them between the write and the
// end of the rollout.
func TestVerifyJudgesTheAttempt(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)
	stamp := RestartStamp(at)
	workload := selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: "mcp-files"}
	restart := selfhealv1alpha1.HealingAction{Type: selfhealv1alpha1.ActionRolloutRestart, Attempt: 1, Workload: workload,
		Outcome: selfhealv1alpha1.OutcomeSucceeded, StartedAt: metav1.NewMicroTime(at)}
	scale := selfhealv1alpha1.HealingAction{Type: selfhealv1alpha1.ActionScaleFromZero, Attempt: 1, Workload: workload,
		Outcome: selfhealv1alpha1.OutcomeSucceeded, StartedAt: metav1.NewMicroTime(at)}
	// restarted is the Deployment once the restart is written and its rollout settled.
	restarted := func(replicas int32) *appsv1.Deployment {
		d := testDeployment(replicas)
		d.Spec.Template.Annotations = map[string]string{RestartedAtAnnotation: stamp}
		return d
	}
	// fromRestart marks a pod as created from the restarted template.
	fromRestart := func(p corev1.Pod) corev1.Pod {
		p.Annotations = map[string]string{RestartedAtAnnotation: stamp}
		return p
	}
	newReady := fromRestart(testPod("mcp-files-7a8b9c-n1", corev1.PodRunning, true))
	newCrash := fromRestart(crashLoopPod("mcp-files-7a8b9c-n1"))
	oldCrash := crashLoopPod("mcp-files-6f7b9c-o1")
	withEndpoints := func(s *diagnostics.Snapshot, eps ...discoveryv1.Endpoint) *diagnostics.Snapshot {
		s.EndpointSlices = []discoveryv1.EndpointSlice{endpointSlice(eps...)}
		return s
	}
	crashing := func(d *appsv1.Deployment) *appsv1.Deployment {
		d.Status.ReadyReplicas, d.Status.AvailableReplicas, d.Status.UnavailableReplicas = 0, 0, d.Status.Replicas
		return d
	}

	tests := []struct {
		name     string
		attempt  []selfhealv1alpha1.HealingAction
		snap     *diagnostics.Snapshot
		want     VerdictOutcome
		contains string
		issue    selfhealv1alpha1.IssueType
	}{
		{name: "restart not in the cache yet", attempt: []selfhealv1alpha1.HealingAction{restart},
			snap: withEndpoints(deploymentSnapshot(testDeployment(1), oldCrash), endpoint(oldCrash.Name, false)),
			want: VerdictUnobserved, contains: "Waiting to observe the restart of deployment/mcp-files"},
		{name: "a restart of another intent is not this one", attempt: []selfhealv1alpha1.HealingAction{restart},
			snap: func() *diagnostics.Snapshot {
				d := testDeployment(1)
				d.Spec.Template.Annotations = map[string]string{RestartedAtAnnotation: RestartStamp(at.Add(-time.Second))}
				return deploymentSnapshot(d, newReady)
			}(),
			want: VerdictUnobserved, contains: "restart"},
		{name: "scale-up not in the cache yet", attempt: []selfhealv1alpha1.HealingAction{scale},
			snap: deploymentSnapshot(testDeployment(0)), want: VerdictUnobserved, contains: "Waiting to observe the scale-up of deployment/mcp-files"},
		{name: "an action that failed is not waited for", attempt: []selfhealv1alpha1.HealingAction{func() selfhealv1alpha1.HealingAction {
			a := restart
			a.Outcome = selfhealv1alpha1.OutcomeFailed
			return a
		}()}, snap: withEndpoints(deploymentSnapshot(testDeployment(1), newReady), endpoint(newReady.Name, true)),
			want: VerdictHealed},
		{name: "restart observed, rollout complete, ready endpoint", attempt: []selfhealv1alpha1.HealingAction{restart},
			snap: withEndpoints(deploymentSnapshot(restarted(1), newReady), endpoint(newReady.Name, true)),
			want: VerdictHealed, contains: `service "mcp-files" has 1 ready endpoints`},
		{name: "scale-up observed and serving", attempt: []selfhealv1alpha1.HealingAction{scale},
			snap: withEndpoints(deploymentSnapshot(testDeployment(1), newReady), endpoint(newReady.Name, true)),
			want: VerdictHealed},
		{name: "nothing was done and it serves", snap: withEndpoints(deploymentSnapshot(testDeployment(1), newReady), endpoint(newReady.Name, true)),
			want: VerdictHealed},
		{name: "new pods crashloop after a settled rollout", attempt: []selfhealv1alpha1.HealingAction{restart},
			snap: withEndpoints(deploymentSnapshot(crashing(restarted(1)), newCrash), endpoint(newCrash.Name, false)),
			want: VerdictAttemptFailed, contains: "0/1 pods available", issue: selfhealv1alpha1.IssueCrashLoopBackOff},
		{name: "new pods cannot pull their image", attempt: []selfhealv1alpha1.HealingAction{restart},
			snap: deploymentSnapshot(crashing(restarted(1)), fromRestart(imagePullPod("mcp-files-7a8b9c-n1"))),
			want: VerdictAttemptFailed, issue: selfhealv1alpha1.IssueImagePullBackOff},
		{name: "scaled to zero again after the restart", attempt: []selfhealv1alpha1.HealingAction{restart},
			snap: deploymentSnapshot(restarted(0)), want: VerdictAttemptFailed, contains: "scaled to 0", issue: selfhealv1alpha1.IssueNoPods},
		{name: "an old crashlooping pod is still listed", attempt: []selfhealv1alpha1.HealingAction{restart},
			snap: deploymentSnapshot(crashing(restarted(1)), oldCrash, newCrash), want: VerdictWaiting, issue: selfhealv1alpha1.IssueCrashLoopBackOff},
		{name: "an old pod on its way out does not hold the verdict", attempt: []selfhealv1alpha1.HealingAction{restart},
			snap: deploymentSnapshot(crashing(restarted(1)), func() corev1.Pod {
				p := oldCrash.DeepCopy()
				p.DeletionTimestamp = &metav1.Time{Time: at}
				return *p
			}(), newCrash), want: VerdictAttemptFailed, issue: selfhealv1alpha1.IssueCrashLoopBackOff},
		{name: "rollout still replacing pods", attempt: []selfhealv1alpha1.HealingAction{restart},
			snap: func() *diagnostics.Snapshot {
				d := crashing(restarted(1))
				d.Status.Replicas = 2 // the old ReplicaSet's pod is still counted
				return deploymentSnapshot(d, newCrash)
			}(), want: VerdictWaiting, issue: selfhealv1alpha1.IssueCrashLoopBackOff},
		{name: "generation not observed yet", attempt: []selfhealv1alpha1.HealingAction{restart},
			snap: func() *diagnostics.Snapshot {
				d := crashing(restarted(1))
				d.Generation = 4
				return deploymentSnapshot(d, newCrash)
			}(), want: VerdictWaiting, contains: "observe generation 4"},
		{name: "new pods starting: running, not ready yet", attempt: []selfhealv1alpha1.HealingAction{restart},
			snap: deploymentSnapshot(crashing(restarted(1)), fromRestart(testPod("mcp-files-7a8b9c-n1", corev1.PodRunning, false))),
			want: VerdictWaiting, issue: selfhealv1alpha1.IssueNoReadyPods},
		{name: "ready pods, endpoints not published yet", attempt: []selfhealv1alpha1.HealingAction{restart},
			snap: deploymentSnapshot(restarted(1), newReady), want: VerdictWaiting, contains: "no ready endpoints yet", issue: selfhealv1alpha1.IssueEndpointsMissing},
		{name: "no pods yet although replicas are wanted", attempt: []selfhealv1alpha1.HealingAction{scale},
			snap: deploymentSnapshot(crashing(testDeployment(1))), want: VerdictWaiting, issue: selfhealv1alpha1.IssueNoPods},
		{name: "statefulset pods crashloop after its rollout", attempt: []selfhealv1alpha1.HealingAction{{Type: selfhealv1alpha1.ActionRolloutRestart, Attempt: 1,
			Workload: selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadStatefulSet, Name: "mcp-files"}, Outcome: selfhealv1alpha1.OutcomeSucceeded, StartedAt: metav1.NewMicroTime(at)}},
			snap: func() *diagnostics.Snapshot {
				sts := testStatefulSet(1)
				sts.Spec.Template.Labels = appLabels
				sts.Spec.Template.Annotations = map[string]string{RestartedAtAnnotation: stamp}
				sts.Status.ReadyReplicas, sts.Status.AvailableReplicas = 0, 0
				return statefulSetSnapshot(sts, newCrash)
			}(), want: VerdictAttemptFailed, contains: "0/1 pods ready", issue: selfhealv1alpha1.IssueCrashLoopBackOff},
		{name: "service gone", attempt: []selfhealv1alpha1.HealingAction{restart},
			snap: func() *diagnostics.Snapshot {
				s := deploymentSnapshot(restarted(1), newReady)
				s.Service = nil
				return s
			}(), want: VerdictAttemptFailed, contains: "not found", issue: selfhealv1alpha1.IssueTargetNotFound},
		{name: "no observation", snap: nil, want: VerdictWaiting, contains: "no observation"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Verify(tc.attempt, tc.snap)
			if got.Outcome != tc.want {
				t.Fatalf("outcome = %s, want %s (message %q, issue %s: %s)", got.Outcome, tc.want, got.Message, got.Issue, got.Summary)
			}
			if got.Message == "" || !strings.Contains(got.Message, tc.contains) {
				t.Errorf("message %q does not contain %q", got.Message, tc.contains)
			}
			if tc.issue != "" && got.Issue != tc.issue {
				t.Errorf("issue = %s, want %s", got.Issue, tc.issue)
			}
			if got.Outcome == VerdictAttemptFailed && got.Summary == "" {
				t.Error("a failed attempt carries no summary of its failure")
			}
		})
	}
}

func TestActionsOfAttempt(t *testing.T) {
	actions := []selfhealv1alpha1.HealingAction{
		{Type: selfhealv1alpha1.ActionRolloutRestart, Attempt: 1}, {Type: selfhealv1alpha1.ActionDeleteFailedPods, Attempt: 2},
		{Type: selfhealv1alpha1.ActionRolloutRestart, Attempt: 2}, {Type: selfhealv1alpha1.ActionScaleFromZero, Attempt: 3, Outcome: selfhealv1alpha1.OutcomeDryRun},
	}
	got := ActionsOfAttempt(actions, 2)
	if len(got) != 2 || got[0].Type != selfhealv1alpha1.ActionDeleteFailedPods || got[1].Type != selfhealv1alpha1.ActionRolloutRestart {
		t.Errorf("ActionsOfAttempt(2) = %+v", got)
	}
	if got := ActionsOfAttempt(actions, 0); len(got) != 0 {
		t.Errorf("ActionsOfAttempt(0) = %+v, want none", got)
	}
}
