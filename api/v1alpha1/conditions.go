package v1alpha1

// Condition types on a HealingRequest. Ready summarizes: True once Healed, False with
// the terminal reason otherwise, Unknown while the healing runs.
const (
	ConditionDiagnosed          = "Diagnosed"
	ConditionRemediationAllowed = "RemediationAllowed"
	ConditionRemediated         = "Remediated"
	ConditionVerified           = "Verified"
	ConditionReady              = "Ready"
)

// Condition reasons. They are constants so that tooling can match on them.
const (
	ReasonProgressing        = "Progressing"
	ReasonDiagnosed          = "Diagnosed"
	ReasonTargetNotFound     = "TargetNotFound"
	ReasonAllowed            = "Allowed"
	ReasonNoPolicy           = "NoPolicy"
	ReasonPolicyNotFound     = "PolicyNotFound"
	ReasonPaused             = "Paused"
	ReasonDryRun             = "DryRun"
	ReasonCooldown           = "Cooldown"
	ReasonCircuitOpen        = "CircuitBreakerOpen"
	ReasonStormLimit         = "StormLimit"
	ReasonDeploymentPaused   = "DeploymentPaused"
	ReasonActionNotAllowed   = "ActionNotAllowed"
	ReasonNotHealable        = "NotHealableByRestart"
	ReasonNothingToDo        = "NothingToDo"
	ReasonActionSucceeded    = "ActionSucceeded"
	ReasonActionFailed       = "ActionFailed"
	ReasonWaitingForRollout  = "WaitingForRollout"
	ReasonServiceAvailable   = "ServiceAvailable"
	ReasonHealed             = "Healed"
	ReasonDeadlineExceeded   = "DeadlineExceeded"
	ReasonAttemptsExhausted  = "AttemptsExhausted"
	ReasonManualIntervention = "ManualInterventionRequired"
	ReasonDuplicate          = "Duplicate"
	ReasonAlreadyHealthy     = "AlreadyHealthy"
	ReasonValid              = "Valid"
	// ReasonNotPermitted: the namespace has not opted in (no RoleBinding to the
	// remediation ClusterRole), or the admission policy refused the write.
	ReasonNotPermitted = "NotPermitted"
	// ReasonActionIneffective: the learning rule refused an action that has not healed
	// this issue of this Service the last spec.learning.minAttempts times.
	ReasonActionIneffective = "ActionIneffective"
)
