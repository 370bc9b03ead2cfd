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

// ContainerIssue is one container in one pod that is in a bad state: waiting for a
// reason (CrashLoopBackOff, ImagePullBackOff, CreateContainerConfigError, ...) or
// OOMKilled.
type ContainerIssue struct {
	Pod, Container string
	// Init: an init container.
	Init bool
	// Image is the container's image as the pod spec names it.
	Image string
	// Reason is the kubelet's waiting reason, or OOMKilled.
	Reason string
	// Message is the kubelet's waiting message as written (for OOMKilled: empty).
	Message string
	// Detail is the most specific cause known: the kubelet's message, the last
	// termination, or a cause derived from the pod's events.
	Detail   string
	Restarts int32
	// MemoryLimit is the container's memory limit; empty when it has none.
	MemoryLimit string
}

// Kind says "container" or "init container".
func (c ContainerIssue) Kind() string {
	if c.Init {
		return "init container"
	}
	return "container"
}

// KindTitle is Kind at the start of a sentence.
func (c ContainerIssue) KindTitle() string {
	if c.Init {
		return "Init container"
	}
	return "Container"
}

func (c ContainerIssue) String() string {
	s := fmt.Sprintf("pod %s %s %s: %s", c.Pod, c.Kind(), c.Container, c.Reason)
	if c.Detail != "" {
		s += ": " + c.Detail
	}
	if c.Restarts > 0 {
		s += fmt.Sprintf(" (restarts: %d)", c.Restarts)
	}
	return s
}

// PodIssue is one pod that is in a bad state as a whole.
type PodIssue struct {
	Pod string
	// Reason is the pod's or the condition's reason (Unschedulable, Evicted, ...).
	Reason string
	// Message is the condition's or the pod's message as written.
	Message string
	// Detail is the one-line cause for people.
	Detail string
}

func (p PodIssue) String() string {
	s := "pod " + p.Pod
	if p.Reason != "" {
		s += ": " + p.Reason
	}
	if p.Detail != "" {
		s += ": " + p.Detail
	}
	return s
}

// PodFact is one pod as verification needs it.
type PodFact struct {
	Name string
	// Active: neither terminated (Succeeded, Failed) nor being deleted.
	Active bool
	// Ready: active and its Ready condition is True.
	Ready bool
	// RestartedAt is the pod's RestartedAtAnnotation, which it has from the pod
	// template of the restart that created it; empty when unset.
	RestartedAt string
}

// PodFacts are what the pods say.
type PodFacts struct {
	// Total pods read; Active of them (PodFact.Active); Ready of the active ones.
	Total, Active, Ready int
	// Pods has one entry per pod, in the snapshot's order.
	Pods []PodFact

	// Waiting containers of active pods, by what their reason means.
	CrashLoop   []ContainerIssue // CrashLoopBackOff, RunContainerError
	ImagePull   []ContainerIssue // ImagePullBackOff, ErrImagePull, InvalidImageName, ErrImageNeverPull
	ConfigError []ContainerIssue // CreateContainerConfigError, CreateContainerError
	// OOMKilled are the containers (init containers included) of any pod whose
	// current or last termination was OOMKilled, with their memory limit.
	OOMKilled     []ContainerIssue
	Unschedulable []PodIssue // active pods the scheduler cannot place
	NotReady      []PodIssue // running, not ready, no more specific cause
	Pending       []PodIssue // pending without a more specific cause
	// Failed are the pods in phase Failed that are not being deleted: candidates for
	// cleanup.
	Failed []PodIssue

	readyNames map[string]bool
}

// FailedNames names the Failed pods, sorted.
func (f *PodFacts) FailedNames() []string {
	names := make([]string, 0, len(f.Failed))
	for _, p := range f.Failed {
		names = append(names, p.Pod)
	}
	sort.Strings(names)
	return names
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
// When the workload wants no pod (leftovers), every pod is on its way out, like a
// terminating one: none is active, and their containers' failures (OOMKilled
// included) are not the workload's; Failed pods are still cleanup candidates.
func analyzePods(s *Snapshot, leftovers bool) PodFacts {
	f := PodFacts{readyNames: map[string]bool{}}
	for i := range s.Pods {
		p := &s.Pods[i]
		f.Total++
		active := podActive(p) && !leftovers
		ready := active && PodReady(p)
		f.Pods = append(f.Pods, PodFact{Name: p.Name, Active: active, Ready: ready, RestartedAt: p.Annotations[RestartedAtAnnotation]})
		if p.Status.Phase == corev1.PodFailed && p.DeletionTimestamp == nil {
			f.Failed = append(f.Failed, PodIssue{Pod: p.Name, Reason: p.Status.Reason, Message: p.Status.Message, Detail: oneLine(p.Status.Message)})
		}
		if leftovers {
			continue
		}
		for init, st := range allStatuses(p) {
			if isOOMKilled(st) {
				issue := containerIssue(p, st, init)
				issue.Reason, issue.Detail = reasonOOMKilled, "no memory limit set"
				if issue.MemoryLimit != "" {
					issue.Detail = "memory limit " + issue.MemoryLimit
				}
				f.OOMKilled = append(f.OOMKilled, issue)
			}
		}
		if !active {
			continue
		}
		f.Active++
		if ready {
			f.Ready++
			f.readyNames[p.Name] = true
			// A ready pod may still have a crashlooping sidecar: look at containers anyway.
		}
		specific := false
		for init, st := range allStatuses(p) {
			w := st.State.Waiting
			if w == nil {
				continue
			}
			issue := containerIssue(p, st, init)
			issue.Reason, issue.Message, issue.Detail = w.Reason, w.Message, oneLine(w.Message)
			switch w.Reason {
			case reasonCrashLoopBackOff, reasonRunContainerError:
				if t := st.LastTerminationState.Terminated; t != nil {
					issue.Detail = terminatedDetail(t)
				}
				f.CrashLoop = append(f.CrashLoop, issue)
				specific = true
			case reasonImagePullBackOff, reasonErrImagePull, reasonInvalidImageName, reasonErrImageNeverPull:
				issue.Detail = imagePullCause(s.Events, p.Name, issue.Image, w.Message)
				f.ImagePull = append(f.ImagePull, issue)
				specific = true
			case reasonCreateContainerConfigError, reasonCreateContainerError:
				f.ConfigError = append(f.ConfigError, issue)
				specific = true
			}
		}
		if c := podCondition(p, corev1.PodScheduled); c != nil && c.Status == corev1.ConditionFalse && c.Reason == reasonUnschedulable {
			f.Unschedulable = append(f.Unschedulable, PodIssue{Pod: p.Name, Reason: reasonUnschedulable, Message: c.Message, Detail: oneLine(c.Message)})
			specific = true
		}
		if specific || ready {
			continue
		}
		if p.Status.Phase == corev1.PodPending || p.Status.Phase == "" {
			f.Pending = append(f.Pending, PodIssue{Pod: p.Name, Reason: "Pending", Detail: waitingSummary(p)})
			continue
		}
		f.NotReady = append(f.NotReady, PodIssue{Pod: p.Name, Reason: "Running but not ready", Detail: notReadyDetail(p)})
	}
	return f
}

// containerIssue is the container's identity, image and memory limit, from the pod
// spec; the caller fills in what is wrong.
func containerIssue(p *corev1.Pod, st *corev1.ContainerStatus, init bool) ContainerIssue {
	c := ContainerIssue{Pod: p.Name, Container: st.Name, Init: init, Image: st.Image, Restarts: st.RestartCount}
	specs := p.Spec.Containers
	if init {
		specs = p.Spec.InitContainers
	}
	for i := range specs {
		if specs[i].Name != st.Name {
			continue
		}
		if specs[i].Image != "" {
			c.Image = specs[i].Image
		}
		if lim, ok := specs[i].Resources.Limits[corev1.ResourceMemory]; ok {
			c.MemoryLimit = lim.String()
		}
	}
	return c
}

// allStatuses yields init and then app container statuses, without copying them,
// each with whether it is an init container's.
func allStatuses(p *corev1.Pod) func(yield func(bool, *corev1.ContainerStatus) bool) {
	return func(yield func(bool, *corev1.ContainerStatus) bool) {
		for i := range p.Status.InitContainerStatuses {
			if !yield(true, &p.Status.InitContainerStatuses[i]) {
				return
			}
		}
		for i := range p.Status.ContainerStatuses {
			if !yield(false, &p.Status.ContainerStatuses[i]) {
				return
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
