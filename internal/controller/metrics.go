package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	v1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

var (
	healingsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "selfheal_healings_total",
		Help: "Healings that reached a terminal phase. Labels: issue (the classified problem), outcome (the terminal phase).",
	}, []string{"issue", "outcome"})
	timeToHeal = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "selfheal_time_to_heal_seconds",
		Help:    "Seconds from a HealingRequest's creation to phase Healed.",
		Buckets: []float64{0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600},
	})
	actionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "selfheal_actions_total",
		Help: "Remediation actions executed. Labels: type (RolloutRestart, ScaleFromZero, DeleteFailedPods), outcome (Succeeded, Failed).",
	}, []string{"type", "outcome"})
	manualInterventions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "selfheal_manual_interventions_total",
		Help: "Healings that ended ManualInterventionRequired. Labels: issue (the classified problem a person must fix).",
	}, []string{"issue"})
	activeHealings = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "selfheal_active_healings",
		Help: "HealingRequests started by this manager and not yet terminal.",
	})
)

func init() {
	metrics.Registry.MustRegister(healingsTotal, timeToHeal, actionsTotal, manualInterventions, activeHealings)
}

// observeTransition records the metrics of a persisted status change.
func observeTransition(before, after *v1.HealingRequest) {
	observeActions(before, after)
	if before.Status.StartTime == nil && after.Status.StartTime != nil && !after.Status.Phase.IsTerminal() {
		activeHealings.Inc()
	}
	if before.Status.Phase.IsTerminal() || !after.Status.Phase.IsTerminal() {
		return
	}
	if before.Status.StartTime != nil {
		activeHealings.Dec()
	}
	issue := string(after.Status.Issue)
	if issue == "" {
		issue = "Unknown"
	}
	healingsTotal.WithLabelValues(issue, string(after.Status.Phase)).Inc()
	switch after.Status.Phase {
	case v1.PhaseHealed:
		if after.Status.CompletionTime != nil {
			timeToHeal.Observe(after.Status.CompletionTime.Sub(after.CreationTimestamp.Time).Seconds())
		}
	case v1.PhaseManualInterventionRequired:
		manualInterventions.WithLabelValues(issue).Inc()
	}
}

// observeActions counts the actions whose outcome this status change recorded.
func observeActions(before, after *v1.HealingRequest) {
	type key struct {
		t       v1.ActionType
		attempt int32
		started int64
	}
	done := map[key]bool{}
	for _, a := range before.Status.Actions {
		if a.Outcome != v1.OutcomeIntended {
			done[key{a.Type, a.Attempt, a.StartedAt.UnixNano()}] = true
		}
	}
	for _, a := range after.Status.Actions {
		if (a.Outcome == v1.OutcomeSucceeded || a.Outcome == v1.OutcomeFailed) && !done[key{a.Type, a.Attempt, a.StartedAt.UnixNano()}] {
			actionsTotal.WithLabelValues(string(a.Type), string(a.Outcome)).Inc()
		}
	}
}
