package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controller"
	"github.com/selfheal-dev/selfheal/internal/controlplane"
)

// These benchmarks run on the full local control plane of TestMain. Run them with
//
//	KUBEBUILDER_ASSETS=$(hack/controlplane.sh) go test ./internal/controller/ -run '^$' -bench . -benchtime 1x -timeout 20m
//
// b.N is not the sample count: each benchmark takes a fixed number of samples per call
// (SELFHEAL_BENCH_HEALINGS, SELFHEAL_BENCH_PODS override them for a quick look), so
// ns/op is the wall time of the whole benchmark and means nothing on its own.

// benchHealings is how many healings each latency case measures.
var benchHealings = envInt("SELFHEAL_BENCH_HEALINGS", 20)

// benchPods is how many pods the heap benchmark caches.
var benchPods = envInt("SELFHEAL_BENCH_PODS", 2000)

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// healingTimes are one healing's latencies, each from just before the HealingRequest's
// Create call to the moment this process first saw the condition on a watch.
type healingTimes struct {
	// status: the controller's first status write (startTime or phase set).
	status time.Duration
	// action: the action took effect, whichever is seen first of the workload change
	// (restart annotation, replicas 1) on the Deployment watch and the Succeeded
	// outcome on the HealingRequest.
	action time.Duration
	// recorded: the Succeeded outcome persisted on the HealingRequest.
	recorded time.Duration
	// healed: phase Healed.
	healed time.Duration
}

// latencyCase sets up one failure in a fresh namespace and says when the Deployment
// shows the remediation.
type latencyCase struct {
	name  string
	setup func(b *testing.B, ns string)
	acted func(*appsv1.Deployment) bool
}

const benchApp = "sandfly"

// benchPolicy lets every healing of the benchmark act: no cooldown (policy's default
// here), and a breaker and storm limit far above the run count.
func benchPolicy(p *selfhealv1alpha1.HealingPolicy) {
	p.Spec.CircuitBreaker = &selfhealv1alpha1.CircuitBreaker{
		MaxActionsPerTarget: ptr.To[int32](100),
		NamespaceMaxActions: ptr.To[int32](100),
	}
}

// BenchmarkHealingLatency measures, per failure case, the time from a HealingRequest's
// creation to its first status, to the action, and to Healed, over benchHealings
// healings, one at a time, each on its own namespace.
func BenchmarkHealingLatency(b *testing.B) {
	defer startManager(b)()
	wc, err := client.NewWithWatch(cluster.Config, client.Options{Scheme: controlplane.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	cases := []latencyCase{
		{
			name: "ScaledToZero",
			setup: func(b *testing.B, ns string) {
				policy(b, ns, benchPolicy)
				app(b, ns, benchApp, 0)
				waitSettled(b, ns)
			},
			acted: func(d *appsv1.Deployment) bool { return d.Spec.Replicas != nil && *d.Spec.Replicas >= 1 },
		},
		{
			name: "CrashLoop",
			setup: func(b *testing.B, ns string) {
				policy(b, ns, benchPolicy)
				app(b, ns, benchApp, 2)
				crashLoop(b, ns, benchApp, 2, nil)
				waitSettled(b, ns)
			},
			acted: func(d *appsv1.Deployment) bool {
				_, ok := d.Spec.Template.Annotations[restartedAt]
				return ok
			},
		},
	}
	var namespaces []string
	defer func() {
		// Deleted at the end, not between runs, so the namespace controller's work
		// does not overlap a measurement.
		for _, ns := range namespaces {
			_ = k8s.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		}
	}()
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			heal := func() healingTimes {
				ns := newNamespace(b)
				namespaces = append(namespaces, ns)
				c.setup(b, ns)
				return healOnce(b, wc, ns, c)
			}
			// One healing first, not counted: the manager's cache starts most
			// informers (pods, events, policies...) on first read, so the first
			// healing after a manager start also waits for them to sync.
			w := heal()
			b.Logf("%s warm-up healing, not counted, ms from creation: status %.0f, action %.0f, recorded %.0f, healed %.0f",
				c.name, ms(w.status), ms(w.action), ms(w.recorded), ms(w.healed))
			runs := make([]healingTimes, 0, benchHealings)
			for range benchHealings {
				runs = append(runs, heal())
			}
			reportHealings(b, c.name, runs)
		})
	}
}

// waitSettled waits until the Deployment controller has processed the Deployment and
// the Service has its EndpointSlice, so the request meets the state a caller would.
func waitSettled(b *testing.B, ns string) {
	b.Helper()
	NewWithT(b).Eventually(func(g Gomega) {
		d := &appsv1.Deployment{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: benchApp}, d)).To(Succeed())
		g.Expect(d.Status.ObservedGeneration).To(BeNumerically(">=", d.Generation))
		var eps discoveryv1.EndpointSliceList
		g.Expect(k8s.List(context.Background(), &eps, client.InNamespace(ns),
			client.MatchingLabels{discoveryv1.LabelServiceName: benchApp})).To(Succeed())
		g.Expect(eps.Items).NotTo(BeEmpty())
	}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
}

// healOnce creates one HealingRequest and times it through watches on HealingRequests
// and Deployments in its namespace, both opened before the request is created.
func healOnce(b *testing.B, wc client.WithWatch, ns string, c latencyCase) healingTimes {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	hrWatch, err := wc.Watch(ctx, &selfhealv1alpha1.HealingRequestList{}, client.InNamespace(ns))
	if err != nil {
		b.Fatal(err)
	}
	defer hrWatch.Stop()
	depWatch, err := wc.Watch(ctx, &appsv1.DeploymentList{}, client.InNamespace(ns))
	if err != nil {
		b.Fatal(err)
	}
	defer depWatch.Stop()

	var t0 time.Time
	hr := request(b, ns, benchApp, func(*selfhealv1alpha1.HealingRequest) { t0 = time.Now() })
	var got healingTimes
	var changed time.Duration
	first := func(d *time.Duration) {
		if *d == 0 {
			*d = time.Since(t0)
		}
	}
	var last *selfhealv1alpha1.HealingRequest
	// Until Healed and the workload change are both seen: the Deployment event may
	// still be queued when the Healed one is read.
	for got.healed == 0 || changed == 0 {
		select {
		case ev, ok := <-hrWatch.ResultChan():
			if !ok {
				b.Fatalf("%s: the HealingRequest watch closed", c.name)
			}
			o, ok := ev.Object.(*selfhealv1alpha1.HealingRequest)
			if ev.Type == watch.Error || !ok {
				b.Fatalf("%s: HealingRequest watch: %v", c.name, ev.Object)
			}
			if o.Name != hr.Name {
				continue
			}
			last = o
			if o.Status.StartTime != nil || o.Status.Phase != "" {
				first(&got.status)
			}
			for _, a := range o.Status.Actions {
				if a.Outcome == selfhealv1alpha1.OutcomeSucceeded {
					first(&got.recorded)
				}
			}
			switch {
			case o.Status.Phase == selfhealv1alpha1.PhaseHealed:
				first(&got.healed)
			case o.Status.Phase.IsTerminal():
				b.Fatalf("%s: %s ended %s (issue %s): %v", c.name, o.Name, o.Status.Phase, o.Status.Issue, o.Status.Progress)
			}
		case ev, ok := <-depWatch.ResultChan():
			if !ok {
				b.Fatalf("%s: the Deployment watch closed", c.name)
			}
			d, ok := ev.Object.(*appsv1.Deployment)
			if ev.Type == watch.Error || !ok {
				b.Fatalf("%s: Deployment watch: %v", c.name, ev.Object)
			}
			if d.Name == benchApp && c.acted(d) {
				first(&changed)
			}
		case <-ctx.Done():
			phase, progress := selfhealv1alpha1.HealingPhase(""), []selfhealv1alpha1.ProgressEntry(nil)
			if last != nil {
				phase, progress = last.Status.Phase, last.Status.Progress
			}
			b.Fatalf("%s: %s not healed in time (phase %q, workload changed %v): %v", c.name, hr.Name, phase, changed > 0, progress)
		}
	}
	got.action = got.recorded
	if changed < got.action {
		got.action = changed
	}
	return got
}

// reportHealings prints and reports p50 and p95 (nearest rank) of each latency in ms.
func reportHealings(b *testing.B, name string, runs []healingTimes) {
	b.Helper()
	pick := func(f func(healingTimes) time.Duration) []time.Duration {
		ds := make([]time.Duration, len(runs))
		for i, r := range runs {
			ds[i] = f(r)
		}
		slices.Sort(ds)
		return ds
	}
	series := []struct {
		unit string
		ds   []time.Duration
	}{
		{"status", pick(func(r healingTimes) time.Duration { return r.status })},
		{"action", pick(func(r healingTimes) time.Duration { return r.action })},
		{"recorded", pick(func(r healingTimes) time.Duration { return r.recorded })},
		{"healed", pick(func(r healingTimes) time.Duration { return r.healed })},
	}
	line := fmt.Sprintf("%s, %d healings, ms from creation (p50/p95/max):", name, len(runs))
	for _, s := range series {
		p50, p95 := percentile(s.ds, 0.50), percentile(s.ds, 0.95)
		b.ReportMetric(ms(p50), s.unit+"-p50-ms")
		b.ReportMetric(ms(p95), s.unit+"-p95-ms")
		line += fmt.Sprintf(" %s %.0f/%.0f/%.0f;", s.unit, ms(p50), ms(p95), ms(s.ds[len(s.ds)-1]))
	}
	b.Log(line)
	if p95 := percentile(series[1].ds, 0.95); p95 > time.Second {
		b.Logf("%s: action p95 %v is above the 1s target", name, p95)
	}
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkManagerHeapPerPod measures the heap a Pod informer of the manager's cache
// holds per cached pod, with benchPods realistic pods in the watched namespaces, for
// the manager's trimmed cache and for an untrimmed one.
func BenchmarkManagerHeapPerPod(b *testing.B) {
	const nsCount = 4
	namespaces := make([]string, nsCount)
	for i := range namespaces {
		namespaces[i] = newNamespace(b)
	}
	defer func() {
		for _, ns := range namespaces {
			_ = k8s.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		}
	}()
	// The manager's identity, HTTP client and REST mapper; the mapper is warmed before
	// the baseline so discovery is not counted as pod memory.
	cfg, err := cluster.AddUser(controlplane.ServiceAccountUser(managerNamespace, managerSA), controlplane.ServiceAccountGroups(managerNamespace))
	if err != nil {
		b.Fatal(err)
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		b.Fatal(err)
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := mapper.RESTMapping(schema.GroupKind{Kind: "Pod"}, "v1"); err != nil {
		b.Fatal(err)
	}
	options := func(trim bool) cache.Options {
		o := cache.Options{
			HTTPClient: httpClient, Scheme: controlplane.Scheme(), Mapper: mapper,
			DefaultNamespaces: map[string]cache.Config{},
		}
		for _, ns := range namespaces {
			o.DefaultNamespaces[ns] = cache.Config{}
		}
		if trim {
			controller.TrimCache(&o)
		}
		return o
	}
	var trim toolscache.TransformFunc
	for obj, by := range options(true).ByObject {
		if _, ok := obj.(*corev1.Pod); ok {
			trim = by.Transform
		}
	}
	if trim == nil {
		b.Fatal("TrimCache sets no pod transform")
	}
	start := time.Now()
	size := createBenchPods(b, namespaces, benchPods, trim)
	b.Logf("created %d pods in %d namespaces in %v; mean JSON per pod: %.0f B as served (with managed fields), %.0f B as the trimmed cache keeps it",
		benchPods, nsCount, time.Since(start).Round(time.Millisecond), size.served, size.trimmed)

	untrimmed := cachedPodHeap(b, cfg, options(false))
	trimmed := cachedPodHeap(b, cfg, options(true))

	b.ReportMetric(trimmed.inuse, "trimmed-B/pod")
	b.ReportMetric(untrimmed.inuse, "untrimmed-B/pod")
	b.ReportMetric(trimmed.alloc, "trimmed-alloc-B/pod")
	b.ReportMetric(untrimmed.alloc, "untrimmed-alloc-B/pod")
	b.Logf("%d cached pods, HeapInuse per pod: trimmed %.0f B, untrimmed %.0f B (%.0f%% saved); HeapAlloc per pod: trimmed %.0f B, untrimmed %.0f B",
		benchPods, trimmed.inuse, untrimmed.inuse, 100*(1-trimmed.inuse/untrimmed.inuse), trimmed.alloc, untrimmed.alloc)
}

type heapPerPod struct{ inuse, alloc float64 }

// cachedPodHeap starts a cache with the options, syncs a Pod informer, and returns the
// heap growth per cached pod, after GC, with the cache still running.
func cachedPodHeap(b *testing.B, cfg *rest.Config, opts cache.Options) heapPerPod {
	b.Helper()
	before := heapStats()
	c, err := cache.New(cfg, opts)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("cache: %v", err)
		}
	}()
	if _, err := c.GetInformer(ctx, &corev1.Pod{}); err != nil {
		b.Fatal(err)
	}
	if !c.WaitForCacheSync(ctx) {
		b.Fatal("the cache did not sync")
	}
	after := heapStats()

	// The cache holds every pod, as the apiserver serves them.
	var pods corev1.PodList
	if err := c.List(ctx, &pods); err != nil {
		b.Fatal(err)
	}
	if len(pods.Items) != benchPods {
		b.Fatalf("the cache holds %d pods, want %d", len(pods.Items), benchPods)
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning {
			b.Fatalf("pod %s/%s is %s in the cache, want Running", p.Namespace, p.Name, p.Status.Phase)
		}
	}
	return heapPerPod{
		inuse: float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / float64(benchPods),
		alloc: float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(benchPods),
	}
}

func heapStats() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms
}

// jsonSize is the mean JSON size of the benchmark's pods as the apiserver returns them,
// and after the cache's transform.
type jsonSize struct{ served, trimmed float64 }

// createBenchPods creates n pods spread over the namespaces, shaped like the pods of
// real Deployments, and writes them a Running status; it returns their mean JSON size,
// as stored and after trim.
//
// Nothing runs them: a scheduling gate keeps the scheduler (and so kwok) away, and with
// no node name the pod garbage collector leaves them alone. They carry a Deployment's
// labels but no owner reference, since the garbage collector deletes pods whose owner
// does not exist and a real ReplicaSet would delete or adopt them.
func createBenchPods(b *testing.B, namespaces []string, n int, trim toolscache.TransformFunc) jsonSize {
	b.Helper()
	ctx := context.Background()
	// The ServiceAccount admission plugin refuses pods until the namespace's default
	// ServiceAccount exists.
	for _, ns := range namespaces {
		NewWithT(b).Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "default"}, &corev1.ServiceAccount{})).To(Succeed())
		}).WithTimeout(eventually).WithPolling(poll).Should(Succeed())
	}
	cfg := rest.CopyConfig(cluster.Config)
	cfg.QPS, cfg.Burst = 1000, 2000
	c, err := client.New(cfg, client.Options{Scheme: controlplane.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		size jsonSize
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				pod := benchPod(namespaces[i%len(namespaces)], i)
				err := c.Create(ctx, pod)
				if err == nil {
					runningStatus(pod)
					err = c.Status().Update(ctx, pod)
				}
				var served, trimmed int
				if err == nil {
					served, trimmed, err = jsonSizes(pod, trim)
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("pod %d: %w", i, err))
				}
				size.served += float64(served) / float64(n)
				size.trimmed += float64(trimmed) / float64(n)
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		b.Fatalf("creating pods: %v", errs)
	}
	return size
}

func jsonSizes(pod *corev1.Pod, trim toolscache.TransformFunc) (served, trimmed int, err error) {
	raw, err := json.Marshal(pod)
	if err != nil {
		return 0, 0, err
	}
	t, err := trim(pod.DeepCopy())
	if err != nil {
		return 0, 0, err
	}
	rawTrimmed, err := json.Marshal(t)
	return len(raw), len(rawTrimmed), err
}

// benchPod is pod i of a Deployment-like group: 10 groups per namespace, every other
// one with a log-shipping sidecar.
func benchPod(ns string, i int) *corev1.Pod {
	group := (i / 4) % 10
	name := fmt.Sprintf("svc-%d", group)
	hash := fmt.Sprintf("7d9f8c%04x", group*7919)
	labels := map[string]string{
		"app":                          name,
		"app.kubernetes.io/name":       name,
		"app.kubernetes.io/instance":   name + "-prod",
		"app.kubernetes.io/version":    "1.4.2",
		"app.kubernetes.io/component":  "server",
		"app.kubernetes.io/part-of":    "storefront",
		"app.kubernetes.io/managed-by": "Helm",
		"pod-template-hash":            hash,
	}
	image := "ghcr.io/selfheal-dev/" + name + ":1.4.2"
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("http")}},
			PeriodSeconds:    10,
			TimeoutSeconds:   2,
			FailureThreshold: 3,
		}
	}
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	containers := []corev1.Container{{
		Name:    "server",
		Image:   image,
		Command: []string{"/usr/local/bin/server"},
		Args:    []string{"--listen=:8080", "--metrics-listen=:9090", "--log-format=json", "--config=/etc/app/config.yaml"},
		Ports: []corev1.ContainerPort{
			{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
			{Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP},
		},
		EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name + "-env"}}}},
		Env: []corev1.EnvVar{
			fieldEnv("POD_NAME", "metadata.name"),
			fieldEnv("POD_NAMESPACE", "metadata.namespace"),
			fieldEnv("POD_IP", "status.podIP"),
			{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"}}},
			{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: name + "-db"}, Key: "url"}}},
			{Name: "LOG_LEVEL", Value: "info"},
			{Name: "REDIS_ADDR", Value: "redis-master.storefront.svc.cluster.local:6379"},
			{Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Value: "http://otel-collector.observability.svc.cluster.local:4317"},
			{Name: "OTEL_SERVICE_NAME", Value: name},
			{Name: "FEATURE_FLAGS", Value: "checkout-v2,fast-search,new-cart"},
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: mustQuantity("100m"), corev1.ResourceMemory: mustQuantity("128Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: mustQuantity("500m"), corev1.ResourceMemory: mustQuantity("256Mi")},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "config", MountPath: "/etc/app", ReadOnly: true},
			{Name: "tmp", MountPath: "/tmp"},
			{Name: "data", MountPath: "/var/lib/app"},
		},
		LivenessProbe:  probe("/healthz"),
		ReadinessProbe: probe("/readyz"),
		StartupProbe:   &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}, FailureThreshold: 30, PeriodSeconds: 2},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}}
	if group%2 == 1 {
		containers = append(containers, corev1.Container{
			Name:  "log-shipper",
			Image: "cr.fluentbit.io/fluent/fluent-bit:3.1.4",
			Args:  []string{"--config=/fluent-bit/etc/fluent-bit.conf"},
			Env: []corev1.EnvVar{
				fieldEnv("NODE_NAME", "spec.nodeName"),
				{Name: "FLUENT_ELASTICSEARCH_HOST", Value: "logs.observability.svc.cluster.local"},
			},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: mustQuantity("20m"), corev1.ResourceMemory: mustQuantity("32Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: mustQuantity("64Mi")},
			},
			VolumeMounts: []corev1.VolumeMount{{Name: "tmp", MountPath: "/var/log/app", ReadOnly: true}},
		})
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns,
			Name:      fmt.Sprintf("%s-%s-%s", name, hash, strconv.FormatInt(int64(36*36*36*36+i), 36)),
			Labels:    labels,
			Annotations: map[string]string{
				"kubectl.kubernetes.io/restartedAt": "2026-03-02T09:14:07Z",
				"prometheus.io/scrape":              "true",
				"prometheus.io/port":                "9090",
				"checksum/config":                   "3f2b1c9e8d7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c",
			},
		},
		Spec: corev1.PodSpec{
			Containers:                    containers,
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name + "-config"}}}},
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(mustQuantity("1Gi"))}}},
			},
			Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
				PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
					Weight: 100,
					PodAffinityTerm: corev1.PodAffinityTerm{
						LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
						TopologyKey:   "kubernetes.io/hostname",
					},
				}},
			}},
			SchedulingGates: []corev1.PodSchedulingGate{{Name: "selfheal.dev/benchmark-hold"}},
		},
	}
}

// runningStatus gives a created pod the status a kubelet reports for a running, ready
// pod.
func runningStatus(pod *corev1.Pod) {
	now := metav1.Now()
	i := len(pod.Name)*31 + int(pod.Name[len(pod.Name)-1])
	podIP := fmt.Sprintf("10.244.%d.%d", i%250, (i/250)%250+1)
	pod.Status.Phase = corev1.PodRunning
	pod.Status.HostIP, pod.Status.HostIPs = "172.18.0.4", []corev1.HostIP{{IP: "172.18.0.4"}}
	pod.Status.PodIP, pod.Status.PodIPs = podIP, []corev1.PodIP{{IP: podIP}}
	pod.Status.StartTime = &now
	pod.Status.Conditions = nil
	for _, t := range []corev1.PodConditionType{"PodReadyToStartContainers", corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled} {
		pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	pod.Status.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{
			Name:        c.Name,
			Image:       c.Image,
			ImageID:     c.Image + "@sha256:9b2a7c4d1e0f8a6b5c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b",
			ContainerID: fmt.Sprintf("containerd://%064x", i*7919+len(c.Name)),
			Ready:       true,
			Started:     ptr.To(true),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
}
