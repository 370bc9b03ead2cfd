package diagnostics

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// Check is a pure function of a Snapshot and its Facts that returns exactly one
// finding. Checks read what the pods, the workload, the endpoints and the policies say
// from the Facts; the Snapshot is for the raw objects a check quotes as evidence.
type Check func(*Snapshot, *Facts) selfhealv1alpha1.Finding

// DefaultChecks returns every check, in the order findings are reported.
func DefaultChecks() []Check {
	return []Check{
		PodStatusCheck,
		EndpointsCheck,
		PodLogsCheck,
		DeploymentConfigCheck,
		ResourceLimitsCheck,
		NetworkPolicyCheck,
		FailedPodsCheck,
		ResourceUsageCheck,
	}
}

const (
	pass    = selfhealv1alpha1.ResultPass
	warn    = selfhealv1alpha1.ResultWarn
	fail    = selfhealv1alpha1.ResultFail
	skipped = selfhealv1alpha1.ResultSkipped
)

// noService is the finding of every check when the target Service does not exist.
func noService(check selfhealv1alpha1.CheckName, s *Snapshot) (selfhealv1alpha1.Finding, bool) {
	if s != nil && s.Service != nil {
		return selfhealv1alpha1.Finding{}, false
	}
	name := "target"
	if s != nil {
		name = s.Target.Namespace + "/" + s.Target.Service
	}
	return finding(check, skipped, nil, "skipped: service %s not found", name), true
}

func selectorString(svc *corev1.Service) string {
	return labels.SelectorFromSet(svc.Spec.Selector).String()
}

// PodStatusCheck says whether the Service's pods run and are ready, and if not, the
// most specific cause the kubelet and the scheduler report.
func PodStatusCheck(s *Snapshot, f *Facts) selfhealv1alpha1.Finding {
	const check = selfhealv1alpha1.CheckPodStatus
	if f, ok := noService(check, s); ok {
		return f
	}
	if len(s.Service.Spec.Selector) == 0 {
		return finding(check, skipped, nil, "skipped: service %s has no selector, so it selects no pods", s.Service.Name)
	}
	facts := &f.Pods
	if facts.Total == 0 {
		return finding(check, fail, nil, "No pods match the selector %s of service %s%s.", selectorString(s.Service), s.Service.Name, workloadReplicasNote(s, f))
	}
	ev := &evidence{}
	for _, list := range [][]ContainerIssue{facts.ImagePull, facts.ConfigError, facts.CrashLoop} {
		for _, c := range list {
			ev.add("%s", c)
		}
	}
	for _, list := range [][]PodIssue{facts.Unschedulable, facts.NotReady, facts.Pending} {
		for _, p := range list {
			ev.add("%s", p)
		}
	}
	if facts.Active == 0 {
		for _, p := range facts.Failed {
			ev.add("%s", p)
		}
		if f.Workload.ScaledToZero() {
			return finding(check, fail, ev, "Service %s has no running pods%s; %d left over are going away.", s.Service.Name, workloadReplicasNote(s, f), facts.Total)
		}
		return finding(check, fail, ev, "All %d pods of service %s have terminated; none is running.", facts.Total, s.Service.Name)
	}
	cause := primaryPodCause(facts)
	if cause == "" && facts.Ready == facts.Active {
		return finding(check, pass, ev, "All %d active pods of service %s are running and ready.", facts.Active, s.Service.Name)
	}
	if cause == "" {
		cause = "some pods are not ready"
	}
	result := fail
	if facts.Ready > 0 {
		result = warn
	}
	return finding(check, result, ev, "%d of %d active pods are ready; %s.", facts.Ready, facts.Active, cause)
}

// primaryPodCause is the most specific reason pods fail, in the classifier's order.
func primaryPodCause(f *PodFacts) string {
	switch {
	case len(f.ImagePull) > 0:
		c := f.ImagePull[0]
		return fmt.Sprintf("%s %s of pod %s cannot pull its image (%s): %s", c.Kind(), c.Container, c.Pod, c.Reason, c.Detail)
	case len(f.ConfigError) > 0:
		c := f.ConfigError[0]
		return fmt.Sprintf("%s %s of pod %s cannot be created (%s): %s", c.Kind(), c.Container, c.Pod, c.Reason, c.Detail)
	case len(f.Unschedulable) > 0:
		p := f.Unschedulable[0]
		return fmt.Sprintf("pod %s cannot be scheduled: %s", p.Pod, p.Detail)
	case len(f.CrashLoop) > 0:
		c := f.CrashLoop[0]
		return fmt.Sprintf("%s %s of pod %s is in %s, %s, restarts %d", c.Kind(), c.Container, c.Pod, c.Reason, c.Detail, c.Restarts)
	case len(f.NotReady) > 0:
		p := f.NotReady[0]
		return fmt.Sprintf("pod %s is running but not ready (%s)", p.Pod, p.Detail)
	case len(f.Pending) > 0:
		p := f.Pending[0]
		return fmt.Sprintf("pod %s is pending (%s)", p.Pod, p.Detail)
	}
	return ""
}

func workloadReplicasNote(s *Snapshot, f *Facts) string {
	switch {
	case s.Deployment != nil:
		return fmt.Sprintf(" (deployment %s wants %d replicas)", s.Deployment.Name, f.Workload.DesiredReplicas)
	case s.StatefulSet != nil:
		return fmt.Sprintf(" (statefulset %s wants %d replicas)", s.StatefulSet.Name, f.Workload.DesiredReplicas)
	}
	return ""
}

// EndpointsCheck says whether the Service has ready endpoints to send traffic to.
func EndpointsCheck(s *Snapshot, f *Facts) selfhealv1alpha1.Finding {
	const check = selfhealv1alpha1.CheckEndpoints
	if f, ok := noService(check, s); ok {
		return f
	}
	if s.Service.Spec.Type == corev1.ServiceTypeExternalName {
		return finding(check, skipped, nil, "skipped: service %s is of type ExternalName and has no endpoints", s.Service.Name)
	}
	c := f.Endpoints
	ev := &evidence{}
	for _, sl := range s.EndpointSlices {
		ev.add("endpointslice %s: %d endpoints", sl.Name, len(sl.Endpoints))
	}
	for _, p := range c.NotReadyNames {
		ev.add("not ready: %s", p)
	}
	if len(s.Service.Spec.Selector) == 0 {
		if c.Ready == 0 {
			return finding(check, fail, ev, "Service %s has no selector and no ready endpoints; its endpoints are managed by hand and none is ready.", s.Service.Name)
		}
		return finding(check, pass, ev, "Service %s has no selector; %d ready endpoints are managed by hand.", s.Service.Name, c.Ready)
	}
	pods := &f.Pods
	if pods.Total == 0 {
		return finding(check, fail, ev, "The selector %s of service %s matches no pods, so it has no endpoints.", selectorString(s.Service), s.Service.Name)
	}
	if c.Ready == 0 {
		if pods.Ready > 0 {
			return finding(check, fail, ev, "Service %s has no ready endpoints although %d of its pods are ready (%d endpoints not ready).", s.Service.Name, pods.Ready, c.NotReady)
		}
		return finding(check, fail, ev, "Service %s has no ready endpoints (%d not ready).", s.Service.Name, c.NotReady)
	}
	if c.NotReady > 0 {
		return finding(check, warn, ev, "Service %s has %d ready and %d not ready endpoints.", s.Service.Name, c.Ready, c.NotReady)
	}
	return finding(check, pass, ev, "Service %s has %d ready endpoints.", s.Service.Name, c.Ready)
}

// PodLogsCheck shows the window of error lines from the unhealthy pods' logs. Logs
// that cannot be read make the check Skipped, never Fail.
func PodLogsCheck(s *Snapshot, _ *Facts) selfhealv1alpha1.Finding {
	const check = selfhealv1alpha1.CheckPodLogs
	if f, ok := noService(check, s); ok {
		return f
	}
	if len(s.Logs) == 0 {
		return finding(check, skipped, nil, "skipped: no unhealthy pod with a started container, so no logs were read")
	}
	// Previous containers first: they hold the crash that restarted the container.
	logs := append([]ContainerLog(nil), s.Logs...)
	sort.SliceStable(logs, func(i, j int) bool { return logs[i].Previous && !logs[j].Previous })
	ev := &evidence{}
	var unreadable []string
	read, withErrors := 0, 0
	for _, l := range logs {
		if l.Err != "" {
			unreadable = append(unreadable, fmt.Sprintf("%s/%s%s: %s", l.Pod, l.Container, previousMark(l.Previous), l.Err))
			continue
		}
		read++
		window := ErrorWindow(l.Lines, 5, 1)
		if len(window) == 0 {
			continue
		}
		withErrors++
		for _, line := range window {
			ev.add("%s/%s%s: %s", l.Pod, l.Container, previousMark(l.Previous), line)
		}
	}
	for _, u := range unreadable {
		ev.add("unreadable %s", u)
	}
	switch {
	case read == 0:
		return finding(check, skipped, ev, "skipped: logs could not be read: %s", unreadable[0])
	case withErrors > 0:
		return finding(check, fail, ev, "Error lines found in %d of %d container logs read from unhealthy pods.", withErrors, read)
	}
	return finding(check, pass, ev, "No error lines in the last lines of %d container logs read from unhealthy pods.", read)
}

func previousMark(previous bool) string {
	if previous {
		return " (previous)"
	}
	return ""
}

// DeploymentConfigCheck looks at the workload's spec and status for what stops it
// from serving: scaled to zero, paused, a stuck rollout, unavailable replicas, or a
// Service selector that cannot match its pods.
func DeploymentConfigCheck(s *Snapshot, f *Facts) selfhealv1alpha1.Finding {
	const check = selfhealv1alpha1.CheckDeploymentConfig
	if f, ok := noService(check, s); ok {
		return f
	}
	if s.Workload == nil {
		if w := s.Target.Workload; w != nil {
			return finding(check, fail, nil, "The %s %s named by the request does not exist.", w.Kind, w.Name)
		}
		return finding(check, skipped, nil, "skipped: no Deployment or StatefulSet could be resolved for service %s", s.Service.Name)
	}
	ev := &evidence{}
	type problem struct {
		result  selfhealv1alpha1.FindingResult
		message string
	}
	var problems []problem
	add := func(r selfhealv1alpha1.FindingResult, format string, args ...any) {
		problems = append(problems, problem{r, fmt.Sprintf(format, args...)})
	}
	kind, name := string(s.Workload.Kind), s.Workload.Name
	if f.Workload.SelectorMismatch {
		add(fail, "the selector %s of service %s does not match the pod template labels of %s %s", selectorString(s.Service), s.Service.Name, kind, name)
	}
	switch {
	case s.Deployment != nil:
		d := s.Deployment
		want := f.Workload.DesiredReplicas
		ev.add("deployment %s: replicas %d, updated %d, ready %d, available %d, unavailable %d",
			d.Name, want, d.Status.UpdatedReplicas, d.Status.ReadyReplicas, d.Status.AvailableReplicas, d.Status.UnavailableReplicas)
		for _, c := range d.Status.Conditions {
			ev.add("condition %s=%s reason %s: %s", c.Type, c.Status, c.Reason, oneLine(c.Message))
		}
		if want == 0 {
			add(fail, "Deployment %s is scaled to zero replicas", d.Name)
		}
		if c := f.Workload.ProgressDeadlineExceeded; c != nil {
			add(fail, "Deployment %s exceeded its progress deadline: %s", d.Name, oneLine(c.Message))
		}
		if f.Workload.Paused {
			add(warn, "Deployment %s is paused, so rollouts (including restarts) do not proceed", d.Name)
		}
		if want > 0 && d.Status.UnavailableReplicas > 0 {
			add(warn, "Deployment %s has %d of %d replicas unavailable", d.Name, d.Status.UnavailableReplicas, want)
		}
	case s.StatefulSet != nil:
		st := s.StatefulSet
		want := f.Workload.DesiredReplicas
		ev.add("statefulset %s: replicas %d, ready %d, available %d, current revision %s, update revision %s",
			st.Name, want, st.Status.ReadyReplicas, st.Status.AvailableReplicas, st.Status.CurrentRevision, st.Status.UpdateRevision)
		if want == 0 {
			add(fail, "StatefulSet %s is scaled to zero replicas", st.Name)
		}
		if want > 0 && st.Status.ReadyReplicas < want {
			add(warn, "StatefulSet %s has %d of %d replicas ready", st.Name, st.Status.ReadyReplicas, want)
		}
	}
	if len(problems) == 0 {
		return finding(check, pass, ev, "%s %s is configured to serve: replicas set, not paused, rollout progressing, selector matches.", kind, name)
	}
	// The worst problem leads the message; the others follow it.
	sort.SliceStable(problems, func(i, j int) bool { return problems[i].result == fail && problems[j].result != fail })
	msgs := make([]string, len(problems))
	for i, p := range problems {
		msgs[i] = p.message
	}
	msg := strings.Join(msgs, "; ")
	return finding(check, problems[0].result, ev, "%s.", upperFirst(msg))
}

// containerSpecs returns the containers to judge limits on: from the workload's pod
// template when known (what new pods get), else from the first pod that has each.
func containerSpecs(s *Snapshot) (specs []corev1.Container, where string) {
	switch {
	case s.Deployment != nil:
		return s.Deployment.Spec.Template.Spec.Containers, "deployment " + s.Deployment.Name
	case s.StatefulSet != nil:
		return s.StatefulSet.Spec.Template.Spec.Containers, "statefulset " + s.StatefulSet.Name
	}
	seen := map[string]bool{}
	for _, p := range s.Pods {
		for _, c := range p.Spec.Containers {
			if !seen[c.Name] {
				seen[c.Name] = true
				specs = append(specs, c)
			}
		}
	}
	return specs, "pods"
}

// ResourceLimitsCheck fails on containers that were OOMKilled (even when they are
// running again) and warns on containers without memory or CPU limits.
func ResourceLimitsCheck(s *Snapshot, f *Facts) selfhealv1alpha1.Finding {
	const check = selfhealv1alpha1.CheckResourceLimits
	if f, ok := noService(check, s); ok {
		return f
	}
	ev := &evidence{}
	for _, o := range f.Pods.OOMKilled {
		ev.add("%s", o)
	}
	specs, where := containerSpecs(s)
	var missing []string
	for _, c := range specs {
		var lacks []string
		if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
			lacks = append(lacks, "memory")
		}
		if _, ok := c.Resources.Limits[corev1.ResourceCPU]; !ok {
			lacks = append(lacks, "cpu")
		}
		if len(lacks) > 0 {
			missing = append(missing, c.Name)
			ev.add("%s container %s has no %s limit", where, c.Name, strings.Join(lacks, " or "))
		}
	}
	for _, p := range s.Pods {
		for _, st := range p.Status.ContainerStatuses {
			if st.RestartCount > 0 {
				ev.add("pod %s container %s restarts: %d", p.Name, st.Name, st.RestartCount)
			}
		}
	}
	switch {
	case len(f.Pods.OOMKilled) > 0:
		o := f.Pods.OOMKilled[0]
		return finding(check, fail, ev, "%s %s of pod %s was OOMKilled (%s); a restart will not fix this, its memory limit or usage must change.", o.KindTitle(), o.Container, o.Pod, o.Detail)
	case len(missing) > 0:
		return finding(check, warn, ev, "Containers without memory or CPU limits: %s.", strings.Join(missing, ", "))
	case len(specs) == 0:
		return finding(check, skipped, ev, "skipped: no pods or pod template to read container resources from")
	}
	return finding(check, pass, ev, "All %d containers have memory and CPU limits and none was OOMKilled.", len(specs))
}

// FailedPodsCheck lists pods in phase Failed, which are candidates for cleanup.
func FailedPodsCheck(s *Snapshot, f *Facts) selfhealv1alpha1.Finding {
	const check = selfhealv1alpha1.CheckFailedPods
	if f, ok := noService(check, s); ok {
		return f
	}
	failed := f.Pods.Failed
	if len(failed) == 0 {
		return finding(check, pass, nil, "No pods of service %s are in phase Failed.", s.Service.Name)
	}
	ev := &evidence{}
	for _, p := range failed {
		ev.add("%s", p)
	}
	return finding(check, warn, ev, "%d pods of service %s are in phase Failed and can be cleaned up.", len(failed), s.Service.Name)
}

// usageThreshold is the share of a limit above which usage is reported.
const usageThreshold = 0.9

// ResourceUsageCheck compares usage from metrics.k8s.io with the containers' limits.
func ResourceUsageCheck(s *Snapshot, _ *Facts) selfhealv1alpha1.Finding {
	const check = selfhealv1alpha1.CheckResourceUsage
	if f, ok := noService(check, s); ok {
		return f
	}
	if !s.Usage.Available {
		if s.Usage.Err != "" {
			return finding(check, skipped, nil, "skipped: metrics API not available: %s", s.Usage.Err)
		}
		return finding(check, skipped, nil, "skipped: metrics API not available")
	}
	if len(s.Usage.Containers) == 0 {
		return finding(check, skipped, nil, "skipped: metrics API served no usage for the pods of service %s", s.Service.Name)
	}
	limits := map[string]corev1.ResourceList{}
	for _, p := range s.Pods {
		for _, c := range p.Spec.Containers {
			limits[p.Name+"/"+c.Name] = c.Resources.Limits
		}
	}
	ev := &evidence{}
	var near []string
	for _, u := range s.Usage.Containers {
		lim := limits[u.Pod+"/"+u.Container]
		line := fmt.Sprintf("pod %s container %s: cpu %s, memory %s", u.Pod, u.Container, u.CPU.String(), u.Memory.String())
		if m, ok := lim[corev1.ResourceMemory]; ok && m.Value() > 0 {
			share := float64(u.Memory.Value()) / float64(m.Value())
			line += fmt.Sprintf(" (%.0f%% of limit %s)", share*100, m.String())
			if share >= usageThreshold {
				near = append(near, fmt.Sprintf("%s/%s memory", u.Pod, u.Container))
			}
		}
		if c, ok := lim[corev1.ResourceCPU]; ok && c.MilliValue() > 0 {
			share := float64(u.CPU.MilliValue()) / float64(c.MilliValue())
			line += fmt.Sprintf(" (cpu %.0f%% of limit %s)", share*100, c.String())
			if share >= usageThreshold {
				near = append(near, fmt.Sprintf("%s/%s cpu", u.Pod, u.Container))
			}
		}
		ev.add("%s", line)
	}
	if len(near) > 0 {
		return finding(check, warn, ev, "Usage is at or above %.0f%% of the limit for: %s.", usageThreshold*100, strings.Join(near, ", "))
	}
	return finding(check, pass, ev, "Usage of %d containers is below %.0f%% of their limits.", len(s.Usage.Containers), usageThreshold*100)
}
