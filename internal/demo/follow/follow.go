// Package follow makes a local process follow a Deployment on the demo's control
// plane. kwok plays the kubelet there, so a pod "running" is only a status: the
// demo's MCP server runs as a local process, and Follow links the two by watching
// the Service's EndpointSlices. While the Service has no ready endpoint the process
// stops serving (its port refuses connections); when endpoints are ready again it
// serves; and when a pod it has not seen becomes ready (a rollout restart, a crashed
// pod recreated), the process is restarted with fresh sessions.
package follow

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Target is the process that follows the Service; *alerts.Server is one.
type Target interface {
	// SetServing opens (true) or closes (false) the process's listener.
	SetServing(on bool) error
	// Restart replaces the process while it serves: connections and sessions end.
	Restart() error
}

// State is what Follow did after a change of the Service's endpoints.
type State struct {
	// ReadyPods identifies the ready endpoints (pod UIDs, else pod names, else
	// addresses), sorted.
	ReadyPods []string
	// Serving is whether the process now serves.
	Serving bool
	// Restarted is set when this change restarted the process, because a pod it had
	// not seen became ready.
	Restarted bool
}

// Option configures Follow.
type Option func(*options)

type options struct {
	onChange func(State)
	retry    time.Duration
}

// OnChange calls fn after each change Follow applied (including the first sync). It
// runs on Follow's goroutine: it must not block for long.
func OnChange(fn func(State)) Option { return func(o *options) { o.onChange = fn } }

// Follow keeps t in step with the ready endpoints of the Service namespace/service
// until ctx ends, and then returns nil. It lists and watches the Service's
// EndpointSlices (label kubernetes.io/service-name); c must be able to watch, which
// a client from client.NewWithWatch can (a manager's cached client cannot). Errors
// of the API server are retried (list again, watch again); only an error from t is
// returned.
func Follow(ctx context.Context, c client.WithWatch, namespace, service string, t Target, opts ...Option) error {
	o := options{retry: time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	log := ctrl.LoggerFrom(ctx).WithValues("service", namespace+"/"+service)
	f := &follower{target: t, opts: o}
	sel := []client.ListOption{client.InNamespace(namespace), client.MatchingLabels{discoveryv1.LabelServiceName: service}}
	for ctx.Err() == nil {
		rv, err := f.list(ctx, c, sel)
		if err == nil {
			err = f.watch(ctx, c, sel, rv)
		}
		if ctx.Err() != nil {
			return nil //nolint:nilerr // ctx ended: Follow's documented nil return
		}
		if err != nil {
			if errors.As(err, new(targetError)) {
				return err
			}
			log.Info("Watching endpoint slices failed; retrying", "error", err.Error())
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(o.retry):
			}
		}
	}
	return nil
}

// targetError marks an error of the Target, which ends Follow.
type targetError struct{ error }

func (e targetError) Unwrap() error { return e.error }

type follower struct {
	target Target
	opts   options
	slices map[string]*discoveryv1.EndpointSlice
	synced bool
	state  decision
}

func (f *follower) list(ctx context.Context, c client.WithWatch, sel []client.ListOption) (string, error) {
	var list discoveryv1.EndpointSliceList
	if err := c.List(ctx, &list, sel...); err != nil {
		return "", fmt.Errorf("listing endpoint slices: %w", err)
	}
	f.slices = make(map[string]*discoveryv1.EndpointSlice, len(list.Items))
	for i := range list.Items {
		f.slices[list.Items[i].Name] = &list.Items[i]
	}
	return list.ResourceVersion, f.apply()
}

// watch applies changes until the watch ends; the caller lists again then, so a
// missed or expired window never leaves a stale state.
func (f *follower) watch(ctx context.Context, c client.WithWatch, sel []client.ListOption, rv string) error {
	opts := append(slices.Clone(sel), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}})
	w, err := c.Watch(ctx, &discoveryv1.EndpointSliceList{}, opts...)
	if err != nil {
		return fmt.Errorf("watching endpoint slices: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				if s, ok := ev.Object.(*discoveryv1.EndpointSlice); ok {
					f.slices[s.Name] = s
				}
			case watch.Deleted:
				if s, ok := ev.Object.(*discoveryv1.EndpointSlice); ok {
					delete(f.slices, s.Name)
				}
			case watch.Error:
				return fmt.Errorf("watch error: %v", ev.Object)
			default: // bookmarks
				continue
			}
			if err := f.apply(); err != nil {
				return err
			}
		}
	}
}

// apply acts on the current ready endpoints, when they changed.
func (f *follower) apply() error {
	ready := readyPods(slices.Collect(maps.Values(f.slices)))
	next, act := decide(f.state, f.synced, ready)
	changed := !f.synced || !slices.Equal(next.ready, f.state.ready) || next.serving != f.state.serving
	f.state, f.synced = next, true
	switch act {
	case actStart:
		if err := f.target.SetServing(true); err != nil {
			return targetError{fmt.Errorf("starting to serve: %w", err)}
		}
	case actStop:
		if err := f.target.SetServing(false); err != nil {
			return targetError{fmt.Errorf("stopping serving: %w", err)}
		}
	case actRestart:
		if err := f.target.Restart(); err != nil {
			return targetError{fmt.Errorf("restarting: %w", err)}
		}
	}
	if changed && f.opts.onChange != nil {
		f.opts.onChange(State{ReadyPods: next.ready, Serving: next.serving, Restarted: act == actRestart})
	}
	return nil
}

type action int

const (
	actNone action = iota
	actStart
	actStop
	actRestart
)

// decision is the follower's memory: whether it serves, the ready pods seen last,
// and members, the ready pods the running process stands for.
type decision struct {
	serving bool
	ready   []string
	members map[string]bool
}

// decide is the pure rule. No ready pod: stop. Ready pods while stopped: start.
// While serving, the one local process stands for the pods it has seen ready; a pod it
// has not seen becoming ready is a new process (a rollout's first new pod, a
// replacement), so the process restarts at once: in a cluster, new connections reach
// a new pod as soon as it is ready, before the old pods are gone. A pod that leaves is
// not a restart.
func decide(prev decision, synced bool, ready []string) (decision, action) {
	next := decision{serving: len(ready) > 0, ready: ready}
	switch {
	case !next.serving:
		if !synced || prev.serving {
			return next, actStop
		}
		return next, actNone
	case !synced || !prev.serving:
		next.members = setOf(ready)
		return next, actStart
	}
	next.members = setOf(ready)
	for _, p := range ready {
		if !prev.members[p] {
			return next, actRestart
		}
	}
	return next, actNone
}

func setOf(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// readyPods returns the identities of the ready endpoints, sorted and unique. An
// endpoint with no ready condition counts as ready, as the EndpointSlice API says;
// a terminating one never does.
func readyPods(list []*discoveryv1.EndpointSlice) []string {
	seen := map[string]bool{}
	for _, s := range list {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			if e.Conditions.Terminating != nil && *e.Conditions.Terminating {
				continue
			}
			seen[endpointID(e)] = true
		}
	}
	ids := slices.Collect(maps.Keys(seen))
	sort.Strings(ids)
	return ids
}

func endpointID(e discoveryv1.Endpoint) string {
	if ref := e.TargetRef; ref != nil {
		if ref.UID != "" {
			return string(ref.UID)
		}
		if ref.Name != "" {
			return ref.Namespace + "/" + ref.Name
		}
	}
	return strings.Join(e.Addresses, ",")
}
