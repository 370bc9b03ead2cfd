package diagnostics

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
)

// MetricsGroupVersion is the resource metrics API served by metrics-server.
const MetricsGroupVersion = "metrics.k8s.io/v1beta1"

// metricsProbe remembers for a while whether the metrics API is served, so every
// diagnosis does not pay a discovery round trip.
type metricsProbe struct {
	ttl       time.Duration
	mu        sync.Mutex
	checkedAt time.Time
	known     bool
	served    bool
}

// podMetricsList is the part of metrics.k8s.io/v1beta1 PodMetricsList that is used.
type podMetricsList struct {
	Items []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Containers []struct {
			Name  string                       `json:"name"`
			Usage map[string]resource.Quantity `json:"usage"`
		} `json:"containers"`
	} `json:"items"`
}

// served reports whether metrics.k8s.io is served, asking discovery at most once per
// TTL. A failed discovery call is not remembered, so the next diagnosis asks again.
func (g *Gatherer) metricsServed(ctx context.Context) (bool, error) {
	p := g.metrics
	now := g.clock.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.known && now.Sub(p.checkedAt) < p.ttl {
		return p.served, nil
	}
	_, err := g.kube.Discovery().ServerResourcesForGroupVersionWithContext(ctx, MetricsGroupVersion)
	switch {
	case err == nil:
		p.served = true
	case apierrors.IsNotFound(err):
		p.served = false
	default:
		return false, fmt.Errorf("discovering %s: %w", MetricsGroupVersion, err)
	}
	p.known, p.checkedAt = true, now
	return p.served, nil
}

// usage reads the pods' usage. It never fails the gather: an unavailable API or a
// failed read leaves Available false with the reason in Err.
func (g *Gatherer) usage(ctx context.Context, s *Snapshot) Usage {
	if g.kube == nil {
		return Usage{Err: "no client for the metrics API configured"}
	}
	if s.Service == nil || len(s.Pods) == 0 {
		return Usage{}
	}
	served, err := g.metricsServed(ctx)
	if err != nil {
		ctrl.LoggerFrom(ctx).V(1).Info("Metrics API discovery failed", "reason", err.Error())
		return Usage{Err: oneLine(err.Error())}
	}
	if !served {
		return Usage{}
	}
	rest := g.kube.Discovery().RESTClient()
	if rest == nil {
		return Usage{Err: "no REST client for the metrics API"}
	}
	req := rest.Get().AbsPath("/apis", MetricsGroupVersion, "namespaces", s.Target.Namespace, "pods")
	if len(s.Service.Spec.Selector) > 0 {
		req = req.Param("labelSelector", labels.SelectorFromSet(s.Service.Spec.Selector).String())
	}
	raw, err := req.DoRaw(ctx)
	if err != nil {
		return Usage{Err: oneLine(fmt.Sprintf("reading pod metrics: %v", err))}
	}
	var list podMetricsList
	if err := json.Unmarshal(raw, &list); err != nil {
		return Usage{Err: oneLine(fmt.Sprintf("decoding pod metrics: %v", err))}
	}
	ours := map[string]bool{}
	for _, p := range s.Pods {
		ours[p.Name] = true
	}
	u := Usage{Available: true}
	for _, item := range list.Items {
		if !ours[item.Metadata.Name] {
			continue
		}
		for _, c := range item.Containers {
			u.Containers = append(u.Containers, ContainerUsage{
				Pod: item.Metadata.Name, Container: c.Name,
				CPU: c.Usage["cpu"], Memory: c.Usage["memory"],
			})
		}
	}
	return u
}
