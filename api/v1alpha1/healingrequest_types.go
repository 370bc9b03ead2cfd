package v1alpha1

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TriggerSource says who reported the failure.
// +kubebuilder:validation:Enum=gateway;chat-api;manual
type TriggerSource string

const (
	TriggerSourceGateway TriggerSource = "gateway"
	TriggerSourceChatAPI TriggerSource = "chat-api"
	TriggerSourceManual  TriggerSource = "manual"
)

// FailureClass is what the caller saw when its call to the target failed.
// +kubebuilder:validation:Enum=ConnectionRefused;ConnectionReset;Timeout;HTTP5xx;MCPSessionLost;Other
type FailureClass string

const (
	FailureConnectionRefused FailureClass = "ConnectionRefused"
	FailureConnectionReset   FailureClass = "ConnectionReset"
	FailureTimeout           FailureClass = "Timeout"
	FailureHTTP5xx           FailureClass = "HTTP5xx"
	FailureMCPSessionLost    FailureClass = "MCPSessionLost"
	FailureOther             FailureClass = "Other"
)

// WorkloadKind is the kind of workload selfheal can restart and scale.
// +kubebuilder:validation:Enum=Deployment;StatefulSet
type WorkloadKind string

const (
	WorkloadDeployment  WorkloadKind = "Deployment"
	WorkloadStatefulSet WorkloadKind = "StatefulSet"
)

// WorkloadReference names a workload in the HealingRequest's namespace.
type WorkloadReference struct {
	// kind of the workload.
	// +required
	Kind WorkloadKind `json:"kind"`

	// name of the workload.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// String is the workload as kubectl names it: "deployment/api".
func (w WorkloadReference) String() string {
	return strings.ToLower(string(w.Kind)) + "/" + w.Name
}

// HealingTarget is the in-cluster Service whose calls failed.
type HealingTarget struct {
	// service is the name of the Service in the HealingRequest's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Service string `json:"service"`

	// workload backing the Service. When omitted, it is resolved from the Service's
	// selector and the owners of the pods it selects.
	// +optional
	Workload *WorkloadReference `json:"workload,omitempty"`
}

// HealingTrigger records the failure that started the healing.
// +kubebuilder:validation:XValidation:rule="!has(self.httpStatus) || self.failureClass == 'HTTP5xx'",message="httpStatus is only allowed with failureClass HTTP5xx"
type HealingTrigger struct {
	// source of the report.
	// +required
	Source TriggerSource `json:"source"`

	// failureClass is what the caller saw.
	// +required
	FailureClass FailureClass `json:"failureClass"`

	// httpStatus is the upstream status code, for HTTP5xx failures.
	// +optional
	// +kubebuilder:validation:Minimum=500
	// +kubebuilder:validation:Maximum=599
	HTTPStatus int32 `json:"httpStatus,omitempty"`

	// message is the caller's error text. Callers must not put credentials here.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// upstream is the gateway upstream name the failed call went to, when known.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Upstream string `json:"upstream,omitempty"`

	// time the failure was observed.
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
}

// HealingRequestSpec is one reported failure of one target. It is immutable: a new
// incident is a new HealingRequest.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable; create a new HealingRequest"
type HealingRequestSpec struct {
	// target of the healing.
	// +required
	Target HealingTarget `json:"target"`

	// trigger is the failure that was reported.
	// +required
	Trigger HealingTrigger `json:"trigger"`

	// policyName selects a HealingPolicy in this namespace by name. When omitted, the
	// policy whose service selector matches the target is used.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	PolicyName string `json:"policyName,omitempty"`

	// dryRun diagnoses and plans, but executes nothing.
	// +optional
	DryRun bool `json:"dryRun,omitempty"`
}

// HealingPhase is where a healing is in its lifecycle.
// +kubebuilder:validation:Enum=Pending;Diagnosing;Remediating;Verifying;Healed;Failed;ManualInterventionRequired;Skipped
type HealingPhase string

const (
	PhasePending                    HealingPhase = "Pending"
	PhaseDiagnosing                 HealingPhase = "Diagnosing"
	PhaseRemediating                HealingPhase = "Remediating"
	PhaseVerifying                  HealingPhase = "Verifying"
	PhaseHealed                     HealingPhase = "Healed"
	PhaseFailed                     HealingPhase = "Failed"
	PhaseManualInterventionRequired HealingPhase = "ManualInterventionRequired"
	PhaseSkipped                    HealingPhase = "Skipped"
)

// IsTerminal reports whether no further work happens in this phase.
func (p HealingPhase) IsTerminal() bool {
	switch p {
	case PhaseHealed, PhaseFailed, PhaseManualInterventionRequired, PhaseSkipped:
		return true
	}
	return false
}

// Serves reports whether a finished healing left the service serving: Healed (an
// action restored it), or Skipped because it was already serving and nothing was done
// (Ready is True for both). A caller waiting on the healing retries its call then.
func (s *HealingRequestStatus) Serves() bool {
	if s.Phase == PhaseHealed {
		return true
	}
	for _, c := range s.Conditions {
		if c.Type == ConditionReady {
			return s.Phase == PhaseSkipped && c.Status == metav1.ConditionTrue && c.Reason == ReasonAlreadyHealthy
		}
	}
	return false
}

// IssueType is the one classified problem that decides the remediation.
// +kubebuilder:validation:Enum=Healthy;TargetNotFound;NoPods;CrashLoopBackOff;NoReadyPods;EndpointsMissing;ImagePullBackOff;ConfigError;Unschedulable;OOMKilled;NetworkPolicyBlocked;FailedPods;DeploymentPaused;Unresponsive
type IssueType string

const (
	IssueHealthy              IssueType = "Healthy"
	IssueTargetNotFound       IssueType = "TargetNotFound"
	IssueNoPods               IssueType = "NoPods"
	IssueCrashLoopBackOff     IssueType = "CrashLoopBackOff"
	IssueNoReadyPods          IssueType = "NoReadyPods"
	IssueEndpointsMissing     IssueType = "EndpointsMissing"
	IssueImagePullBackOff     IssueType = "ImagePullBackOff"
	IssueConfigError          IssueType = "ConfigError"
	IssueUnschedulable        IssueType = "Unschedulable"
	IssueOOMKilled            IssueType = "OOMKilled"
	IssueNetworkPolicyBlocked IssueType = "NetworkPolicyBlocked"
	IssueFailedPods           IssueType = "FailedPods"
	IssueDeploymentPaused     IssueType = "DeploymentPaused"
	// IssueUnresponsive: pods are ready and endpoints published, yet the caller's calls
	// time out or fail with 5xx.
	IssueUnresponsive IssueType = "Unresponsive"
)

// CheckName names one diagnostic check.
// +kubebuilder:validation:Enum=PodStatus;Endpoints;PodLogs;DeploymentConfig;ResourceLimits;NetworkPolicy;FailedPods;ResourceUsage
type CheckName string

const (
	CheckPodStatus        CheckName = "PodStatus"
	CheckEndpoints        CheckName = "Endpoints"
	CheckPodLogs          CheckName = "PodLogs"
	CheckDeploymentConfig CheckName = "DeploymentConfig"
	CheckResourceLimits   CheckName = "ResourceLimits"
	CheckNetworkPolicy    CheckName = "NetworkPolicy"
	CheckFailedPods       CheckName = "FailedPods"
	CheckResourceUsage    CheckName = "ResourceUsage"
)

// FindingResult is a check's verdict.
// +kubebuilder:validation:Enum=Pass;Warn;Fail;Skipped
type FindingResult string

const (
	ResultPass    FindingResult = "Pass"
	ResultWarn    FindingResult = "Warn"
	ResultFail    FindingResult = "Fail"
	ResultSkipped FindingResult = "Skipped"
)

// Finding is what one check saw. Evidence is bounded and redacted of secrets.
type Finding struct {
	// check that produced the finding.
	// +required
	Check CheckName `json:"check"`

	// result of the check.
	// +required
	Result FindingResult `json:"result"`

	// message says what was seen, in a sentence.
	// +required
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message"`

	// evidence is a few supporting lines (pod states, log lines, policy names).
	// +optional
	// +kubebuilder:validation:MaxItems=10
	// +kubebuilder:validation:items:MaxLength=512
	// +listType=atomic
	Evidence []string `json:"evidence,omitempty"`
}

// ActionType is a bounded remediation. None edits a spec: each is what an operator
// would do with kubectl rollout restart, kubectl scale or kubectl delete pod.
// +kubebuilder:validation:Enum=RolloutRestart;ScaleFromZero;DeleteFailedPods
type ActionType string

const (
	ActionRolloutRestart   ActionType = "RolloutRestart"
	ActionScaleFromZero    ActionType = "ScaleFromZero"
	ActionDeleteFailedPods ActionType = "DeleteFailedPods"
)

// Disruptive reports whether the action replaces serving pods, and so counts against
// the circuit breaker and the storm limit.
func (a ActionType) Disruptive() bool {
	return a == ActionRolloutRestart || a == ActionScaleFromZero
}

// ActionOutcome is how an action ended.
// +kubebuilder:validation:Enum=Intended;Succeeded;Failed;DryRun
type ActionOutcome string

const (
	// OutcomeIntended is an action decided and not yet known to have run: a further
	// step of an attempt, or a reservation adopted from an earlier reconcile. It is
	// persisted before it is executed, so a manager that restarts mid-action executes
	// it again idempotently instead of acting anew. An attempt that acts in the pass
	// that reserved it records the intent with its outcome (the ledger reservation is
	// its intent).
	OutcomeIntended  ActionOutcome = "Intended"
	OutcomeSucceeded ActionOutcome = "Succeeded"
	OutcomeFailed    ActionOutcome = "Failed"
	OutcomeDryRun    ActionOutcome = "DryRun"
)

// HealingAction is one remediation step, recorded before it runs.
type HealingAction struct {
	// type of the action.
	// +required
	Type ActionType `json:"type"`

	// attempt this action belongs to, from 1.
	// +required
	// +kubebuilder:validation:Minimum=1
	Attempt int32 `json:"attempt"`

	// workload acted on.
	// +required
	Workload WorkloadReference `json:"workload"`

	// outcome of the action.
	// +required
	Outcome ActionOutcome `json:"outcome"`

	// message gives details: what changed, or why it failed.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// startedAt is when the intent was recorded, with microseconds: a restart stamps
	// it on the pod template, and two attempts within one second must differ.
	// +required
	StartedAt metav1.MicroTime `json:"startedAt"`

	// completedAt is when the outcome was known.
	// +optional
	CompletedAt *metav1.Time `json:"completedAt,omitempty"`
}

// ProgressEntry is one line of the healing's progress log.
type ProgressEntry struct {
	// time of the step.
	// +required
	Time metav1.Time `json:"time"`

	// phase the healing was in.
	// +required
	Phase HealingPhase `json:"phase"`

	// message says what happened, for people.
	// +required
	// +kubebuilder:validation:MaxLength=512
	Message string `json:"message"`
}

// Bounds of the status lists; the controller trims to them, the CRD enforces them.
const (
	MaxFindings = 16
	MaxActions  = 10
	MaxProgress = 50
)

// HealingRequestStatus is the observed state of a healing: an audit record.
type HealingRequestStatus struct {
	// observedGeneration is the generation the status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// phase of the healing.
	// +optional
	Phase HealingPhase `json:"phase,omitempty"`

	// conditions: Diagnosed, RemediationAllowed, Remediated, Verified and Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// issue is the classified problem.
	// +optional
	Issue IssueType `json:"issue,omitempty"`

	// workload is the workload resolved for the target.
	// +optional
	Workload *WorkloadReference `json:"workload,omitempty"`

	// policy is the HealingPolicy that governed this healing, if any.
	// +optional
	Policy string `json:"policy,omitempty"`

	// duplicateOf names the active HealingRequest for the same target that this one
	// defers to.
	// +optional
	DuplicateOf string `json:"duplicateOf,omitempty"`

	// findings of the last diagnosis, one per check.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Findings []Finding `json:"findings,omitempty"`

	// actions taken (or, in dry-run, planned), in order.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=10
	Actions []HealingAction `json:"actions,omitempty"`

	// lastAction is the type of the latest action, for kubectl get.
	// +optional
	LastAction ActionType `json:"lastAction,omitempty"`

	// attempts started so far.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`

	// progress is a bounded log of the healing's steps, oldest first.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=50
	Progress []ProgressEntry `json:"progress,omitempty"`

	// startTime is when the controller first saw the request, with microseconds; the
	// deadline counts from it.
	// +optional
	StartTime *metav1.MicroTime `json:"startTime,omitempty"`

	// deadline after which no action is taken and the healing ends: startTime plus
	// the policy's deadline.
	// +optional
	Deadline *metav1.MicroTime `json:"deadline,omitempty"`

	// completionTime is when the healing reached a terminal phase.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// HealingRequest is one incident: a failed call to an in-cluster Service, and the
// diagnosis, remediation and verification that follow it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=hr,categories=selfheal
// +kubebuilder:selectablefield:JSONPath=`.spec.target.service`
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.target.service`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Issue",type=string,JSONPath=`.status.issue`
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.status.lastAction`
// +kubebuilder:printcolumn:name="Trigger",type=string,JSONPath=`.spec.trigger.failureClass`,priority=1
// +kubebuilder:printcolumn:name="Attempts",type=integer,JSONPath=`.status.attempts`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type HealingRequest struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec HealingRequestSpec `json:"spec"`

	// +optional
	Status HealingRequestStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// HealingRequestList is a list of HealingRequests.
type HealingRequestList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HealingRequest `json:"items"`
}

func init() {
	SchemeBuilder.Register(&HealingRequest{}, &HealingRequestList{})
}
