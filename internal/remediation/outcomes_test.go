package remediation

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// finished is a terminal request for service, created at created and finished took
// later, with the given actions (type:outcome) and Ready reason.
func finished(name, service string, phase selfhealv1alpha1.HealingPhase, issue selfhealv1alpha1.IssueType, reason string, created time.Time, took time.Duration,
	actions ...selfhealv1alpha1.HealingAction) *selfhealv1alpha1.HealingRequest {
	hr := &selfhealv1alpha1.HealingRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, UID: types.UID("uid-" + name), CreationTimestamp: metav1.NewTime(created)},
		Spec:       selfhealv1alpha1.HealingRequestSpec{Target: selfhealv1alpha1.HealingTarget{Service: service}},
		Status: selfhealv1alpha1.HealingRequestStatus{Phase: phase, Issue: issue, Actions: actions,
			CompletionTime: &metav1.Time{Time: created.Add(took)},
			Conditions:     []metav1.Condition{{Type: selfhealv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: "cause of " + name}}},
	}
	return hr
}

func act(t selfhealv1alpha1.ActionType, o selfhealv1alpha1.ActionOutcome) selfhealv1alpha1.HealingAction {
	return selfhealv1alpha1.HealingAction{Type: t, Attempt: 1, Outcome: o}
}

func TestOutcomeOf(t *testing.T) {
	t0 := fakeClock.Now()
	restart := act(selfhealv1alpha1.ActionRolloutRestart, selfhealv1alpha1.OutcomeSucceeded)
	dup := finished("dup", testService, selfhealv1alpha1.PhaseSkipped, "", selfhealv1alpha1.ReasonDuplicate, t0, time.Second)
	dup.Status.DuplicateOf = "first"
	tests := []struct {
		name    string
		hr      *selfhealv1alpha1.HealingRequest
		healing bool
		action  selfhealv1alpha1.ActionType
		heal    time.Duration
	}{
		{"healed by a restart", finished("a", testService, selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ReasonHealed, t0, 23*time.Second,
			act(selfhealv1alpha1.ActionDeleteFailedPods, selfhealv1alpha1.OutcomeSucceeded), restart), true, selfhealv1alpha1.ActionRolloutRestart, 23 * time.Second},
		{"failed after acting", finished("b", testService, selfhealv1alpha1.PhaseFailed, selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ReasonAttemptsExhausted, t0, time.Minute, restart),
			true, selfhealv1alpha1.ActionRolloutRestart, 0},
		{"manual without acting", finished("c", testService, selfhealv1alpha1.PhaseManualInterventionRequired, selfhealv1alpha1.IssueImagePullBackOff, selfhealv1alpha1.ReasonNotHealable, t0, time.Second),
			true, "", 0},
		{"skipped by the breaker after one restart: it acted", finished("d", testService, selfhealv1alpha1.PhaseSkipped, selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ReasonCircuitOpen, t0, time.Minute, restart),
			true, selfhealv1alpha1.ActionRolloutRestart, 0},
		{"skipped by the storm limit before acting: not a healing", finished("e", testService, selfhealv1alpha1.PhaseSkipped, selfhealv1alpha1.IssueNoPods, selfhealv1alpha1.ReasonStormLimit, t0, time.Second),
			false, "", 0},
		{"a dry run: not a healing", finished("f", testService, selfhealv1alpha1.PhaseSkipped, selfhealv1alpha1.IssueNoPods, selfhealv1alpha1.ReasonDryRun, t0, time.Second,
			act(selfhealv1alpha1.ActionScaleFromZero, selfhealv1alpha1.OutcomeDryRun)), false, "", 0},
		{"already healthy: not a healing", finished("g", testService, selfhealv1alpha1.PhaseSkipped, selfhealv1alpha1.IssueHealthy, selfhealv1alpha1.ReasonAlreadyHealthy, t0, time.Second), false, "", 0},
		{"a duplicate: not a healing", dup, false, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, ok := OutcomeOf(tc.hr)
			if !ok || o.Healing != tc.healing || o.Action != tc.action || o.TimeToHeal != tc.heal {
				t.Fatalf("OutcomeOf = %+v (%v); want healing %v, action %q, time to heal %s", o, ok, tc.healing, tc.action, tc.heal)
			}
			var out selfhealv1alpha1.Outcomes
			if got := Record(&out, o); got != tc.healing || out.Healings != map[bool]int64{true: 1}[tc.healing] {
				t.Errorf("Record = %v, healings %d", got, out.Healings)
			}
		})
	}
	running := finished("r", testService, selfhealv1alpha1.PhaseVerifying, selfhealv1alpha1.IssueNoPods, "", t0, 0)
	if _, ok := OutcomeOf(running); ok {
		t.Errorf("a running request has no outcome")
	}
}

// TestRecordSummarizes: counts, rates, time to heal, top Services, manual
// interventions and their resolution, and the learning history.
func TestRecordSummarizes(t *testing.T) {
	t0 := fakeClock.Now()
	restart := act(selfhealv1alpha1.ActionRolloutRestart, selfhealv1alpha1.OutcomeSucceeded)
	var out selfhealv1alpha1.Outcomes
	rec := func(hr *selfhealv1alpha1.HealingRequest) {
		t.Helper()
		o, _ := OutcomeOf(hr)
		if !Record(&out, o) {
			t.Fatalf("%s not recorded", hr.Name)
		}
	}
	for i, took := range []time.Duration{4 * time.Second, 8 * time.Second, 25 * time.Second, 50 * time.Second} {
		rec(finished(fmt.Sprintf("h%d", i), "mcp-files", selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ReasonHealed,
			t0.Add(time.Duration(i)*time.Minute), took, restart))
	}
	rec(finished("f1", "mcp-git", selfhealv1alpha1.PhaseFailed, selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ReasonAttemptsExhausted, t0.Add(5*time.Minute), time.Minute, restart))
	rec(finished("m1", "mcp-git", selfhealv1alpha1.PhaseManualInterventionRequired, selfhealv1alpha1.IssueImagePullBackOff, selfhealv1alpha1.ReasonNotHealable, t0.Add(6*time.Minute), time.Second))
	rec(finished("m2", "mcp-db", selfhealv1alpha1.PhaseManualInterventionRequired, selfhealv1alpha1.IssueOOMKilled, selfhealv1alpha1.ReasonManualIntervention, t0.Add(7*time.Minute), time.Second))
	if Waiting(&out) != 2 {
		t.Fatalf("waiting = %d, want 2", Waiting(&out))
	}
	// mcp-git heals later: its intervention is resolved, mcp-db's still waits.
	rec(finished("h9", "mcp-git", selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueImagePullBackOff, selfhealv1alpha1.ReasonHealed, t0.Add(8*time.Minute), 10*time.Second, restart))

	if out.Healings != 8 || out.Healed != 5 || out.SuccessRate != "62%" {
		t.Errorf("totals = %d healed of %d (%s)", out.Healed, out.Healings, out.SuccessRate)
	}
	if Waiting(&out) != 1 || out.ManualInterventions[0].Request != "m2" || out.ManualInterventions[1].ResolvedAt == nil ||
		out.ManualInterventions[0].Message != "cause of m2" || out.ManualInterventions[0].Reason != selfhealv1alpha1.ReasonManualIntervention {
		t.Errorf("manual interventions = %+v", out.ManualInterventions)
	}
	var crash *selfhealv1alpha1.IssueActionOutcomes
	for i := range out.ByIssue {
		if out.ByIssue[i].Issue == selfhealv1alpha1.IssueCrashLoopBackOff && out.ByIssue[i].Action == selfhealv1alpha1.ActionRolloutRestart {
			crash = &out.ByIssue[i]
		}
	}
	if crash == nil || crash.Healings != 5 || crash.Healed != 4 || crash.TimeToHealSeconds != 87 ||
		crash.AverageTimeToHeal.Duration != 21*time.Second || crash.P50 != "<=10s" || crash.P90 != "<=1m" {
		t.Errorf("CrashLoopBackOff × RolloutRestart = %+v", crash)
	}
	if want := []int64{1, 1, 0, 1, 1, 0, 0, 0, 0}; fmt.Sprint(crash.TimeToHealBuckets) != fmt.Sprint(want) {
		t.Errorf("buckets = %v, want %v", crash.TimeToHealBuckets, want)
	}
	if s := out.TopServices; len(s) != 3 || s[0].Service != "mcp-files" || s[0].Healings != 4 || s[1].Service != "mcp-git" || s[1].Healings != 3 || s[1].Healed != 1 {
		t.Errorf("top services = %+v", s)
	}
	// History: only healings that acted, per Service × issue × action.
	if len(out.History) != 3 {
		t.Errorf("history = %+v", out.History)
	}
}

// A healing that ended at its deadline before any diagnosis (an action adopted from a
// reservation, judged applied) counts as a healing of its Service; it adds no row
// without an issue, which the CRD refuses (every later recording would fail with it).
func TestRecordUndiagnosedHealing(t *testing.T) {
	var out selfhealv1alpha1.Outcomes
	hr := finished("late", testService, selfhealv1alpha1.PhaseFailed, "", selfhealv1alpha1.ReasonDeadlineExceeded, fakeClock.Now(), 3*time.Minute,
		act(selfhealv1alpha1.ActionScaleFromZero, selfhealv1alpha1.OutcomeSucceeded))
	o, _ := OutcomeOf(hr)
	if !Record(&out, o) {
		t.Fatal("not recorded")
	}
	if out.Healings != 1 || len(out.TopServices) != 1 || out.TopServices[0].Healings != 1 {
		t.Errorf("healings %d, top services %+v; want it counted once", out.Healings, out.TopServices)
	}
	if len(out.ByIssue) != 0 || len(out.History) != 0 {
		t.Errorf("rows without an issue: byIssue %+v, history %+v", out.ByIssue, out.History)
	}
}

// TestRecordIsBoundedAndExactOver10000: 10,000 healings of 300 Services (recorded
// roughly in completion order, as retain records them: up to 20 out of order) are each
// counted once, every list stays within its CRD bound, and recording every one of them
// again, in any order, changes nothing.
func TestRecordIsBoundedAndExactOver10000(t *testing.T) {
	const n = 10000
	t0 := fakeClock.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	issues := []selfhealv1alpha1.IssueType{selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.IssueNoPods, selfhealv1alpha1.IssueNoReadyPods, selfhealv1alpha1.IssueImagePullBackOff, selfhealv1alpha1.IssueOOMKilled, selfhealv1alpha1.IssueFailedPods}
	outcomes := make([]Outcome, n)
	var healed int64
	for i := range outcomes {
		phase := []selfhealv1alpha1.HealingPhase{selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.PhaseFailed, selfhealv1alpha1.PhaseManualInterventionRequired}[rng.IntN(4)]
		var actions []selfhealv1alpha1.HealingAction
		if phase != selfhealv1alpha1.PhaseManualInterventionRequired {
			actions = append(actions, act([]selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionRolloutRestart, selfhealv1alpha1.ActionScaleFromZero, selfhealv1alpha1.ActionDeleteFailedPods}[rng.IntN(3)], selfhealv1alpha1.OutcomeSucceeded))
		}
		if phase == selfhealv1alpha1.PhaseHealed {
			healed++
		}
		// Several requests finish within the same second.
		hr := finished(fmt.Sprintf("req-%05d", i), fmt.Sprintf("svc-%03d", rng.IntN(300)), phase, issues[rng.IntN(len(issues))],
			"Reason", t0.Add(time.Duration(i/3)*time.Second), time.Duration(rng.IntN(700))*time.Second, actions...)
		outcomes[i], _ = OutcomeOf(hr)
	}
	slicesSortByFinish(outcomes)
	order := make([]Outcome, n)
	copy(order, outcomes)
	for i := 0; i+20 <= n; i += 20 { // out of order within groups of 20
		rng.Shuffle(20, func(a, b int) { order[i+a], order[i+b] = order[i+b], order[i+a] })
	}
	var out selfhealv1alpha1.Outcomes
	for _, o := range order {
		if !Record(&out, o) {
			t.Fatalf("%s was not recorded", o.Request)
		}
	}
	if out.Healings != n || out.Healed != healed {
		t.Fatalf("recorded %d healings (%d healed), want %d (%d)", out.Healings, out.Healed, n, healed)
	}
	var sum int64
	for _, e := range out.ByIssue {
		sum += e.Healings
	}
	if sum != n {
		t.Errorf("byIssue sums to %d, want %d", sum, n)
	}
	checkBounds(t, &out)
	before, _ := json.Marshal(out)
	rng.Shuffle(n, func(a, b int) { outcomes[a], outcomes[b] = outcomes[b], outcomes[a] })
	for _, o := range outcomes {
		if Record(&out, o) {
			t.Fatalf("%s was recorded twice", o.Request)
		}
	}
	if after, _ := json.Marshal(out); string(after) != string(before) {
		t.Errorf("recording again changed the outcomes")
	}
	if size := len(before); size > 200_000 {
		t.Errorf("outcomes take %d bytes of JSON", size)
	}
	t.Logf("outcomes after %d healings: %d bytes of JSON", n, len(before))
}

func slicesSortByFinish(os []Outcome) {
	for i := 1; i < len(os); i++ { // insertion sort: already nearly sorted
		for j := i; j > 0 && os[j].FinishedAt.Before(os[j-1].FinishedAt); j-- {
			os[j], os[j-1] = os[j-1], os[j]
		}
	}
}

func checkBounds(t *testing.T, out *selfhealv1alpha1.Outcomes) {
	t.Helper()
	bounds := []struct {
		name     string
		len, max int
	}{
		{"byIssue", len(out.ByIssue), selfhealv1alpha1.MaxOutcomesByIssue},
		{"topServices", len(out.TopServices), selfhealv1alpha1.MaxTopServices},
		{"manualInterventions", len(out.ManualInterventions), selfhealv1alpha1.MaxManualInterventions},
		{"history", len(out.History), selfhealv1alpha1.MaxOutcomeHistory},
		{"recorded", len(out.Recorded), selfhealv1alpha1.MaxRecordedRequests},
	}
	for _, b := range bounds {
		if b.len > b.max || b.len == 0 {
			t.Errorf("%s has %d entries, bound %d", b.name, b.len, b.max)
		}
	}
	for _, h := range out.History {
		if len(h.Results) > selfhealv1alpha1.MaxOutcomeHistoryResults {
			t.Errorf("history of %s/%s/%s has %d results", h.Service, h.Issue, h.Action, len(h.Results))
		}
	}
	for _, e := range out.ByIssue {
		if len(e.TimeToHealBuckets) > selfhealv1alpha1.TimeToHealBucketCount {
			t.Errorf("%d buckets", len(e.TimeToHealBuckets))
		}
	}
}

func TestIneffective(t *testing.T) {
	now := fakeClock.Now()
	tests := []struct {
		name    string
		ago     []string
		min     int32
		window  time.Duration
		stop    bool
		results int
	}{
		{"no history", nil, 3, 24 * time.Hour, false, 0},
		{"three failures", []string{"3h", "2h", "1h"}, 3, 24 * time.Hour, true, 3},
		{"the newest three decide", []string{"5h+", "3h", "2h", "1h"}, 3, 24 * time.Hour, true, 3},
		{"a success among them", []string{"3h", "2h+", "1h"}, 3, 24 * time.Hour, false, 3},
		{"the window", []string{"3h", "2h", "1h"}, 3, 150 * time.Minute, false, 2},
		{"one is enough with minAttempts 1", []string{"1h"}, 1, 24 * time.Hour, true, 1},
		{"ten with minAttempts 10", []string{"10h", "9h", "8h", "7h", "6h", "5h", "4h", "3h", "2h", "1h"}, 10, 24 * time.Hour, true, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, stop := Ineffective(results(selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ActionRolloutRestart, tc.ago...), testService,
				selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ActionRolloutRestart, tc.min, tc.window, now)
			if stop != tc.stop || len(ev.Results) != tc.results {
				t.Fatalf("Ineffective = %v with %d results, want %v with %d", stop, len(ev.Results), tc.stop, tc.results)
			}
			for i := 1; i < len(ev.Results); i++ {
				if ev.Results[i].FinishedAt.After(ev.Results[i-1].FinishedAt.Time) {
					t.Errorf("evidence is not newest first")
				}
			}
		})
	}
}
