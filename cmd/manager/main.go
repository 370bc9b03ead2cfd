// Command manager runs selfheal: the HealingRequest and HealingPolicy controllers and
// the embedded gateway, in one binary. Either part can be turned off.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controller"
	"github.com/selfheal-dev/selfheal/internal/gateway"
	"github.com/selfheal-dev/selfheal/internal/scheme"
)

// shutdownTimeout bounds graceful shutdown: runnables (controllers, the gateway
// draining in-flight calls) get this long after SIGTERM/SIGINT.
const shutdownTimeout = 10 * time.Second

type options struct {
	metricsAddr             string
	metricsSecure           bool
	metricsCertPath         string
	metricsCertName         string
	metricsCertKey          string
	probeAddr               string
	leaderElect             bool
	leaderElectionNamespace string
	leaseDuration           time.Duration
	renewDeadline           time.Duration
	retryPeriod             time.Duration
	maxConcurrentReconciles int
	kubeAPIQPS              float32
	kubeAPIBurst            int
	watchNamespaces         string
	enableControllers       bool
	gatewayConfig           string
	gatewayAddr             string
	callerNamespace         string
	callerLabels            string
}

func main() {
	var o options
	var qps float64
	flag.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint; 0 disables it.")
	flag.BoolVar(&o.metricsSecure, "metrics-secure", true, "Serve metrics over HTTPS, only to callers the API server authenticates (TokenReview) "+
		"and authorizes for GET /metrics (SubjectAccessReview); false serves plain HTTP to anyone.")
	flag.StringVar(&o.metricsCertPath, "metrics-cert-path", "", "Directory with the metrics server's certificate; empty uses a self-signed one.")
	flag.StringVar(&o.metricsCertName, "metrics-cert-name", "tls.crt", "Certificate file name in --metrics-cert-path.")
	flag.StringVar(&o.metricsCertKey, "metrics-cert-key", "tls.key", "Key file name in --metrics-cert-path.")
	flag.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.BoolVar(&o.leaderElect, "leader-elect", false, "Elect a leader so only one replica runs the controllers (the gateway serves on every replica).")
	flag.StringVar(&o.leaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's namespace).")
	flag.DurationVar(&o.leaseDuration, "leader-elect-lease-duration", 15*time.Second,
		"How long a standby waits, after the leader stops renewing (a killed leader), before taking over.")
	flag.DurationVar(&o.renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "How long the leader retries renewing before it gives up leading.")
	flag.DurationVar(&o.retryPeriod, "leader-elect-retry-period", 2*time.Second, "How often candidates try to acquire or renew the lease.")
	flag.IntVar(&o.maxConcurrentReconciles, "max-concurrent-reconciles", 50, "HealingRequests reconciled in parallel: a reconcile mostly waits on the API server, so a burst of healings starts together instead of queueing.")
	flag.Float64Var(&qps, "kube-api-qps", 100, "Requests per second the controllers' client may send to the API server.")
	flag.IntVar(&o.kubeAPIBurst, "kube-api-burst", 200, "Burst of requests the controllers' client may send to the API server.")
	flag.StringVar(&o.watchNamespaces, "watch-namespaces", "", "Comma-separated namespaces to watch; empty watches all.")
	flag.BoolVar(&o.enableControllers, "enable-controllers", true, "Run the healing controllers; false runs the gateway alone.")
	flag.StringVar(&o.gatewayConfig, "gateway-config", "", "Gateway configuration file (YAML); empty disables the gateway.")
	flag.StringVar(&o.gatewayAddr, "gateway-bind-address", gateway.DefaultBindAddress,
		"Address the gateway serves on (plain HTTP). The default is loopback only: set e.g. :8443 to serve a Service.")
	flag.StringVar(&o.callerNamespace, "caller-namespace", "", "Namespace of the callers (the gateway) for network policy diagnosis; default: the pod's namespace.")
	flag.StringVar(&o.callerLabels, "caller-labels", "app.kubernetes.io/name=selfheal", "Labels of the caller pods (k=v,...) for network policy diagnosis.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	o.kubeAPIQPS = float32(qps)
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := run(ctrl.SetupSignalHandler(), o); err != nil {
		ctrl.Log.Error(err, "Manager stopped with an error")
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	log := ctrl.Log.WithName("setup")
	if !o.enableControllers {
		if o.gatewayConfig == "" {
			return errors.New("nothing to run: --enable-controllers=false needs --gateway-config")
		}
		return runGatewayOnly(ctx, o)
	}
	clientScheme := scheme.New()

	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	// controller-runtime's client default (20 QPS, burst 30) queues a storm of healings
	// behind its own rate limiter; the API server's priority and fairness is the limit
	// that protects the cluster.
	restCfg.QPS, restCfg.Burst = o.kubeAPIQPS, o.kubeAPIBurst
	cacheOpts := cache.Options{}
	if ns := splitList(o.watchNamespaces); len(ns) > 0 {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, n := range ns {
			cacheOpts.DefaultNamespaces[n] = cache.Config{}
		}
	}
	controller.TrimCache(&cacheOpts)

	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                  clientScheme,
		Cache:                   cacheOpts,
		Metrics:                 metricsOptions(o),
		HealthProbeBindAddress:  o.probeAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "selfheal.selfheal.dev",
		LeaderElectionNamespace: o.leaderElectionNamespace,
		LeaseDuration:           &o.leaseDuration,
		RenewDeadline:           &o.renewDeadline,
		RetryPeriod:             &o.retryPeriod,
		// Hand leadership over at once on shutdown instead of letting the lease expire.
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       ptr.To(shutdownTimeout),
		Controller: config.Controller{
			// A panic in a reconcile is logged and returned as an error (retried with
			// backoff); it never takes the manager down.
			RecoverPanic: ptr.To(true),
		},
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}

	caller, err := callerIdentity(o)
	if err != nil {
		return err
	}
	if err := controller.Setup(mgr, controller.Options{
		MaxConcurrentReconciles: o.maxConcurrentReconciles,
		Caller:                  caller,
	}); err != nil {
		return fmt.Errorf("setting up the controllers: %w", err)
	}
	var upstreams []string
	if o.gatewayConfig != "" {
		if upstreams, err = setupGateway(mgr, o); err != nil {
			return err
		}
	}
	log.Info("Starting selfheal",
		"controllers", "on",
		"healingPolicies", countPolicies(ctx, mgr, splitList(o.watchNamespaces)),
		"gateway", onOff(o.gatewayConfig != ""),
		"gatewayUpstreams", upstreams,
		"watchNamespaces", orAll(o.watchNamespaces),
		"leaderElection", o.leaderElect,
	)
	return mgr.Start(ctx)
}

// metricsOptions serves metrics the way the kubebuilder v4 scaffold does: over
// HTTPS (a self-signed certificate unless --metrics-cert-path is given), and only
// to callers the API server authenticates and authorizes for GET /metrics. This
// needs create on tokenreviews and subjectaccessreviews (see README).
func metricsOptions(o options) metricsserver.Options {
	m := metricsserver.Options{BindAddress: o.metricsAddr, SecureServing: o.metricsSecure}
	if o.metricsSecure {
		m.FilterProvider = filters.WithAuthenticationAndAuthorization
		if o.metricsCertPath != "" {
			m.CertDir, m.CertName, m.KeyName = o.metricsCertPath, o.metricsCertName, o.metricsCertKey
		}
	}
	return m
}

// errNoCluster says no kubeconfig and no in-cluster configuration exist.
var errNoCluster = errors.New("no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not running in a cluster")

// clusterConfig loads the cluster's configuration, or returns errNoCluster when
// there is none to load. It looks before asking controller-runtime, which logs an
// error with a stack trace when it finds nothing: running without a cluster is a
// supported way to run the gateway, not an error.
func clusterConfig() (*rest.Config, error) {
	configured := os.Getenv("KUBECONFIG") != "" || os.Getenv("KUBERNETES_SERVICE_HOST") != ""
	if f := flag.Lookup("kubeconfig"); f != nil && f.Value.String() != "" {
		configured = true
	}
	if home, err := os.UserHomeDir(); err == nil {
		if _, err := os.Stat(filepath.Join(home, ".kube", "config")); err == nil {
			configured = true
		}
	}
	if !configured {
		return nil, errNoCluster
	}
	return ctrl.GetConfig()
}

// countPolicies states which HealingPolicies exist at startup, read directly from the
// API server (the cache is not running yet). It informs; it never fails startup.
func countPolicies(ctx context.Context, mgr ctrl.Manager, namespaces []string) string {
	var list selfhealv1alpha1.HealingPolicyList
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if len(namespaces) == 0 {
		namespaces = []string{""}
	}
	var names []string
	for _, ns := range namespaces {
		if err := mgr.GetAPIReader().List(ctx, &list, clientInNamespace(ns)...); err != nil {
			return "unknown (" + err.Error() + ")"
		}
		for _, p := range list.Items {
			names = append(names, p.Namespace+"/"+p.Name)
		}
	}
	if len(names) == 0 {
		return "none (diagnosis only: nothing will be remediated)"
	}
	return fmt.Sprintf("%d (%s)", len(names), strings.Join(names, ", "))
}

func callerIdentity(o options) (controller.Caller, error) {
	ns := o.callerNamespace
	if ns == "" {
		ns = podNamespace()
	}
	labels := map[string]string{}
	for _, kv := range splitList(o.callerLabels) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return controller.Caller{}, fmt.Errorf("--caller-labels: %q is not key=value", kv)
		}
		labels[k] = v
	}
	return controller.Caller{Namespace: ns, Labels: labels}, nil
}

// podNamespace is the namespace the manager runs in, from the ServiceAccount mount.
func podNamespace() string {
	if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
		return strings.TrimSpace(string(b))
	}
	return "selfheal-system"
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func clientInNamespace(ns string) []client.ListOption {
	if ns == "" {
		return nil
	}
	return []client.ListOption{client.InNamespace(ns)}
}

func orAll(s string) string {
	if s == "" {
		return "all"
	}
	return s
}
