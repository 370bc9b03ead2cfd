package diagnostics

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

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
// The issue is derived from the Snapshot's Facts, which the checks read too, so it
// does not depend on which checks ran; the findings supply the summary's wording when
// the matching check ran. On an observation (Snapshot.Observation) rule 2 cannot hold:
// the policies were not read.
func Classify(s *Snapshot, findings []selfhealv1alpha1.Finding) (selfhealv1alpha1.IssueType, string) {
	issue, fallback, check := classify(s, s.Facts())
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
func classify(s *Snapshot, f *Facts) (selfhealv1alpha1.IssueType, string, selfhealv1alpha1.CheckName) {
	if s == nil || s.Service == nil {
		name := "target"
		if s != nil {
			name = s.Target.Namespace + "/" + s.Target.Service
		}
		return selfhealv1alpha1.IssueTargetNotFound, fmt.Sprintf("Service %s does not exist.", name), ""
	}
	svc := s.Service.Name
	if v := f.Policies; v.AllBlocked() {
		return selfhealv1alpha1.IssueNetworkPolicyBlocked,
			fmt.Sprintf("NetworkPolicies %s select the pods of service %s and none admits %s on port %s.", strings.Join(v.Selecting, ","), svc, callerString(s.Caller), portsString(v.Blocked)),
			selfhealv1alpha1.CheckNetworkPolicy
	}
	facts := &f.Pods
	if len(facts.ImagePull) > 0 {
		c := facts.ImagePull[0]
		return selfhealv1alpha1.IssueImagePullBackOff,
			fmt.Sprintf("%s %s of pod %s cannot pull its image: %s.", c.KindTitle(), c.Container, c.Pod, c.Detail),
			selfhealv1alpha1.CheckPodStatus
	}
	if len(facts.ConfigError) > 0 {
		c := facts.ConfigError[0]
		return selfhealv1alpha1.IssueConfigError,
			fmt.Sprintf("%s %s of pod %s cannot be created (%s): %s.", c.KindTitle(), c.Container, c.Pod, c.Reason, c.Detail),
			selfhealv1alpha1.CheckPodStatus
	}
	if f.Workload.SelectorMismatch {
		return selfhealv1alpha1.IssueConfigError,
			fmt.Sprintf("The selector %s of service %s does not match the pod template labels of %s %s.", selectorString(s.Service), svc, s.Workload.Kind, s.Workload.Name),
			selfhealv1alpha1.CheckDeploymentConfig
	}
	if w := s.Target.Workload; w != nil && s.Workload == nil {
		return selfhealv1alpha1.IssueConfigError,
			fmt.Sprintf("The %s %s named by the request does not exist.", w.Kind, w.Name),
			selfhealv1alpha1.CheckDeploymentConfig
	}
	if len(facts.Unschedulable) > 0 {
		p := facts.Unschedulable[0]
		return selfhealv1alpha1.IssueUnschedulable,
			fmt.Sprintf("Pod %s cannot be scheduled: %s.", p.Pod, p.Detail),
			selfhealv1alpha1.CheckPodStatus
	}
	if len(facts.OOMKilled) > 0 {
		o := facts.OOMKilled[0]
		return selfhealv1alpha1.IssueOOMKilled,
			fmt.Sprintf("%s %s of pod %s was OOMKilled (%s); its memory limit or usage must change.", o.KindTitle(), o.Container, o.Pod, o.Detail),
			selfhealv1alpha1.CheckResourceLimits
	}

	// Rules 8-11 are the ones a restart or scale-up can heal.
	issue, summary, check := servingIssue(s, f)
	if issue != selfhealv1alpha1.IssueHealthy {
		if s.Deployment != nil && f.Workload.Paused {
			return selfhealv1alpha1.IssueDeploymentPaused,
				fmt.Sprintf("Deployment %s is paused while %s", s.Deployment.Name, lowerFirst(summary)),
				selfhealv1alpha1.CheckDeploymentConfig
		}
		return issue, summary, check
	}
	if len(facts.Failed) > 0 {
		return selfhealv1alpha1.IssueFailedPods,
			fmt.Sprintf("Service %s serves, but %d pods in phase Failed linger.", svc, len(facts.Failed)),
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

func servingIssue(s *Snapshot, f *Facts) (selfhealv1alpha1.IssueType, string, selfhealv1alpha1.CheckName) {
	svc := s.Service.Name
	facts := &f.Pods
	if len(facts.CrashLoop) > 0 {
		c := facts.CrashLoop[0]
		return selfhealv1alpha1.IssueCrashLoopBackOff,
			fmt.Sprintf("%s %s of pod %s is in CrashLoopBackOff (%s, restarts %d).", c.KindTitle(), c.Container, c.Pod, c.Detail, c.Restarts),
			selfhealv1alpha1.CheckPodStatus
	}
	if len(s.Service.Spec.Selector) > 0 {
		if facts.Active == 0 {
			return selfhealv1alpha1.IssueNoPods,
				fmt.Sprintf("Service %s has no running pods%s.", svc, workloadReplicasNote(s, f)),
				selfhealv1alpha1.CheckPodStatus
		}
		if facts.Ready == 0 {
			return selfhealv1alpha1.IssueNoReadyPods,
				fmt.Sprintf("None of the %d pods of service %s is ready; %s.", facts.Active, svc, primaryPodCause(facts)),
				selfhealv1alpha1.CheckPodStatus
		}
	}
	if s.Service.Spec.Type != corev1.ServiceTypeExternalName && f.Endpoints.Ready == 0 {
		return selfhealv1alpha1.IssueEndpointsMissing,
			fmt.Sprintf("Service %s has no ready endpoints although %d pods are ready.", svc, facts.Ready),
			selfhealv1alpha1.CheckEndpoints
	}
	return selfhealv1alpha1.IssueHealthy, "", ""
}

// upperFirst capitalizes an ASCII first letter, to start a sentence.
func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
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
