package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// PodState is a state a kwok stage puts a pod in (see stages/pod.yaml).
type PodState string

const (
	// StateLabel on a pod (or a pod template) selects a failure stage.
	StateLabel = "stage.selfheal.dev/state"
	// ReasonAnnotation sets the last (or waiting, or terminated) reason.
	ReasonAnnotation = "stage.selfheal.dev/reason"
	// ExitCodeAnnotation sets the exit code of the last terminated container.
	ExitCodeAnnotation = "stage.selfheal.dev/exit-code"
	// RestartCountAnnotation sets the restart count reported.
	RestartCountAnnotation = "stage.selfheal.dev/restart-count"
	// MessageAnnotation sets the waiting message.
	MessageAnnotation = "stage.selfheal.dev/message"

	// StateCrashLoop: Running, not Ready, waiting CrashLoopBackOff with a last state.
	StateCrashLoop PodState = "crashloop"
	// StateRestarted: Running and Ready after a restart (e.g. an OOMKill without a crashloop).
	StateRestarted PodState = "restarted"
	// StateImagePull: Pending, waiting ImagePullBackOff (or ErrImagePull via the reason).
	StateImagePull PodState = "image-pull"
	// StateConfigError: Pending, waiting CreateContainerConfigError.
	StateConfigError PodState = "config-error"
	// StateFailed: phase Failed.
	StateFailed PodState = "failed"
)

// SetPodState puts a running pod into a state, with optional details (annotations such
// as ReasonAnnotation). kwok applies the stage within about a second.
func SetPodState(ctx context.Context, c client.Client, pod *corev1.Pod, state PodState, details map[string]string) error {
	patch := client.MergeFrom(pod.DeepCopy())
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[StateLabel] = string(state)
	if len(details) > 0 && pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	for k, v := range details {
		pod.Annotations[k] = v
	}
	return c.Patch(ctx, pod, patch)
}

// SetPodLogs makes pods/log of a pod's container return lines (current) and previous
// (the previous container instance, for previous=true), through kwok's kubelet server:
// it writes CRI-format log files and a kwok Logs object named like the pod.
func (cp *ControlPlane) SetPodLogs(ctx context.Context, pod *corev1.Pod, container string, current, previous []string) error {
	dir := filepath.Join(cp.Dir, "pod-logs", pod.Namespace, pod.Name)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	write := func(name string, lines []string) (string, error) {
		path := filepath.Join(dir, name)
		var b strings.Builder
		ts := time.Now().UTC()
		for _, l := range lines {
			// CRI log format: RFC3339Nano timestamp, stream, tag (F = full line), text.
			fmt.Fprintf(&b, "%s stdout F %s\n", ts.Format(time.RFC3339Nano), l)
		}
		return path, os.WriteFile(path, []byte(b.String()), 0o600)
	}
	cur, err := write(container+".log", current)
	if err != nil {
		return err
	}
	prev, err := write(container+".previous.log", previous)
	if err != nil {
		return err
	}
	logs := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1",
		"kind":       "Logs",
		"metadata":   map[string]any{"name": pod.Name, "namespace": pod.Namespace},
		"spec": map[string]any{"logs": []any{map[string]any{
			"containers":       []any{container},
			"logsFile":         cur,
			"previousLogsFile": prev,
		}}},
	}}
	return cp.Client.Create(ctx, logs)
}
