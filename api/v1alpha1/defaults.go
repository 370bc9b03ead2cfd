package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func durationOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.Duration
}

func int32Or(v *int32, def int32) int32 {
	if v == nil {
		return def
	}
	return *v
}

// GetDeadline is the time one healing may take from the controller's first sight of it.
func (s *HealingPolicySpec) GetDeadline() time.Duration {
	return durationOr(s.Deadline, DefaultDeadline)
}

// GetMaxAttempts is how many remediation attempts one healing may make.
func (s *HealingPolicySpec) GetMaxAttempts() int32 {
	return int32Or(s.MaxAttempts, DefaultMaxAttempts)
}

// GetCooldown is the quiet time after a healing of a target.
func (s *HealingPolicySpec) GetCooldown() time.Duration {
	return durationOr(s.Cooldown, DefaultCooldown)
}

// GetBreakerWindow is the window over which disruptive actions are counted.
func (s *HealingPolicySpec) GetBreakerWindow() time.Duration {
	if s.CircuitBreaker == nil {
		return DefaultBreakerWindow
	}
	return durationOr(s.CircuitBreaker.Window, DefaultBreakerWindow)
}

// GetMaxActionsPerTarget is the most disruptive actions on one target per window.
func (s *HealingPolicySpec) GetMaxActionsPerTarget() int32 {
	if s.CircuitBreaker == nil {
		return DefaultMaxActionsPerTarget
	}
	return int32Or(s.CircuitBreaker.MaxActionsPerTarget, DefaultMaxActionsPerTarget)
}

// GetNamespaceMaxActions is the storm limit: disruptive actions per namespace per window.
func (s *HealingPolicySpec) GetNamespaceMaxActions() int32 {
	if s.CircuitBreaker == nil {
		return DefaultStormMaxActions
	}
	return int32Or(s.CircuitBreaker.NamespaceMaxActions, DefaultStormMaxActions)
}

// GetTTLAfterFinished is how long a terminal HealingRequest is kept.
func (s *HealingPolicySpec) GetTTLAfterFinished() time.Duration {
	if s.Retention == nil {
		return DefaultTTLAfterFinished
	}
	return durationOr(s.Retention.TTLAfterFinished, DefaultTTLAfterFinished)
}

// GetMaxHistoryPerTarget is how many terminal HealingRequests are kept per target.
func (s *HealingPolicySpec) GetMaxHistoryPerTarget() int32 {
	if s.Retention == nil {
		return DefaultMaxHistoryPerTarget
	}
	return int32Or(s.Retention.MaxHistoryPerTarget, DefaultMaxHistoryPerTarget)
}

// LearningEnabled reports whether the learning rule applies.
func (s *HealingPolicySpec) LearningEnabled() bool {
	return s.Learning == nil || !s.Learning.Disabled
}

// GetLearningMinAttempts is how many failed healings in a row make an action refused.
func (s *HealingPolicySpec) GetLearningMinAttempts() int32 {
	if s.Learning == nil {
		return DefaultLearningMinAttempts
	}
	return int32Or(s.Learning.MinAttempts, DefaultLearningMinAttempts)
}

// GetLearningWindow is how long outcomes count for the learning rule.
func (s *HealingPolicySpec) GetLearningWindow() time.Duration {
	if s.Learning == nil {
		return DefaultLearningWindow
	}
	return durationOr(s.Learning.Window, DefaultLearningWindow)
}

// Allows reports whether the policy permits an action.
func (s *HealingPolicySpec) Allows(a ActionType) bool {
	for _, allowed := range s.AllowedActions {
		if allowed == a {
			return true
		}
	}
	return false
}

// EffectiveMode is Paused when any pause request is present, else DryRun when set,
// else Active.
func (s *HealingPolicySpec) EffectiveMode() PolicyMode {
	switch {
	case len(s.PauseRequests) > 0:
		return ModePaused
	case s.DryRun:
		return ModeDryRun
	}
	return ModeActive
}
