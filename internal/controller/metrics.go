package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/remediation"
)

// Label values are bounded: issue, action, outcome, phase and reason are API enums or
// reason constants; healing_namespace is a namespace with a HealingPolicy (not
// "namespace", which Prometheus sets to the manager's own namespace when it scrapes
// without honor_labels); service appears only in selfheal_service_healings, which
// exports each namespace's status.outcomes.topServices (at most 10 per namespace, the
// rest deleted), never a Service seen in a request.

var (
	healingsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "selfheal_healings_total",
		Help: "Healings that reached a terminal phase. Labels: issue (the classified problem), outcome (the terminal phase).",
	}, []string{"issue", "outcome"})
	timeToHeal = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "selfheal_time_to_heal_seconds",
		Help:    "Seconds from the controller's first sight of a HealingRequest (status.startTime) to phase Healed.",
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
	healingOutcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "selfheal_healing_outcomes_total",
		Help: "Healings recorded in the namespace outcomes (duplicates and Skipped requests that did nothing excluded), once per request across managers. " +
			"Labels: issue (the classified problem), action (the last action executed, None when none), outcome (the terminal phase).",
	}, []string{"issue", "action", "outcome"})
	refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "selfheal_remediation_refusals_total",
		Help: "Healings that ended with remediation refused. Labels: reason (the RemediationAllowed reason: StormLimit, CircuitBreakerOpen, Cooldown, ActionIneffective, NotPermitted, ...).",
	}, []string{"reason"})
	serviceHealings = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "selfheal_service_healings",
		Help: "Healings recorded per Service, for the Services healed most (status.outcomes.topServices of the namespace's ledger policy: at most 10 per namespace). " +
			"Labels: healing_namespace, service.",
	}, []string{"healing_namespace", "service"})
	manualWaiting = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "selfheal_manual_interventions_waiting",
		Help: "Recent healings that ended ManualInterventionRequired and that no later healing of their Service has healed (status.outcomes.manualInterventions). Labels: healing_namespace.",
	}, []string{"healing_namespace"})
)

// Collectors are the manager's metrics of this package, as registered: the
// dashboards and alert rules may query these (and the gateway's) only.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{healingsTotal, timeToHeal, actionsTotal, manualInterventions, activeHealings,
		healingOutcomes, refusals, serviceHealings, manualWaiting}
}

func init() {
	metrics.Registry.MustRegister(Collectors()...)
}

// observeOutcome counts a healing the outcomes recorded.
func observeOutcome(o remediation.Outcome) {
	issue, action := string(o.Issue), string(o.Action)
	if issue == "" {
		issue = "Unknown"
	}
	if action == "" {
		action = "None"
	}
	healingOutcomes.WithLabelValues(issue, action, string(o.Phase)).Inc()
}

// observeOutcomes exports a ledger policy's outcomes: its top Services and its waiting
// manual interventions; series of Services that left the top list are deleted.
func observeOutcomes(namespace string, o *selfhealv1alpha1.Outcomes) {
	serviceHealings.DeletePartialMatch(prometheus.Labels{"healing_namespace": namespace})
	if o == nil {
		manualWaiting.DeleteLabelValues(namespace)
		return
	}
	for _, s := range o.TopServices {
		serviceHealings.WithLabelValues(namespace, s.Service).Set(float64(s.Healings))
	}
	manualWaiting.WithLabelValues(namespace).Set(float64(remediation.Waiting(o)))
}

// observeTransition records the metrics of a persisted status change.
func observeTransition(before, after *selfhealv1alpha1.HealingRequest) {
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
	if c := meta.FindStatusCondition(after.Status.Conditions, selfhealv1alpha1.ConditionRemediationAllowed); c != nil && c.Status == metav1.ConditionFalse {
		refusals.WithLabelValues(c.Reason).Inc()
	}
	switch after.Status.Phase {
	case selfhealv1alpha1.PhaseHealed:
		if after.Status.CompletionTime != nil {
			timeToHeal.Observe(max(0, after.Status.CompletionTime.Sub(remediation.StartOf(after))).Seconds())
		}
	case selfhealv1alpha1.PhaseManualInterventionRequired:
		manualInterventions.WithLabelValues(issue).Inc()
	}
}

// observeActions counts the actions whose outcome this status change recorded.
func observeActions(before, after *selfhealv1alpha1.HealingRequest) {
	type key struct {
		t       selfhealv1alpha1.ActionType
		attempt int32
		started int64
	}
	done := map[key]bool{}
	for _, a := range before.Status.Actions {
		if a.Outcome != selfhealv1alpha1.OutcomeIntended {
			done[key{a.Type, a.Attempt, a.StartedAt.UnixNano()}] = true
		}
	}
	for _, a := range after.Status.Actions {
		if (a.Outcome == selfhealv1alpha1.OutcomeSucceeded || a.Outcome == selfhealv1alpha1.OutcomeFailed) && !done[key{a.Type, a.Attempt, a.StartedAt.UnixNano()}] {
			actionsTotal.WithLabelValues(string(a.Type), string(a.Outcome)).Inc()
		}
	}
}
