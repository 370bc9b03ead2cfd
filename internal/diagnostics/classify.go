package diagnostics

import (
	"fmt"
	"strings"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// Classify turns a diagnosis into the one issue that decides the remediation, and a
// one-sentence summary. The first rule that holds wins:
//
//  1. TargetNotFound: the Service does not exist.
//  2. NetworkPolicyBlocked: ingress policies select the pods and none admits the caller
//     on any checked Service port. Restarting pods cannot help; it comes before pod
//     causes because even healthy pods would stay unreachable.
//  3. ImagePullBackOff: a container cannot pull its image (not healable by restart).
//  4. ConfigError: CreateContainerConfigError/CreateContainerError, a Service selector
//     that cannot match the workload's pod template, or a workload named by the
//     request that does not exist (not healable by restart).
//  5. Unschedulable: a pod cannot be scheduled (not healable by restart).
//  6. OOMKilled: a container was OOMKilled, crashlooping or not. It wins over
//     CrashLoopBackOff because a restart runs into the same memory limit.
//  7. DeploymentPaused: the Deployment is paused and the Service is not fully serving
//     (any of rules 8-11 would hold); a restart would not roll out, so it is reported.
//  8. CrashLoopBackOff: a container is in CrashLoopBackOff (or RunContainerError).
//  9. NoPods: no active pods (scaled to zero, or every pod terminated).
//  10. NoReadyPods: pods exist but none is ready (running-but-not-ready, pending).
//  11. EndpointsMissing: the Service has no ready endpoints although pods are ready
//     (or, without a selector, none of its hand-managed endpoints is ready).
//  12. FailedPods: the Service serves, but pods in phase Failed linger.
//  13. Healthy.
//
// The issue is derived from the Snapshot with the same helpers the checks use, so it
// does not depend on which checks ran; the findings supply the summary's wording when
// the matching check ran.
func Classify(s *Snapshot, findings []selfhealv1alpha1.Finding) (selfhealv1alpha1.IssueType, string) {
	issue, fallback, check := classify(s)
	summary := fallback
	if check != "" {
		for _, f := range findings {
			if f.Check == check && f.Result != pass && f.Result != skipped {
				summary = f.Message
				break
			}
		}
	}
	return issue, Truncate(summary, MaxMessageLength)
}

// classify returns the issue, a summary built from facts, and the check whose finding
// words the same problem.
func classify(s *Snapshot) (selfhealv1alpha1.IssueType, string, selfhealv1alpha1.CheckName) {
	if s == nil || s.Service == nil {
		name := "target"
		if s != nil {
			name = s.Target.Namespace + "/" + s.Target.Service
		}
		return selfhealv1alpha1.IssueTargetNotFound, fmt.Sprintf("Service %s does not exist.", name), ""
	}
	svc := s.Service.Name
	if v := evaluateNetworkPolicies(s); v.allBlocked() {
		return selfhealv1alpha1.IssueNetworkPolicyBlocked,
			fmt.Sprintf("NetworkPolicies %s select the pods of service %s and none admits %s on port %s.", strings.Join(v.selecting, ","), svc, callerString(s.Caller), portsString(v.blocked)),
			selfhealv1alpha1.CheckNetworkPolicy
	}
	facts := analyzePods(s)
	if len(facts.imagePull) > 0 {
		c := facts.imagePull[0]
		return selfhealv1alpha1.IssueImagePullBackOff,
			fmt.Sprintf("Container %s of pod %s cannot pull its image: %s.", c.container, c.pod, c.detail),
			selfhealv1alpha1.CheckPodStatus
	}
	if len(facts.configError) > 0 {
		c := facts.configError[0]
		return selfhealv1alpha1.IssueConfigError,
			fmt.Sprintf("Container %s of pod %s cannot be created (%s): %s.", c.container, c.pod, c.reason, c.detail),
			selfhealv1alpha1.CheckPodStatus
	}
	if selectorMismatch(s) {
		return selfhealv1alpha1.IssueConfigError,
			fmt.Sprintf("The selector %s of service %s does not match the pod template labels of %s %s.", selectorString(s.Service), svc, s.Workload.Kind, s.Workload.Name),
			selfhealv1alpha1.CheckDeploymentConfig
	}
	if w := s.Target.Workload; w != nil && s.Workload == nil {
		return selfhealv1alpha1.IssueConfigError,
			fmt.Sprintf("The %s %s named by the request does not exist.", w.Kind, w.Name),
			selfhealv1alpha1.CheckDeploymentConfig
	}
	if len(facts.unschedulable) > 0 {
		p := facts.unschedulable[0]
		return selfhealv1alpha1.IssueUnschedulable,
			fmt.Sprintf("Pod %s cannot be scheduled: %s.", p.pod, p.detail),
			selfhealv1alpha1.CheckPodStatus
	}
	if len(facts.oomKilled) > 0 {
		o := facts.oomKilled[0]
		return selfhealv1alpha1.IssueOOMKilled,
			fmt.Sprintf("Container %s of pod %s was OOMKilled (%s); its memory limit or usage must change.", o.container, o.pod, o.detail),
			selfhealv1alpha1.CheckResourceLimits
	}

	// Rules 8-11 are the ones a restart or scale-up can heal.
	issue, summary, check := servingIssue(s, facts)
	if issue != selfhealv1alpha1.IssueHealthy {
		if s.Deployment != nil && s.Deployment.Spec.Paused {
			return selfhealv1alpha1.IssueDeploymentPaused,
				fmt.Sprintf("Deployment %s is paused while %s", s.Deployment.Name, lowerFirst(summary)),
				selfhealv1alpha1.CheckDeploymentConfig
		}
		return issue, summary, check
	}
	if len(facts.failed) > 0 {
		return selfhealv1alpha1.IssueFailedPods,
			fmt.Sprintf("Service %s serves, but %d pods in phase Failed linger.", svc, len(facts.failed)),
			selfhealv1alpha1.CheckFailedPods
	}
	if c := s.Target.FailureClass; c == selfhealv1alpha1.FailureTimeout || c == selfhealv1alpha1.FailureHTTP5xx {
		// Kubernetes sees ready pods, yet calls time out or fail: the process is alive to
		// its probes but not serving (a hang, a deadlock, a broken dependency).
		return selfhealv1alpha1.IssueUnresponsive,
			fmt.Sprintf("Service %s has ready pods and endpoints, but calls to it fail with %s: the pods are not serving.", svc, c), ""
	}
	return selfhealv1alpha1.IssueHealthy, fmt.Sprintf("Service %s is healthy: its pods are ready and it has ready endpoints.", svc), ""
}

func servingIssue(s *Snapshot, facts *podFacts) (selfhealv1alpha1.IssueType, string, selfhealv1alpha1.CheckName) {
	svc := s.Service.Name
	if len(facts.crashLoop) > 0 {
		c := facts.crashLoop[0]
		return selfhealv1alpha1.IssueCrashLoopBackOff,
			fmt.Sprintf("Container %s of pod %s is in CrashLoopBackOff (%s, restarts %d).", c.container, c.pod, c.detail, c.restarts),
			selfhealv1alpha1.CheckPodStatus
	}
	if len(s.Service.Spec.Selector) > 0 {
		if facts.active == 0 {
			return selfhealv1alpha1.IssueNoPods,
				fmt.Sprintf("Service %s has no running pods%s.", svc, workloadReplicasNote(s)),
				selfhealv1alpha1.CheckPodStatus
		}
		if facts.ready == 0 {
			return selfhealv1alpha1.IssueNoReadyPods,
				fmt.Sprintf("None of the %d pods of service %s is ready; %s.", facts.active, svc, primaryPodCause(facts)),
				selfhealv1alpha1.CheckPodStatus
		}
	}
	if s.Service.Spec.Type != "ExternalName" && countEndpoints(s).ready == 0 {
		return selfhealv1alpha1.IssueEndpointsMissing,
			fmt.Sprintf("Service %s has no ready endpoints although %d pods are ready.", svc, facts.ready),
			selfhealv1alpha1.CheckEndpoints
	}
	return selfhealv1alpha1.IssueHealthy, "", ""
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	if s[0] >= 'A' && s[0] <= 'Z' {
		return string(s[0]+'a'-'A') + s[1:]
	}
	return s
}
