package diagnostics

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
)

// logTarget is one container log to read.
type logTarget struct {
	pod, container string
	previous       bool
}

// logPriority orders unhealthy pods for log reading: the ones whose containers died
// explain the most, then pods that run but are not ready, then failed pods.
func logPriority(p *corev1.Pod) int {
	if p.Status.Phase == corev1.PodSucceeded {
		return -1
	}
	restarted := false
	for _, st := range p.Status.ContainerStatuses {
		if st.RestartCount > 0 || st.LastTerminationState.Terminated != nil {
			restarted = true
		}
	}
	switch {
	case p.Status.Phase == corev1.PodFailed:
		return 1
	case restarted:
		return 3
	case !PodReady(p):
		return 2
	}
	return -1
}

// logTargets picks the containers whose logs are worth reading, at most maxPods pods.
// A container that never started has no log, so it is not asked for one.
func logTargets(pods []corev1.Pod, maxPods int) []logTarget {
	type ranked struct {
		pod  *corev1.Pod
		prio int
	}
	var candidates []ranked
	for i := range pods {
		if prio := logPriority(&pods[i]); prio > 0 {
			candidates = append(candidates, ranked{&pods[i], prio})
		}
	}
	sort.SliceStable(candidates, func(i, j int) bool { return candidates[i].prio > candidates[j].prio })
	var out []logTarget
	for n, c := range candidates {
		if n >= maxPods {
			break
		}
		for _, st := range c.pod.Status.ContainerStatuses {
			healthy := st.Ready && st.RestartCount == 0
			if healthy {
				continue
			}
			if st.State.Running != nil || st.State.Terminated != nil {
				out = append(out, logTarget{pod: c.pod.Name, container: st.Name})
			}
			if st.LastTerminationState.Terminated != nil {
				out = append(out, logTarget{pod: c.pod.Name, container: st.Name, previous: true})
			}
		}
	}
	return out
}

// logs reads the bounded, redacted tails. A log that cannot be read (no kubelet, the
// container is gone, no permission) is recorded with its error; it never fails the
// gather.
func (g *Gatherer) logs(ctx context.Context, ns string, pods []corev1.Pod) []ContainerLog {
	targets := logTargets(pods, g.opts.MaxLogPods)
	if len(targets) == 0 {
		return nil
	}
	log := ctrl.LoggerFrom(ctx)
	out := make([]ContainerLog, 0, len(targets))
	for _, t := range targets {
		cl := ContainerLog{Pod: t.pod, Container: t.container, Previous: t.previous}
		lines, err := g.readLog(ctx, ns, t)
		if err != nil {
			cl.Err = oneLine(Redact(err.Error()))
			log.V(1).Info("Container log unreadable", "pod", t.pod, "container", t.container, "previous", t.previous, "reason", cl.Err)
		} else {
			cl.Lines = lines
		}
		out = append(out, cl)
	}
	return out
}

func (g *Gatherer) readLog(ctx context.Context, ns string, t logTarget) ([]string, error) {
	if g.kube == nil {
		return nil, fmt.Errorf("no client for pod logs configured")
	}
	ctx, cancel := context.WithTimeout(ctx, g.opts.LogTimeout)
	defer cancel()
	tail, limit := g.opts.TailLines, g.opts.LimitBytes
	req := g.kube.CoreV1().Pods(ns).GetLogs(t.pod, &corev1.PodLogOptions{
		Container: t.container, Previous: t.previous, TailLines: &tail, LimitBytes: &limit,
	})
	rc, err := req.Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading log of %s/%s: %w", t.pod, t.container, err)
	}
	defer func() { _ = rc.Close() }()
	// LimitBytes is also enforced here: a kubelet that ignores it cannot flood us.
	data, err := io.ReadAll(io.LimitReader(rc, limit))
	if err != nil && len(data) == 0 {
		return nil, fmt.Errorf("reading log of %s/%s: %w", t.pod, t.container, err)
	}
	return splitLog(string(data), int(tail)), nil
}

// splitLog turns raw log text into at most tail redacted, length-bounded lines.
func splitLog(data string, tail int) []string {
	data = strings.TrimRight(data, "\n")
	if data == "" {
		return nil
	}
	lines := strings.Split(data, "\n")
	if len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], "\r")
	}
	// Redact before truncating: a cut secret might no longer be recognisable.
	lines = RedactLines(lines)
	for i := range lines {
		lines[i] = Truncate(lines[i], maxLineLength)
	}
	return lines
}
