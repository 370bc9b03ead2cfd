package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/selfheal-dev/selfheal/internal/gateway"
	"github.com/selfheal-dev/selfheal/internal/gateway/healing"
	"github.com/selfheal-dev/selfheal/internal/gateway/limits"
	"github.com/selfheal-dev/selfheal/internal/gateway/mcp"
	"github.com/selfheal-dev/selfheal/internal/gateway/outbound"
	"github.com/selfheal-dev/selfheal/internal/gateway/ui"
	"github.com/selfheal-dev/selfheal/internal/scheme"
)

// rbac: The gateway creates a HealingRequest when an upstream fails and watches it to stream its progress.
// +kubebuilder:rbac:groups=selfheal.dev,resources=healingrequests,verbs=create;get;list;watch

// rbac: The gateway's /ui page draws the analytics from the outcomes in HealingPolicy status.
// +kubebuilder:rbac:groups=selfheal.dev,resources=healingpolicies,verbs=get;list;watch

// gatewayRunnable serves the gateway on every replica (no leader election) and runs
// its own HealingRequest informer, so it never waits on the controllers' cache and
// keeps proxying when the cluster is unreachable (healing is then reported as
// unavailable).
type gatewayRunnable struct {
	server *gateway.Server
	healer *healing.Healer
	cache  cache.Cache
	log    logr.Logger
}

func (g *gatewayRunnable) NeedLeaderElection() bool { return false }

func (g *gatewayRunnable) Start(ctx context.Context) error {
	if g.cache != nil {
		if err := g.healer.Start(ctx, g.cache); err != nil {
			return err
		}
		go func() {
			if err := g.cache.Start(ctx); err != nil {
				g.log.Error(err, "Watching HealingRequests failed; healing is reported as unavailable")
			}
		}()
	}
	return g.server.Start(ctx)
}

// buildGateway assembles the gateway from its config file. restCfg is nil when there is
// no cluster.
func buildGateway(restCfg *rest.Config, o options) (*gatewayRunnable, []string, error) {
	cfg, err := gateway.LoadConfig(o.gatewayConfig)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway config %s: %w", o.gatewayConfig, err)
	}
	log := ctrl.Log.WithName("gateway")
	for _, d := range cfg.Deprecations() {
		log.Info("DEPRECATED gateway config field: "+d, "config", o.gatewayConfig)
	}
	hub := healing.NewHub(healing.HubOptions{})
	// Healings are only ever requested for the configured targets, so only their
	// namespaces are watched and written.
	namespaces := cfg.HealingNamespaces()
	recorder := gateway.NewRecorder(cfg)

	g := &gatewayRunnable{log: log}
	joinEnded := cfg.Healing.GetJoinEndedWithin()
	if joinEnded == 0 {
		joinEnded = -1 // off (zero is the Healer's default)
	}
	healerOpts := healing.Options{Hub: hub, Namespaces: namespaces, Targets: cfg.HealingTargets(),
		JoinEndedWithin: joinEnded, Observe: recorder.HealingTriggered}
	// One budget of buffered request bytes for every route that keeps a body, and
	// one cap for every event stream.
	budget := limits.NewBudget(cfg.Limits.GetMaxBufferedBytes())
	streams := healing.StreamOptions{
		Budget:  budget,
		Streams: limits.NewStreams("sse", cfg.Limits.GetMaxSubscribers(), cfg.Limits.GetMaxSubscribersPerClient()),
	}
	if restCfg != nil {
		c, err := client.New(restCfg, client.Options{Scheme: scheme.New()})
		if err != nil {
			return nil, nil, err
		}
		if g.cache, err = healing.NewInformerCache(restCfg, namespaces); err != nil {
			return nil, nil, err
		}
		healerOpts.Client = c
	}
	g.healer = healing.New(healerOpts)

	// One authenticator for the token routes and the /ui login, so a token removed
	// from the file ends both.
	auth, err := gateway.NewAuthenticatorFromConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	events := healing.NewEventsHandler(hub, streams)
	page, err := ui.New(ui.Options{Tokens: auth, SessionKey: cfg.Sessions.Key(), Events: events, Reader: reader(g.cache),
		Namespaces: namespaces, Held: g.healer.Held, AllowedOrigins: cfg.AllowedOrigins})
	if err != nil {
		return nil, nil, err
	}

	var upstreams []mcp.Upstream
	var names []string
	for _, u := range cfg.Upstreams {
		upstreams = append(upstreams, mcp.Upstream{
			Name: u.Name, URL: u.URL, Namespace: u.Namespace, Service: u.Service,
			CallTimeout: u.GetCallTimeout(), Replay: mcp.ReplayMode(u.GetReplay()),
		})
		names = append(names, fmt.Sprintf("%s -> %s/%s", u.Name, u.Namespace, u.Service))
	}
	// One outbound transport and one set of upstream metrics for both proxies.
	transport := outbound.NewTransport(outbound.Options{})
	proxy, err := mcp.NewProxy(mcp.Options{
		Upstreams: upstreams, Healer: g.healer, AllowedOrigins: cfg.AllowedOrigins,
		Transport: transport, Metrics: recorder, Budget: budget, SessionKey: cfg.Sessions.Key(),
		MaxSessions: cfg.Limits.GetMaxSessions(), SessionIdleTimeout: cfg.Limits.GetSessionIdleTimeout(),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("gateway config %s: %w", o.gatewayConfig, err)
	}
	var readiness []gateway.Option
	if restCfg != nil {
		// A replica that started before its HealingRequest watch synced would answer
		// "healing unavailable" and resume no event stream: not ready until then.
		readiness = append(readiness, gateway.WithReadyCheck("HealingRequest watch not synced yet", g.healer.Available))
	}
	g.server, err = gateway.New(cfg, append(readiness,
		gateway.WithBindAddress(o.gatewayAddr),
		gateway.WithAuthenticator(auth),
		gateway.WithTransport(transport),
		gateway.WithBudget(budget),
		gateway.WithLogger(log),
		gateway.WithDelayReporter(hub),
		gateway.Mount("GET /v1/healing/events", events),
		gateway.Mount("POST /v1/healing-requests", healing.NewReportHandler(g.healer, streams)),
		gateway.Mount("/mcp/{name}", proxy),
		gateway.MountPublic("/ui", page), // the page's own cookie login
		gateway.MountPublic("/ui/", page),
		gateway.OnShutdown(hub.Close),
	)...)
	if err != nil {
		return nil, nil, err
	}
	return g, names, nil
}

// reader is the cache as the page's reader; nil (no cluster) stays a nil interface.
func reader(c cache.Cache) client.Reader {
	if c == nil {
		return nil
	}
	return c
}

// setupGateway adds the gateway to the manager.
func setupGateway(mgr ctrl.Manager, o options) ([]string, error) {
	g, names, err := buildGateway(mgr.GetConfig(), o)
	if err != nil {
		return nil, err
	}
	return names, mgr.Add(g)
}

// runGatewayOnly runs the gateway without controllers (--enable-controllers=false),
// with or without a reachable cluster, and serves metrics itself: secured as the
// manager's are when there is a cluster to authenticate scrapers against.
func runGatewayOnly(ctx context.Context, o options) error {
	log := ctrl.Log.WithName("setup")
	restCfg, err := clusterConfig()
	if err != nil {
		log.Info("No Kubernetes cluster configured: proxying only, healing is reported as unavailable", "reason", err.Error())
		restCfg = nil
	}
	g, names, err := buildGateway(restCfg, o)
	if err != nil {
		return err
	}
	log.Info("Starting selfheal", "controllers", "off", "gateway", "on", "gatewayUpstreams", names,
		"cluster", restCfg != nil)
	errc := make(chan error, 2)
	go func() { errc <- g.Start(ctx) }()
	switch {
	case o.metricsAddr == "0":
	case o.metricsSecure && restCfg == nil:
		log.Info("Metrics not served: --metrics-secure needs a cluster to authenticate scrapers; pass --metrics-secure=false to serve them over plain HTTP")
	case o.metricsSecure:
		hc, err := rest.HTTPClientFor(restCfg)
		if err != nil {
			return fmt.Errorf("metrics server: %w", err)
		}
		ms, err := metricsserver.NewServer(metricsOptions(o), restCfg, hc)
		if err != nil {
			return fmt.Errorf("metrics server: %w", err)
		}
		go func() {
			if err := ms.Start(ctx); err != nil {
				errc <- fmt.Errorf("metrics server: %w", err)
			}
		}()
	default:
		srv := &http.Server{Addr: o.metricsAddr, ReadHeaderTimeout: 10 * time.Second,
			Handler: promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{})}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics server: %w", err)
			}
		}()
		defer func() { _ = srv.Close() }()
	}
	return <-errc
}
