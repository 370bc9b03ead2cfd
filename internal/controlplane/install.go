package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Kustomize renders a kustomization directory (relative to the repository root) the
// way users install it, with the kubectl built alongside the control plane
// (`kubectl kustomize`), and returns its objects in kustomize's order.
func Kustomize(ctx context.Context, dir string) ([]*unstructured.Unstructured, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	assets, err := AssetsDir(ctx, nil)
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(assets, "kubectl"), "kustomize", filepath.Join(root, dir)) //nolint:gosec // our own binary and path
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl kustomize %s: %w: %s", dir, err, strings.TrimSpace(stderr.String()))
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("decoding kubectl kustomize %s: %w", dir, err)
		}
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
}

// Install renders dir with Kustomize and applies, server-side and as the
// administrator, the objects keep accepts (every object when keep is nil). It fails on
// any error and on any warning the API server returns, so what users install is
// checked to apply cleanly.
func (cp *ControlPlane) Install(ctx context.Context, dir string, keep func(*unstructured.Unstructured) bool) error {
	objs, err := Kustomize(ctx, dir)
	if err != nil {
		return err
	}
	warnings := &warningRecorder{}
	cfg := rest.CopyConfig(cp.Config)
	cfg.WarningHandler = warnings
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return err
	}
	for _, obj := range objs {
		if keep != nil && !keep(obj) {
			continue
		}
		ref := obj.GetKind() + " " + obj.GetNamespace() + "/" + obj.GetName()
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner("selfheal-install"), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s from %s: %w", ref, dir, err)
		}
		if w := warnings.take(); len(w) > 0 {
			return fmt.Errorf("applying %s from %s: the API server warned: %s", ref, dir, strings.Join(w, "; "))
		}
	}
	return nil
}

// Kinds keeps the objects of the given kinds, for Install.
func Kinds(kinds ...string) func(*unstructured.Unstructured) bool {
	return func(o *unstructured.Unstructured) bool {
		for _, k := range kinds {
			if o.GetKind() == k {
				return true
			}
		}
		return false
	}
}

// warningRecorder collects the API server's warnings.
type warningRecorder struct {
	mu   sync.Mutex
	list []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

func (w *warningRecorder) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.list
	w.list = nil
	return out
}
