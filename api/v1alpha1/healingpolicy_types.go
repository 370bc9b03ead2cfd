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
	// together they make a reservation idempotent.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Request string `json:"request"`

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
}

// HealingPolicy governs healing in its namespace: no policy, no remediation.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=hp,categories=selfheal
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.status.mode`
// +kubebuilder:printcolumn:name="Actions",type=integer,JSONPath=`.status.actionsInWindow`,description="Disruptive actions reserved within the circuit breaker window"
// +kubebuilder:printcolumn:name="Deadline",type=string,JSONPath=`.spec.deadline`,priority=1
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
