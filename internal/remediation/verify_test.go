package remediation

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

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
			got := Verify(tc.snap)
			if got.Done != tc.done {
				t.Fatalf("Done = %v, want %v (%s)", got.Done, tc.done, got.Message)
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
