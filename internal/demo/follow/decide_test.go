package follow

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// A sequence of ready-pod sets, as the EndpointSlices show them, and the action
// each step must take.
func TestDecide(t *testing.T) {
	type step struct {
		ready []string
		want  action
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"first sync with no pods stops", []step{{nil, actStop}, {nil, actNone}}},
		{"first sync with pods starts", []step{{[]string{"a"}, actStart}, {[]string{"a"}, actNone}}},
		{"scaled to zero and back", []step{{[]string{"a"}, actStart}, {nil, actStop}, {[]string{"b"}, actStart}}},
		{"rollout restart of one replica restarts when the new pod is ready", []step{
			{[]string{"a"}, actStart}, {[]string{"a", "b"}, actRestart}, {[]string{"b"}, actNone}, {[]string{"b"}, actNone},
		}},
		{"rollout restart of two replicas restarts for each new pod", []step{
			{[]string{"a", "b"}, actStart}, {[]string{"a", "b", "c"}, actRestart}, {[]string{"b", "c"}, actNone},
			{[]string{"b", "c", "d"}, actRestart}, {[]string{"c", "d"}, actNone}, {[]string{"c", "d"}, actNone},
		}},
		{"losing one of two pods is not a restart", []step{{[]string{"a", "b"}, actStart}, {[]string{"b"}, actNone}}},
		{"a pod replaced while no endpoint is ready is a stop and a start", []step{
			{[]string{"a"}, actStart}, {nil, actStop}, {[]string{"a"}, actStart},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d decision
			synced := false
			for i, s := range tc.steps {
				var got action
				d, got = decide(d, synced, s.ready)
				synced = true
				if got != s.want {
					t.Fatalf("step %d (ready %v): action %d, want %d", i, s.ready, got, s.want)
				}
				if d.serving != (len(s.ready) > 0) {
					t.Fatalf("step %d: serving %v with ready %v", i, d.serving, s.ready)
				}
			}
		})
	}
}

func TestReadyPods(t *testing.T) {
	ep := func(uid string, ready, terminating *bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{
			Addresses:  []string{"10.244.0." + uid},
			Conditions: discoveryv1.EndpointConditions{Ready: ready, Terminating: terminating},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", UID: types.UID(uid)},
		}
	}
	slices := []*discoveryv1.EndpointSlice{
		{Endpoints: []discoveryv1.Endpoint{ep("2", ptr.To(true), nil), ep("1", nil, nil), ep("3", ptr.To(false), nil)}},
		{Endpoints: []discoveryv1.Endpoint{ep("2", ptr.To(true), nil), ep("4", ptr.To(true), ptr.To(true)),
			{Addresses: []string{"10.0.0.9"}}}},
	}
	got := readyPods(slices)
	want := []string{"1", "10.0.0.9", "2"}
	if len(got) != len(want) {
		t.Fatalf("ready pods %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ready pods %v, want %v", got, want)
		}
	}
}
