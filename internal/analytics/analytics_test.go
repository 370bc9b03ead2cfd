package analytics

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

func policy(ns string, o *selfhealv1alpha1.Outcomes) selfhealv1alpha1.HealingPolicy {
	p := selfhealv1alpha1.HealingPolicy{}
	p.Namespace, p.Name = ns, "policy"
	p.Status.Outcomes = o
	return p
}

func TestSummarize(t *testing.T) {
	at := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	a := policy("a", &selfhealv1alpha1.Outcomes{Healings: 3, Healed: 2,
		ByIssue: []selfhealv1alpha1.IssueActionOutcomes{
			{Issue: "CrashLoopBackOff", Action: "RolloutRestart", Healings: 2, Healed: 1, TimeToHealSeconds: 3, TimeToHealBuckets: []int64{1, 0, 0, 0, 0, 0, 0, 0, 0}},
			{Issue: "NoPods", Action: "ScaleUp", Healings: 1, Healed: 1, TimeToHealSeconds: 1, TimeToHealBuckets: []int64{1, 0, 0, 0, 0, 0, 0, 0, 0}},
		},
		TopServices: []selfhealv1alpha1.ServiceOutcomes{{Service: "mcp", Healings: 2, Healed: 1}, {Service: "db", Healings: 1, Healed: 1}},
		ManualInterventions: []selfhealv1alpha1.ManualIntervention{
			{Request: "r1", Service: "mcp", Reason: "OOMKilled", At: at},
			{Request: "r0", Service: "db", Reason: "X", At: at, ResolvedAt: &at},
		},
	})
	b := policy("b", &selfhealv1alpha1.Outcomes{Healings: 1,
		ByIssue:     []selfhealv1alpha1.IssueActionOutcomes{{Issue: "CrashLoopBackOff", Healings: 1}},
		TopServices: []selfhealv1alpha1.ServiceOutcomes{{Service: "other", Healings: 1}}})
	notLedger := policy("b", nil)

	s := Summarize([]selfhealv1alpha1.HealingPolicy{a, b, notLedger}, nil)
	if s.Healings != 4 || s.Healed != 2 || s.SuccessRate != 50 || s.AvgTimeToHealSeconds != 2 {
		t.Fatalf("totals: %+v", s)
	}
	if len(s.ByIssue) != 2 || s.ByIssue[0].Issue != "CrashLoopBackOff" || s.ByIssue[0].Healings != 3 || s.ByIssue[0].Healed != 1 ||
		s.ByIssue[0].AvgTimeToHealSeconds != 3 || s.ByIssue[1].SuccessRate != 100 {
		t.Fatalf("by issue: %+v", s.ByIssue)
	}
	if s.TimeToHealBuckets[0] != 2 || len(s.TimeToHealBucketBounds) != len(s.TimeToHealBuckets)-1 {
		t.Fatalf("buckets: %v %v", s.TimeToHealBuckets, s.TimeToHealBucketBounds)
	}
	if len(s.TopServices) != 3 || s.TopServices[0].Service != "mcp" || s.TopServices[0].Namespace != "a" {
		t.Fatalf("top services: %+v", s.TopServices)
	}
	if s.ManualWaiting != 1 || s.Manual[0].Request != "r1" {
		t.Fatalf("manual: %d %+v", s.ManualWaiting, s.Manual)
	}
	want := "analytics: 4 healings, 50% healed, avg time to heal 2s, top service mcp (2), manual interventions waiting 1"
	if got := s.Line(); got != want {
		t.Fatalf("line:\n got %s\nwant %s", got, want)
	}

	// A viewer scoped to namespace a's Service db sees a's totals but not mcp.
	scoped := Summarize([]selfhealv1alpha1.HealingPolicy{a, b}, func(ns, svc string) bool { return ns == "a" && (svc == "" || svc == "db") })
	if scoped.Healings != 3 || len(scoped.TopServices) != 1 || scoped.TopServices[0].Service != "db" || scoped.ManualWaiting != 0 {
		t.Fatalf("scoped: %+v", scoped)
	}
}

func TestLineWithoutHealings(t *testing.T) {
	if got, want := Summarize(nil, nil).Line(), "analytics: 0 healings, manual interventions waiting 0"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	s := Summary{Healings: 3, Healed: 3, SuccessRate: 100, AvgTimeToHealSeconds: 2.0 / 3}
	if got, want := s.Line(), "analytics: 3 healings, 100% healed, avg time to heal 0.7s, manual interventions waiting 0"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	// Times to heal are recorded in whole seconds: an average of 0 is under a second.
	s = Summary{Healings: 1, Healed: 1, SuccessRate: 100}
	if got, want := s.Line(), "analytics: 1 healing, 100% healed, avg time to heal <1s, manual interventions waiting 0"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
