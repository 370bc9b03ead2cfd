package diagnostics

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Container waiting reasons as the kubelet writes them.
const (
	reasonCrashLoopBackOff           = "CrashLoopBackOff"
	reasonImagePullBackOff           = "ImagePullBackOff"
	reasonErrImagePull               = "ErrImagePull"
	reasonInvalidImageName           = "InvalidImageName"
	reasonErrImageNeverPull          = "ErrImageNeverPull"
	reasonCreateContainerConfigError = "CreateContainerConfigError"
	reasonCreateContainerError       = "CreateContainerError"
	reasonRunContainerError          = "RunContainerError"
	reasonOOMKilled                  = "OOMKilled"
	reasonUnschedulable              = corev1.PodReasonUnschedulable
)

// containerIssue is one container in one pod that is in a bad state.
type containerIssue struct {
	pod, container string
	reason         string
	// detail is the most specific cause known: the kubelet's message, or a cause
	// derived from the pod's events.
	detail   string
	restarts int32
}

func (c containerIssue) String() string {
	s := fmt.Sprintf("pod %s container %s: %s", c.pod, c.container, c.reason)
	if c.detail != "" {
		s += ": " + c.detail
	}
	if c.restarts > 0 {
		s += fmt.Sprintf(" (restarts: %d)", c.restarts)
	}
	return s
}

type podIssue struct {
	pod, reason, detail string
}

func (p podIssue) String() string {
	s := "pod " + p.pod
	if p.reason != "" {
		s += ": " + p.reason
	}
	if p.detail != "" {
		s += ": " + p.detail
	}
	return s
}

// podFacts is what the pods say, shared by the checks and the classifier so both read
// the pods the same way.
type podFacts struct {
	total  int
	active int // not Succeeded or Failed
	ready  int

	crashLoop     []containerIssue
	imagePull     []containerIssue
	configError   []containerIssue
	oomKilled     []containerIssue
	unschedulable []podIssue
	notReady      []podIssue // running, not ready, no more specific cause
	pending       []podIssue // pending without a more specific cause
	failed        []podIssue // phase Failed
}

func isPodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func isTerminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded
}

func podCondition(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// analyzePods reads every pod once. Events refine image pull failures with their cause.
func analyzePods(s *Snapshot) *podFacts {
	f := &podFacts{}
	if s == nil {
		return f
	}
	for i := range s.Pods {
		p := &s.Pods[i]
		f.total++
		if p.Status.Phase == corev1.PodFailed {
			f.failed = append(f.failed, podIssue{pod: p.Name, reason: p.Status.Reason, detail: oneLine(p.Status.Message)})
		}
		for _, st := range allStatuses(p) {
			if isOOMKilled(st) {
				f.oomKilled = append(f.oomKilled, containerIssue{pod: p.Name, container: st.Name, reason: reasonOOMKilled,
					detail: oomDetail(p, st.Name), restarts: st.RestartCount})
			}
		}
		// A terminating pod is on its way out (scale-down, rollout): it serves nothing
		// that can be relied on, and its problems are not the workload's.
		if isTerminal(p) || p.DeletionTimestamp != nil {
			continue
		}
		f.active++
		if isPodReady(p) {
			f.ready++
			// A ready pod may still have a crashlooping sidecar: look at containers anyway.
		}
		specific := false
		for _, st := range allStatuses(p) {
			w := st.State.Waiting
			if w == nil {
				continue
			}
			issue := containerIssue{pod: p.Name, container: st.Name, reason: w.Reason, detail: oneLine(w.Message), restarts: st.RestartCount}
			switch w.Reason {
			case reasonCrashLoopBackOff, reasonRunContainerError:
				if t := st.LastTerminationState.Terminated; t != nil {
					issue.detail = terminatedDetail(t)
				}
				f.crashLoop = append(f.crashLoop, issue)
				specific = true
			case reasonImagePullBackOff, reasonErrImagePull, reasonInvalidImageName, reasonErrImageNeverPull:
				issue.detail = imagePullCause(s.Events, p.Name, st.Image, w.Message)
				f.imagePull = append(f.imagePull, issue)
				specific = true
			case reasonCreateContainerConfigError, reasonCreateContainerError:
				f.configError = append(f.configError, issue)
				specific = true
			}
		}
		if c := podCondition(p, corev1.PodScheduled); c != nil && c.Status == corev1.ConditionFalse && c.Reason == reasonUnschedulable {
			f.unschedulable = append(f.unschedulable, podIssue{pod: p.Name, reason: reasonUnschedulable, detail: oneLine(c.Message)})
			specific = true
		}
		if specific || isPodReady(p) {
			continue
		}
		if p.Status.Phase == corev1.PodPending || p.Status.Phase == "" {
			f.pending = append(f.pending, podIssue{pod: p.Name, reason: "Pending", detail: waitingSummary(p)})
			continue
		}
		f.notReady = append(f.notReady, podIssue{pod: p.Name, reason: "Running but not ready", detail: notReadyDetail(p)})
	}
	return f
}

// allStatuses yields init and app container statuses without copying them.
func allStatuses(p *corev1.Pod) func(yield func(int, *corev1.ContainerStatus) bool) {
	return func(yield func(int, *corev1.ContainerStatus) bool) {
		n := 0
		for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
			for i := range list {
				if !yield(n, &list[i]) {
					return
				}
				n++
			}
		}
	}
}

func isOOMKilled(st *corev1.ContainerStatus) bool {
	if t := st.LastTerminationState.Terminated; t != nil && t.Reason == reasonOOMKilled {
		return true
	}
	if t := st.State.Terminated; t != nil && t.Reason == reasonOOMKilled {
		return true
	}
	return false
}

func oomDetail(p *corev1.Pod, container string) string {
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name != container {
			continue
		}
		if lim, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
			return "memory limit " + lim.String()
		}
		return "no memory limit set"
	}
	return ""
}

func terminatedDetail(t *corev1.ContainerStateTerminated) string {
	d := fmt.Sprintf("last exit code %d", t.ExitCode)
	if t.Reason != "" {
		d += " (" + t.Reason + ")"
	}
	if t.Message != "" {
		d += ": " + oneLine(t.Message)
	}
	return d
}

func waitingSummary(p *corev1.Pod) string {
	var parts []string
	for _, st := range p.Status.ContainerStatuses {
		if w := st.State.Waiting; w != nil && w.Reason != "" {
			parts = append(parts, st.Name+" "+w.Reason)
		}
	}
	if len(parts) == 0 {
		if c := podCondition(p, corev1.PodScheduled); c != nil && c.Status != corev1.ConditionTrue {
			return "not scheduled: " + oneLine(c.Message)
		}
		if p.Spec.NodeName == "" {
			return "not scheduled yet"
		}
		return "containers not started"
	}
	return strings.Join(parts, ", ")
}

func notReadyDetail(p *corev1.Pod) string {
	var parts []string
	for _, st := range p.Status.ContainerStatuses {
		if !st.Ready {
			s := st.Name + " not ready"
			if st.RestartCount > 0 {
				s += fmt.Sprintf(" (restarts: %d)", st.RestartCount)
			}
			parts = append(parts, s)
		}
	}
	if c := podCondition(p, corev1.PodReady); c != nil && c.Message != "" {
		parts = append(parts, oneLine(c.Message))
	}
	return strings.Join(parts, "; ")
}

// imagePullCause names why an image cannot be pulled, from the kubelet's message and
// the pod's events: the image does not exist, the registry refuses access, or the
// registry cannot be reached.
func imagePullCause(events []corev1.Event, pod, image, waitingMessage string) string {
	texts := []string{waitingMessage}
	for _, e := range recentEventsFor(events, pod) {
		if e.Reason == "Failed" || e.Reason == "ErrImagePull" || e.Reason == "InspectFailed" || e.Reason == "BackOff" {
			texts = append(texts, e.Message)
		}
	}
	for _, t := range texts {
		l := strings.ToLower(t)
		switch {
		case strings.Contains(l, "manifest unknown"), strings.Contains(l, ": not found"),
			strings.Contains(l, "code = notfound"), strings.Contains(l, "manifest for") && strings.Contains(l, "not found"):
			return fmt.Sprintf("image %s not found in the registry (%s)", image, snippet(t))
		case strings.Contains(l, "unauthorized"), strings.Contains(l, "denied"), strings.Contains(l, "authorization failed"),
			strings.Contains(l, "insufficient_scope"), strings.Contains(l, "403 forbidden"), strings.Contains(l, "401"):
			return fmt.Sprintf("registry denied access to image %s; check the image name and imagePullSecrets (%s)", image, snippet(t))
		case strings.Contains(l, "no such host"), strings.Contains(l, "i/o timeout"), strings.Contains(l, "connection refused"),
			strings.Contains(l, "tls:"), strings.Contains(l, "x509"):
			return fmt.Sprintf("registry for image %s cannot be reached (%s)", image, snippet(t))
		case strings.Contains(l, "invalid reference format"), strings.Contains(l, "couldn't parse image"):
			return fmt.Sprintf("image name %s is invalid (%s)", image, snippet(t))
		}
	}
	for _, t := range texts {
		if t != "" {
			return oneLine(t)
		}
	}
	return "image " + image + " cannot be pulled"
}

// recentEventsFor returns the pod's events, newest first.
func recentEventsFor(events []corev1.Event, pod string) []corev1.Event {
	var out []corev1.Event
	for _, e := range events {
		if e.InvolvedObject.Kind == "Pod" && e.InvolvedObject.Name == pod {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return eventTime(&out[i]).After(eventTime(&out[j])) })
	return out
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return Truncate(s, 300)
}

func snippet(s string) string { return Truncate(oneLine(s), 200) }
