package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of HealingPolicy. The CRD declares the same values as defaults (the API
// server fills them in); the getters below use these constants only for objects that
// never went through the API server, such as test fixtures. A test asserts both agree.
const (
	DefaultDeadline            = 2 * time.Minute
	DefaultMaxAttempts         = int32(2)
	DefaultCooldown            = time.Minute
	DefaultBreakerWindow       = time.Hour
	DefaultMaxActionsPerTarget = int32(3)
	DefaultStormMaxActions     = int32(10)
	DefaultTTLAfterFinished    = 24 * time.Hour
	DefaultMaxHistoryPerTarget = int32(20)
	DefaultLearningMinAttempts = int32(3)
	DefaultLearningWindow      = 24 * time.Hour
)

// PolicyMode is the effective mode of a HealingPolicy.
// +kubebuilder:validation:Enum=Active;DryRun;Paused
type PolicyMode string

const (
	ModeActive PolicyMode = "Active"
	ModeDryRun PolicyMode = "DryRun"
	ModePaused PolicyMode = "Paused"
)

// CircuitBreaker limits disruptive actions (restarts, scale-ups) so a service that
// keeps failing is not restarted forever, and a namespace-wide failure does not turn
// into a restart storm.
// +kubebuilder:validation:XValidation:rule="!has(self.maxActionsPerTarget) || !has(self.namespaceMaxActions) || self.namespaceMaxActions >= self.maxActionsPerTarget",message="namespaceMaxActions must be at least maxActionsPerTarget"
type CircuitBreaker struct {
	// window over which disruptive actions are counted.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('24h')",message="window must be between 1m and 24h"
	Window *metav1.Duration `json:"window,omitempty"`

	// maxActionsPerTarget is the most disruptive actions on one target in the window.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MaxActionsPerTarget *int32 `json:"maxActionsPerTarget,omitempty"`

	// namespaceMaxActions is the storm limit: the most disruptive actions in the whole
	// namespace in the window.
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	NamespaceMaxActions *int32 `json:"namespaceMaxActions,omitempty"`
}

// Retention bounds how many finished HealingRequests are kept.
type Retention struct {
	// ttlAfterFinished deletes a terminal HealingRequest this long after it finished.
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('2160h')",message="ttlAfterFinished must be between 1m and 90d"
	TTLAfterFinished *metav1.Duration `json:"ttlAfterFinished,omitempty"`

	// maxHistoryPerTarget keeps at most this many terminal HealingRequests per target;
	// older ones are deleted first.
	// +optional
	// +kubebuilder:default=20
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MaxHistoryPerTarget *int32 `json:"maxHistoryPerTarget,omitempty"`
}

// Learning is the planner's one learning rule: an action that has not healed an issue
// of a Service the last minAttempts times within the window is not tried again; the
// request ends ManualInterventionRequired (ActionIneffective) with that evidence.
type Learning struct {
	// disabled turns the rule off. Outcomes are still recorded.
	// +optional
	Disabled bool `json:"disabled,omitempty"`

	// minAttempts is how many of the latest healings of the same Service, issue and
	// action (within the window) must all have failed for the action to be refused.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10
	MinAttempts *int32 `json:"minAttempts,omitempty"`

	// window over which outcomes count; older ones are forgotten.
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('720h')",message="window must be between 1m and 30d"
	Window *metav1.Duration `json:"window,omitempty"`
}

// HealingPolicySpec says which Services in the policy's namespace may be healed, with
// which actions, and within which limits.
type HealingPolicySpec struct {
	// serviceSelector selects the Services this policy governs, by label. An empty
	// selector selects every Service in the namespace.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="serviceSelector operators must be In, NotIn, Exists or DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",message="serviceSelector: In and NotIn need values, Exists and DoesNotExist take none"
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`

	// allowedActions are the remediations this policy permits.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=3
	// +listType=set
	AllowedActions []ActionType `json:"allowedActions"`

	// deadline of one healing, from the controller's first sight of the HealingRequest
	// (status.startTime, with microseconds).
	// +optional
	// +kubebuilder:default="2m"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10s') && duration(self) <= duration('10m')",message="deadline must be between 10s and 10m"
	Deadline *metav1.Duration `json:"deadline,omitempty"`

	// maxAttempts is how many remediation attempts one healing may make; the target is
	// diagnosed again between attempts.
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=5
	MaxAttempts *int32 `json:"maxAttempts,omitempty"`

	// cooldown after a healing of a target during which no new action is taken on it.
	// +optional
	// +kubebuilder:default="1m"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('24h')",message="cooldown must be between 0s and 24h"
	Cooldown *metav1.Duration `json:"cooldown,omitempty"`

	// circuitBreaker limits disruptive actions per target and per namespace.
	// +optional
	// +kubebuilder:default={}
	CircuitBreaker *CircuitBreaker `json:"circuitBreaker,omitempty"`

	// retention of finished HealingRequests.
	// +optional
	// +kubebuilder:default={}
	Retention *Retention `json:"retention,omitempty"`

	// learning: stop repeating an action that has not healed this issue of this Service.
	// +optional
	// +kubebuilder:default={}
	Learning *Learning `json:"learning,omitempty"`

	// pauseRequests pauses remediation while non-empty; each entry says who paused and
	// why. Diagnosis still runs and is reported.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=256
	// +listType=set
	PauseRequests []string `json:"pauseRequests,omitempty"`

	// dryRun plans and reports every remediation, and executes none.
	// +optional
	DryRun bool `json:"dryRun,omitempty"`
}

// HealingPolicyStatus is the observed state of a policy.
type HealingPolicyStatus struct {
	// observedGeneration is the generation the status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// mode is the effective mode: Paused wins over DryRun, which wins over Active.
	// +optional
	Mode PolicyMode `json:"mode,omitempty"`

	// actionsInWindow counts the disruptive actions reserved under this policy within
	// its circuit breaker window, from the namespace's ledger (so it survives the
	// deletion of HealingRequests).
	// +optional
	ActionsInWindow int32 `json:"actionsInWindow,omitempty"`

	// ledger is the namespace's record of disruptive actions, kept only on the
	// namespace's ledger policy (its oldest HealingPolicy; see LedgerHolder). Every
	// disruptive action is reserved here, with optimistic concurrency, before its
	// intent is recorded, so the circuit breaker and the storm limit count exactly,
	// across workers, replicas and leader handovers, and however HealingRequests are
	// deleted. Entries older than the longest window in the namespace are pruned.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=1000
	Ledger []LedgerEntry `json:"ledger,omitempty"`

	// outcomes summarize the namespace's finished healings, kept only on the ledger
	// policy, like the ledger: bounded, and durable however HealingRequests are
	// deleted. The planner's learning rule reads outcomes.history.
	// +optional
	Outcomes *Outcomes `json:"outcomes,omitempty"`

	// lastHealingTime is when the latest healing under this policy finished.
	// +optional
	LastHealingTime *metav1.Time `json:"lastHealingTime,omitempty"`

	// conditions: Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// LedgerEntry is one disruptive action reserved in a namespace.
type LedgerEntry struct {
	// service the healing was for.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Service string `json:"service"`

	// workload acted on.
	// +required
	Workload WorkloadReference `json:"workload"`

	// action reserved.
	// +required
	Action ActionType `json:"action"`

	// request is the HealingRequest that reserved the action, and attempt its attempt:
	// together (with requestUID) they make a reservation idempotent.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Request string `json:"request"`

	// requestUID tells a request from an earlier one of the same name.
	// +optional
	// +kubebuilder:validation:MaxLength=36
	RequestUID string `json:"requestUID,omitempty"`

	// +required
	// +kubebuilder:validation:Minimum=1
	Attempt int32 `json:"attempt"`

	// policy that governed the request.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Policy string `json:"policy"`

	// reservedAt is when the action was reserved, with microseconds; it counts
	// against the limits until reservedAt plus the window.
	// +required
	ReservedAt metav1.MicroTime `json:"reservedAt"`

	// released: the healing ended and its status shows this reservation never became
	// an action. It no longer counts against the limits; it stays until it leaves the
	// window, so the same request and attempt can never be reserved, and act, again.
	// +optional
	Released bool `json:"released,omitempty"`
}

// Bounds of status.outcomes; the recording trims to them, the CRD enforces them.
const (
	MaxOutcomesByIssue        = 64 // issues × (actions and none): 14 × 4 = 56
	MaxTopServices            = 10
	MaxManualInterventions    = 10
	MaxOutcomeHistory         = 100
	MaxOutcomeHistoryResults  = 10 // the largest learning.minAttempts
	MaxRecordedRequests       = 64
	TimeToHealBucketCount     = 9
	MaxManualInterventionText = 512
)

// TimeToHealBuckets are the upper bounds, in seconds, of the buckets of
// IssueActionOutcomes.timeToHealBuckets; the last bucket has no upper bound.
var TimeToHealBuckets = [TimeToHealBucketCount - 1]int64{5, 10, 20, 30, 60, 120, 300, 600}

// Outcomes are the namespace's finished healings, summarized. A healing is a finished
// HealingRequest that is not a duplicate and either acted or ended Healed, Failed or
// ManualInterventionRequired; Skipped requests that did nothing (no policy, paused,
// dry run, already healthy, a safety limit before any action) are not healings.
type Outcomes struct {
	// healings recorded.
	// +optional
	Healings int64 `json:"healings,omitempty"`

	// healed is how many of them ended Healed.
	// +optional
	Healed int64 `json:"healed,omitempty"`

	// successRate is healed of healings, in whole percent ("87%").
	// +optional
	// +kubebuilder:validation:MaxLength=8
	SuccessRate string `json:"successRate,omitempty"`

	// byIssue: per issue and action (none when the healing ended before acting).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	ByIssue []IssueActionOutcomes `json:"byIssue,omitempty"`

	// topServices are the Services healed most, most first. When a new Service
	// arrives and the list is full, the one with the fewest healings (the least
	// recently seen among equals) leaves it: the counts of a Service that stays in
	// the list are exact.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=10
	TopServices []ServiceOutcomes `json:"topServices,omitempty"`

	// manualInterventions are the latest healings that ended ManualInterventionRequired,
	// newest first, with their cause.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=10
	ManualInterventions []ManualIntervention `json:"manualInterventions,omitempty"`

	// history keeps, per Service, issue and action, the latest results, for the
	// learning rule. The least recently seen key leaves first.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	History []TargetHistory `json:"history,omitempty"`

	// recorded are the latest requests recorded, and recordedThrough the newest
	// request that left that list (by completion, then UID): a request in the list,
	// or finished at or before recordedThrough, is never recorded again.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Recorded []RecordedRequest `json:"recorded,omitempty"`

	// +optional
	RecordedThrough *RecordedRequest `json:"recordedThrough,omitempty"`
}

// IssueActionOutcomes are the healings of one issue with one action.
type IssueActionOutcomes struct {
	// +required
	Issue IssueType `json:"issue"`

	// action is the last action the healing executed; empty when it executed none.
	// +optional
	Action ActionType `json:"action,omitempty"`

	// healings of this issue with this action, and how many ended Healed.
	// +required
	Healings int64 `json:"healings"`
	// +required
	Healed int64 `json:"healed"`

	// timeToHealBuckets counts the healed ones by time to heal (startTime to Healed),
	// in the buckets of TimeToHealBuckets: <=5s, <=10s, <=20s, <=30s, <=1m, <=2m,
	// <=5m, <=10m, longer.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=9
	TimeToHealBuckets []int64 `json:"timeToHealBuckets,omitempty"`

	// timeToHealSeconds is the sum of their times to heal; with healed, the average.
	// +optional
	TimeToHealSeconds int64 `json:"timeToHealSeconds,omitempty"`

	// averageTimeToHeal, p50 and p90 are read from the above: the quantiles are the
	// upper bound of the bucket they fall in ("<=30s", ">10m").
	// +optional
	AverageTimeToHeal *metav1.Duration `json:"averageTimeToHeal,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=16
	P50 string `json:"p50,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=16
	P90 string `json:"p90,omitempty"`

	// lastSeen is when the latest of them finished.
	// +required
	LastSeen metav1.Time `json:"lastSeen"`
}

// ServiceOutcomes are the healings of one Service.
type ServiceOutcomes struct {
	// +required
	// +kubebuilder:validation:MaxLength=63
	Service string `json:"service"`
	// +required
	Healings int64 `json:"healings"`
	// +required
	Healed int64 `json:"healed"`
	// +required
	LastSeen metav1.Time `json:"lastSeen"`
}

// ManualIntervention is a healing that a person must finish.
type ManualIntervention struct {
	// request is the HealingRequest's name (it may have been deleted since).
	// +required
	// +kubebuilder:validation:MaxLength=253
	Request string `json:"request"`
	// +required
	// +kubebuilder:validation:MaxLength=63
	Service string `json:"service"`
	// +optional
	Issue IssueType `json:"issue,omitempty"`
	// reason is the request's Ready reason, message its cause.
	// +required
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason"`
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Message string `json:"message,omitempty"`
	// +required
	At metav1.Time `json:"at"`
	// resolvedAt is when a later healing of the Service ended Healed; until then the
	// intervention is waiting.
	// +optional
	ResolvedAt *metav1.Time `json:"resolvedAt,omitempty"`
}

// IsWaiting reports whether the intervention still waits for a person: no later
// healing of its Service ended Healed.
func (m *ManualIntervention) IsWaiting() bool { return m.ResolvedAt == nil }

// TargetHistory is the latest results of one action on one issue of one Service.
type TargetHistory struct {
	// +required
	// +kubebuilder:validation:MaxLength=63
	Service string `json:"service"`
	// +required
	Issue IssueType `json:"issue"`
	// +required
	Action ActionType `json:"action"`
	// results, oldest first.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=10
	Results []HealingResult `json:"results"`
}

// HealingResult is how one healing ended.
type HealingResult struct {
	// +required
	// +kubebuilder:validation:MaxLength=253
	Request string `json:"request"`
	// +required
	Healed bool `json:"healed"`
	// reason is the request's Ready reason (Healed, AttemptsExhausted, ...).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason,omitempty"`
	// +required
	FinishedAt metav1.Time `json:"finishedAt"`
}

// RecordedRequest identifies a recorded request.
type RecordedRequest struct {
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// +required
	// +kubebuilder:validation:MaxLength=64
	UID string `json:"uid"`
	// finishedAt is the request's completion time.
	// +required
	FinishedAt metav1.Time `json:"finishedAt"`
}

// HealingPolicy governs healing in its namespace: no policy, no remediation.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=hp,categories=selfheal
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.status.mode`
// +kubebuilder:printcolumn:name="Actions",type=integer,JSONPath=`.status.actionsInWindow`,description="Disruptive actions reserved within the circuit breaker window"
// +kubebuilder:printcolumn:name="Deadline",type=string,JSONPath=`.spec.deadline`,priority=1
// +kubebuilder:printcolumn:name="Healings",type=integer,JSONPath=`.status.outcomes.healings`,priority=1,description="Finished healings in the namespace (on the ledger policy)"
// +kubebuilder:printcolumn:name="Success",type=string,JSONPath=`.status.outcomes.successRate`,priority=1,description="Healed of finished healings"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type HealingPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec HealingPolicySpec `json:"spec"`

	// +optional
	Status HealingPolicyStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// HealingPolicyList is a list of HealingPolicies.
type HealingPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HealingPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&HealingPolicy{}, &HealingPolicyList{})
}
