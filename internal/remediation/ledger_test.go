package remediation

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

func limits(perTarget, namespace int32, window time.Duration) *selfhealv1alpha1.HealingPolicySpec {
	return &selfhealv1alpha1.HealingPolicySpec{CircuitBreaker: &selfhealv1alpha1.CircuitBreaker{
		MaxActionsPerTarget: ptr.To(perTarget), NamespaceMaxActions: ptr.To(namespace),
		Window: &metav1.Duration{Duration: window},
	}}
}

func reservation(service, request string, attempt int32, spec *selfhealv1alpha1.HealingPolicySpec) Reservation {
	e := reserved(service, selfhealv1alpha1.ActionRolloutRestart, 0)
	e.Request, e.Attempt = request, attempt
	return Reservation{Entry: e, Spec: spec, Namespace: testNS, Retain: time.Hour}
}

func TestReserve(t *testing.T) {
	now := fakeClock.Now()
	spec := limits(2, 3, time.Hour)
	cases := []struct {
		name    string
		ledger  []selfhealv1alpha1.LedgerEntry
		r       Reservation
		added   bool
		refusal string
		wantLen int
	}{
		{"empty ledger grants", nil, reservation("a", "a-1", 1, spec), true, "", 1},
		{"the same request and attempt is granted again, once",
			[]selfhealv1alpha1.LedgerEntry{func() selfhealv1alpha1.LedgerEntry {
				e := reserved("a", selfhealv1alpha1.ActionRolloutRestart, time.Minute)
				e.Request = "a-1"
				return e
			}()},
			reservation("a", "a-1", 1, spec), false, "", 1},
		{"the next attempt of the same request is a new entry",
			[]selfhealv1alpha1.LedgerEntry{func() selfhealv1alpha1.LedgerEntry {
				e := reserved("a", selfhealv1alpha1.ActionRolloutRestart, time.Minute)
				e.Request = "a-1"
				return e
			}()},
			reservation("a", "a-1", 2, spec), true, "", 2},
		{"breaker refuses the target at its limit",
			[]selfhealv1alpha1.LedgerEntry{reserved("a", selfhealv1alpha1.ActionRolloutRestart, time.Minute), reserved("a", selfhealv1alpha1.ActionScaleFromZero, 2*time.Minute)},
			reservation("a", "a-9", 1, spec), false, selfhealv1alpha1.ReasonCircuitOpen, 2},
		{"another target is still allowed below the storm limit",
			[]selfhealv1alpha1.LedgerEntry{reserved("a", selfhealv1alpha1.ActionRolloutRestart, time.Minute), reserved("a", selfhealv1alpha1.ActionScaleFromZero, 2*time.Minute)},
			reservation("b", "b-1", 1, spec), true, "", 3},
		{"storm limit refuses any target",
			[]selfhealv1alpha1.LedgerEntry{reserved("a", selfhealv1alpha1.ActionRolloutRestart, time.Minute), reserved("b", selfhealv1alpha1.ActionRolloutRestart, time.Minute), reserved("c", selfhealv1alpha1.ActionRolloutRestart, time.Minute)},
			reservation("d", "d-1", 1, spec), false, selfhealv1alpha1.ReasonStormLimit, 3},
		{"entries out of the window neither count nor stay",
			[]selfhealv1alpha1.LedgerEntry{reserved("a", selfhealv1alpha1.ActionRolloutRestart, 61*time.Minute), reserved("a", selfhealv1alpha1.ActionRolloutRestart, 2*time.Hour)},
			reservation("a", "a-1", 1, spec), true, "", 1},
		{"entries stay MinLedgerRetention however short the window",
			[]selfhealv1alpha1.LedgerEntry{reserved("a", selfhealv1alpha1.ActionRolloutRestart, MinLedgerRetention-time.Minute), reserved("a", selfhealv1alpha1.ActionRolloutRestart, MinLedgerRetention+time.Minute)},
			func() Reservation {
				r := reservation("a", "a-1", 1, limits(2, 3, time.Minute))
				r.Retain = time.Minute
				return r
			}(), true, "", 2},
		{"a released reservation of the same request and attempt is found, not added again",
			[]selfhealv1alpha1.LedgerEntry{func() selfhealv1alpha1.LedgerEntry {
				e := reserved("a", selfhealv1alpha1.ActionRolloutRestart, time.Minute)
				e.Request, e.Released = "a-1", true
				return e
			}()},
			reservation("a", "a-1", 1, spec), false, "", 1},
		{"a later request of the same name (another UID) is a new entry",
			[]selfhealv1alpha1.LedgerEntry{func() selfhealv1alpha1.LedgerEntry {
				e := reserved("a", selfhealv1alpha1.ActionRolloutRestart, time.Minute)
				e.Request, e.RequestUID = "a-1", "uid-old"
				return e
			}()},
			func() Reservation { r := reservation("a", "a-1", 1, spec); r.Entry.RequestUID = "uid-new"; return r }(), true, "", 2},
		{"an entry without a UID goes by the name",
			[]selfhealv1alpha1.LedgerEntry{func() selfhealv1alpha1.LedgerEntry {
				e := reserved("a", selfhealv1alpha1.ActionRolloutRestart, time.Minute)
				e.Request = "a-1"
				return e
			}()},
			func() Reservation { r := reservation("a", "a-1", 1, spec); r.Entry.RequestUID = "uid-new"; return r }(), false, "", 1},
		{"released entries do not count against the limits",
			[]selfhealv1alpha1.LedgerEntry{reserved("a", selfhealv1alpha1.ActionRolloutRestart, time.Minute), func() selfhealv1alpha1.LedgerEntry {
				e := reserved("a", selfhealv1alpha1.ActionScaleFromZero, 2*time.Minute)
				e.Released = true
				return e
			}()},
			reservation("a", "a-9", 1, spec), true, "", 3},
		{"entries a longer window still needs are kept",
			[]selfhealv1alpha1.LedgerEntry{reserved("a", selfhealv1alpha1.ActionRolloutRestart, 61*time.Minute)},
			func() Reservation { r := reservation("a", "a-1", 1, spec); r.Retain = 3 * time.Hour; return r }(), true, "", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, granted, added, refusal := Reserve(tc.ledger, tc.r, now)
			if added != tc.added {
				t.Errorf("added = %v, want %v", added, tc.added)
			}
			if refusal == nil && (granted.Request != tc.r.Entry.Request || granted.Attempt != tc.r.Entry.Attempt) {
				t.Errorf("granted %+v, want the reservation of %s attempt %d", granted, tc.r.Entry.Request, tc.r.Entry.Attempt)
			}
			switch {
			case tc.refusal == "" && refusal != nil:
				t.Errorf("unexpected refusal %s: %s", refusal.Reason, refusal.Message)
			case tc.refusal != "" && (refusal == nil || refusal.Reason != tc.refusal):
				t.Errorf("refusal = %+v, want %s", refusal, tc.refusal)
			}
			if len(got) != tc.wantLen {
				t.Errorf("ledger has %d entries, want %d: %+v", len(got), tc.wantLen, got)
			}
		})
	}
}

// Reserving one at a time up to the limit and one more: the limit is the count.
func TestReserveCountsExactly(t *testing.T) {
	now := fakeClock.Now()
	spec := limits(100, 10, time.Hour)
	var ledger []selfhealv1alpha1.LedgerEntry
	granted := 0
	for i := range 25 {
		r := reservation("svc-"+string(rune('a'+i)), "req-"+string(rune('a'+i)), 1, spec)
		var added bool
		var refusal *Refusal
		ledger, _, added, refusal = Reserve(ledger, r, now.Add(time.Duration(i)*time.Second))
		if added {
			granted++
		} else if refusal == nil || refusal.Reason != selfhealv1alpha1.ReasonStormLimit {
			t.Fatalf("reservation %d: neither granted nor refused by the storm limit: %+v", i, refusal)
		}
	}
	if granted != 10 || len(ledger) != 10 {
		t.Fatalf("granted %d, ledger %d; want exactly 10", granted, len(ledger))
	}
}

func TestRelease(t *testing.T) {
	a1 := reserved("a", selfhealv1alpha1.ActionRolloutRestart, time.Minute)
	a1.Request, a1.RequestUID, a1.Attempt = "a-1", "uid-a", 1
	a2 := a1
	a2.Attempt = 2
	earlier := a1 // an earlier request of the same name
	earlier.RequestUID, earlier.Attempt = "uid-earlier", 2
	b := reserved("b", selfhealv1alpha1.ActionRolloutRestart, time.Minute)
	ledger := []selfhealv1alpha1.LedgerEntry{a1, a2, earlier, b}
	got, changed := Release(ledger, "a-1", "uid-a", func(e selfhealv1alpha1.LedgerEntry) bool { return e.Attempt == 1 })
	released := func(l []selfhealv1alpha1.LedgerEntry) []bool {
		out := make([]bool, len(l))
		for i, e := range l {
			out[i] = e.Released
		}
		return out
	}
	if !changed || !slices.Equal(released(got), []bool{false, true, false, false}) {
		t.Fatalf("Release marked %v (changed %v); want only attempt 2 of a-1 (uid-a)", released(got), changed)
	}
	if slices.ContainsFunc(ledger, func(e selfhealv1alpha1.LedgerEntry) bool { return e.Released }) {
		t.Error("Release modified the ledger it was given")
	}
	if _, changed := Release(got, "a-1", "uid-a", func(selfhealv1alpha1.LedgerEntry) bool { return false }); !changed {
		t.Error("attempt 1 left to release, yet nothing changed")
	}
	if _, changed := Release(got, "a-1", "uid-a", func(e selfhealv1alpha1.LedgerEntry) bool { return e.Attempt == 1 }); changed {
		t.Error("nothing left to release, yet changed")
	}
	if n, _ := CountInWindow(got, "heal", fakeClock.Now(), time.Hour); n != 3 {
		t.Errorf("CountInWindow = %d after one release of four, want 3", n)
	}
}

func TestLedgerHolderIsTheOldestPolicy(t *testing.T) {
	at := func(name string, sec int) selfhealv1alpha1.HealingPolicy {
		return selfhealv1alpha1.HealingPolicy{ObjectMeta: metav1.ObjectMeta{Name: name,
			CreationTimestamp: metav1.NewTime(fakeClock.Now().Add(time.Duration(sec) * time.Second))}}
	}
	if LedgerHolder(nil) != nil {
		t.Error("no policy, yet a holder")
	}
	got := LedgerHolder([]selfhealv1alpha1.HealingPolicy{at("b", 5), at("zeta", 1), at("alpha", 1)})
	if got == nil || got.Name != "alpha" {
		t.Errorf("holder = %v, want alpha (oldest, then by name)", got)
	}
}

func TestCountInWindow(t *testing.T) {
	now := fakeClock.Now()
	e1 := reserved("a", selfhealv1alpha1.ActionRolloutRestart, 10*time.Minute)
	e2 := reserved("b", selfhealv1alpha1.ActionRolloutRestart, 50*time.Minute)
	other := reserved("c", selfhealv1alpha1.ActionRolloutRestart, time.Minute)
	other.Policy = "other"
	old := reserved("d", selfhealv1alpha1.ActionRolloutRestart, 2*time.Hour)
	n, next := CountInWindow([]selfhealv1alpha1.LedgerEntry{e1, e2, other, old}, "heal", now, time.Hour)
	if n != 2 || next != 10*time.Minute {
		t.Errorf("CountInWindow = %d, next expiry %s; want 2, 10m", n, next)
	}
}
