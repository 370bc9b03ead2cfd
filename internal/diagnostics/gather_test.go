package diagnostics

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// A real kube-apiserver and etcd (envtest), shared by the tests of this package and
// started by TestMain. The gather tests are the only proof that the reads work against
// a real API server, so a missing control plane fails the package instead of skipping
// them (CI always builds it: hack/controlplane.sh).
var (
	testEnv *envtest.Environment
	envCfg  *rest.Config
)

func TestMain(m *testing.M) {
	dir := assetsDir()
	if dir == "" {
		fmt.Fprintln(os.Stderr, "internal/diagnostics: the gather tests need etcd and kube-apiserver, and none were found: "+
			"run hack/controlplane.sh (it builds them once and prints their directory) or set KUBEBUILDER_ASSETS to that directory")
		os.Exit(1)
	}
	testEnv = &envtest.Environment{BinaryAssetsDirectory: dir}
	var err error
	if envCfg, err = testEnv.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "internal/diagnostics: starting the API server from %s: %v\n", dir, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := testEnv.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "internal/diagnostics: stopping the API server: %v\n", err)
	}
	os.Exit(code)
}

// assetsDir finds etcd and kube-apiserver: KUBEBUILDER_ASSETS, else the cache that
// hack/controlplane.sh fills.
func assetsDir() string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	root := os.Getenv("SELFHEAL_CACHE")
	if root == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		root = filepath.Join(base, "selfheal")
	}
	dirs, _ := filepath.Glob(filepath.Join(root, "controlplane", "*"))
	for _, d := range dirs {
		if isExec(filepath.Join(d, "etcd")) && isExec(filepath.Join(d, "kube-apiserver")) {
			return d
		}
	}
	return ""
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&0o111 != 0
}

// apiServer is the API server TestMain started.
func apiServer(t *testing.T) *rest.Config {
	t.Helper()
	return envCfg
}

func directClient(t *testing.T, cfg *rest.Config) client.Client {
	t.Helper()
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newNamespace(t *testing.T, c client.Client) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "diag-"}}
	if err := c.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), ns) })
	return ns.Name
}

// world creates objects as the controllers and the kubelet would have written them.
type world struct {
	t  *testing.T
	c  client.Client
	ns string
}

func (w *world) create(obj client.Object) {
	w.t.Helper()
	obj.SetNamespace(w.ns)
	if err := w.c.Create(context.Background(), obj); err != nil {
		w.t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func (w *world) deployment(d *appsv1.Deployment) *appsv1.Deployment {
	d = d.DeepCopy()
	status := d.Status
	d.ObjectMeta = metav1.ObjectMeta{Name: d.Name}
	d.Status = appsv1.DeploymentStatus{}
	w.create(d)
	d.Status = status
	d.Status.ObservedGeneration = d.Generation
	if err := w.c.Status().Update(context.Background(), d); err != nil {
		w.t.Fatalf("updating deployment status: %v", err)
	}
	return d
}

func (w *world) replicaSet(d *appsv1.Deployment) *appsv1.ReplicaSet {
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: rsName, Labels: webLabels, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: d.Spec.Replicas,
			Selector: &metav1.LabelSelector{MatchLabels: webLabels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: webLabels}, Spec: d.Spec.Template.Spec},
		},
	}
	w.create(rs)
	return rs
}

// pod creates the fixture pod owned by owner, then writes its status through the
// status subresource, as the kubelet does.
func (w *world) pod(p corev1.Pod, owner client.Object, kind string) *corev1.Pod {
	w.t.Helper()
	status := p.Status
	obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Labels: p.Labels}, Spec: p.Spec}
	if owner != nil {
		obj.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: owner.GetName(), UID: owner.GetUID(),
			Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
	}
	w.create(obj)
	obj.Status = status
	if obj.Status.PodIP != "" {
		obj.Status.PodIPs = []corev1.PodIP{{IP: obj.Status.PodIP}}
	}
	if obj.Status.HostIP != "" {
		obj.Status.HostIPs = []corev1.HostIP{{IP: obj.Status.HostIP}}
	}
	if err := w.c.Status().Update(context.Background(), obj); err != nil {
		w.t.Fatalf("updating status of pod %s: %v", p.Name, err)
	}
	return obj
}

func (w *world) service() *corev1.Service {
	svc := webService()
	svc.ObjectMeta = metav1.ObjectMeta{Name: "web"}
	svc.Spec.ClusterIP = ""
	w.create(svc)
	return svc
}

func (w *world) event(pod *corev1.Pod, reason, message string) {
	e := podEvent(pod.Name, corev1.EventTypeWarning, reason, message, 0)
	e.ObjectMeta = metav1.ObjectMeta{GenerateName: pod.Name + "."}
	e.InvolvedObject.Namespace, e.InvolvedObject.UID = w.ns, pod.UID
	w.create(&e)
}

func TestGatherDeploymentBehindService(t *testing.T) {
	cfg := apiServer(t)
	ctx := context.Background()
	c := directClient(t, cfg)
	w := &world{t: t, c: c, ns: newNamespace(t, c)}

	dep := w.deployment(webDeployment(unavailable))
	rs := w.replicaSet(dep)
	healthy := w.pod(runningPod("web-5d7c9b8f4-aaaaa"), rs, "ReplicaSet")
	crashing := w.pod(runningPod("web-5d7c9b8f4-bbbbb", crashLooping(1, "Error", 5)), rs, "ReplicaSet")
	w.pod(runningPod("web-5d7c9b8f4-ccccc", evicted), rs, "ReplicaSet")
	// A pod that matches the selector but belongs to no workload is not diagnosed.
	stray := runningPod("debug-shell")
	stray.Labels = map[string]string{"app": "web"}
	w.pod(stray, nil, "")
	other := runningPod("other-1")
	other.Labels = map[string]string{"app": "other"}
	otherPod := w.pod(other, nil, "")

	w.service()
	slice := sliceFor(*healthy, *crashing)
	slice.ObjectMeta = metav1.ObjectMeta{Name: "web-x7k2p", Labels: slice.Labels}
	w.create(&slice)
	otherSlice := sliceFor(*otherPod)
	otherSlice.ObjectMeta = metav1.ObjectMeta{Name: "other-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: "other"}}
	w.create(&otherSlice)

	w.event(crashing, "BackOff", "Back-off restarting failed container app in pod web-5d7c9b8f4-bbbbb")
	w.event(otherPod, "Unhealthy", "Readiness probe failed")
	deny, allow := defaultDeny(), allowFrom("allow-gateway", gatewayPeer(), intstr.FromString("http"))
	deny.ObjectMeta, allow.ObjectMeta = metav1.ObjectMeta{Name: deny.Name}, metav1.ObjectMeta{Name: allow.Name}
	w.create(&deny)
	w.create(&allow)

	// Read through a started cache, as the manager does, with the event index the
	// controller registers.
	informers, err := cache.New(cfg, cache.Options{Scheme: scheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := IndexEvents(ctx, informers); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = informers.Start(cctx) }()
	kube := kubernetes.NewForConfigOrDie(cfg)
	clk := clocktesting.NewFakePassiveClock(t0)
	g := NewGatherer(informers, kube, clk, Options{UseEventIndex: true})

	// The first reads start the informers; the cache then answers from memory.
	var s *Snapshot
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err = g.Gather(ctx, Target{Namespace: w.ns, Service: "web"}, gateway)
		if err == nil && len(s.Pods) == 3 && len(s.Events) == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}

	if s.Service == nil || s.Service.Name != "web" {
		t.Fatalf("service not read: %+v", s.Service)
	}
	if !s.GatheredAt.Equal(t0) {
		t.Errorf("GatheredAt = %v, want the injected clock's %v", s.GatheredAt, t0)
	}
	if s.Workload == nil || *s.Workload != (selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: "web"}) {
		t.Errorf("workload = %+v, want Deployment/web resolved through the ReplicaSet", s.Workload)
	}
	if s.Deployment == nil || s.Deployment.UID != dep.UID || s.StatefulSet != nil {
		t.Errorf("deployment not read")
	}
	if got := podNames(s.Pods); got != "web-5d7c9b8f4-aaaaa,web-5d7c9b8f4-bbbbb,web-5d7c9b8f4-ccccc" {
		t.Errorf("pods = %s, want the three the deployment owns, in every phase", got)
	}
	if len(s.EndpointSlices) != 1 || s.EndpointSlices[0].Name != "web-x7k2p" {
		t.Errorf("endpoint slices = %d, want only the service's", len(s.EndpointSlices))
	}
	if len(s.Events) != 1 || s.Events[0].Reason != "BackOff" || s.Events[0].InvolvedObject.Name != crashing.Name {
		t.Errorf("events = %+v, want the crashing pod's BackOff only", s.Events)
	}
	if len(s.NetworkPolicies) != 2 {
		t.Errorf("network policies = %d, want 2", len(s.NetworkPolicies))
	}
	// No kubelet serves logs here: every read is recorded as unreadable, none fails.
	var targets []string
	for _, l := range s.Logs {
		targets = append(targets, fmt.Sprintf("%s/%s/%v", l.Pod, l.Container, l.Previous))
		t.Logf("log %s/%s previous=%v unreadable: %s", l.Pod, l.Container, l.Previous, l.Err)
		if l.Err == "" || len(l.Lines) != 0 {
			t.Errorf("log %s/%s: err %q lines %d, want an error and no lines", l.Pod, l.Container, l.Err, len(l.Lines))
		}
	}
	if got := strings.Join(targets, ","); got != "web-5d7c9b8f4-bbbbb/app/true,web-5d7c9b8f4-ccccc/app/false" {
		// bbbbb is waiting in CrashLoopBackOff: its current container has no log, its
		// previous one does; ccccc's terminated container has one.
		t.Errorf("log targets = %s", got)
	}
	if s.Usage.Available {
		t.Errorf("usage available, but envtest serves no metrics.k8s.io")
	}

	r, err := Evaluate(s, DefaultChecks()...)
	if err != nil {
		t.Fatal(err)
	}
	if r.Issue != selfhealv1alpha1.IssueCrashLoopBackOff {
		t.Errorf("issue = %s (%s), want CrashLoopBackOff", r.Issue, r.Summary)
	}
	byCheck := map[selfhealv1alpha1.CheckName]selfhealv1alpha1.Finding{}
	for _, f := range r.Findings {
		byCheck[f.Check] = f
	}
	if f := byCheck[selfhealv1alpha1.CheckPodLogs]; f.Result != skipped {
		t.Errorf("PodLogs = %s %q, want Skipped when logs cannot be read", f.Result, f.Message)
	}
	if f := byCheck[selfhealv1alpha1.CheckNetworkPolicy]; f.Result != pass {
		t.Errorf("NetworkPolicy = %s %q, want Pass", f.Result, f.Message)
	}
	if f := byCheck[selfhealv1alpha1.CheckResourceUsage]; f.Message != "skipped: metrics API not available" {
		t.Errorf("ResourceUsage = %s %q", f.Result, f.Message)
	}
	if f := byCheck[selfhealv1alpha1.CheckFailedPods]; f.Result != warn || !strings.Contains(f.Message, "1 pods") {
		t.Errorf("FailedPods = %s %q", f.Result, f.Message)
	}
}

func podNames(pods []corev1.Pod) string {
	names := make([]string, len(pods))
	for i, p := range pods {
		names[i] = p.Name
	}
	return strings.Join(names, ",")
}

func TestGatherServiceNotFound(t *testing.T) {
	cfg := apiServer(t)
	c := directClient(t, cfg)
	ns := newNamespace(t, c)
	g := NewGatherer(c, kubernetes.NewForConfigOrDie(cfg), clocktesting.NewFakePassiveClock(t0), Options{})
	s, err := g.Gather(context.Background(), Target{Namespace: ns, Service: "missing"}, gateway)
	if err != nil {
		t.Fatalf("a missing service is not an error: %v", err)
	}
	if s.Service != nil || s.Workload != nil || len(s.Pods) != 0 {
		t.Errorf("snapshot of a missing service has content: %+v", s)
	}
	if issue, _ := Classify(s, nil); issue != selfhealv1alpha1.IssueTargetNotFound {
		t.Errorf("issue = %s", issue)
	}
}

func TestGatherScaledToZeroFindsWorkloadByTemplate(t *testing.T) {
	cfg := apiServer(t)
	c := directClient(t, cfg)
	w := &world{t: t, c: c, ns: newNamespace(t, c)}
	w.deployment(webDeployment(scaledToZero))
	w.service()
	g := NewGatherer(c, nil, clocktesting.NewFakePassiveClock(t0), Options{})
	s, err := g.Gather(context.Background(), Target{Namespace: w.ns, Service: "web"}, gateway)
	if err != nil {
		t.Fatal(err)
	}
	if s.Deployment == nil || s.Workload == nil || s.Workload.Name != "web" {
		t.Fatalf("workload of a deployment without pods not resolved: %+v", s.Workload)
	}
	r, err := Evaluate(s, DefaultChecks()...)
	if err != nil {
		t.Fatal(err)
	}
	if r.Issue != selfhealv1alpha1.IssueNoPods {
		t.Errorf("issue = %s (%s), want NoPods", r.Issue, r.Summary)
	}
}

func TestGatherStatefulSetAndExplicitWorkload(t *testing.T) {
	cfg := apiServer(t)
	c := directClient(t, cfg)
	w := &world{t: t, c: c, ns: newNamespace(t, c)}
	sts := statefulSet(1, 0)
	sts.ObjectMeta = metav1.ObjectMeta{Name: "db"}
	sts.Status = appsv1.StatefulSetStatus{}
	w.create(sts)
	db0 := w.pod(runningPod("db-0", runningNotReady), sts, "StatefulSet")
	w.service()
	w.event(db0, "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503")
	g := NewGatherer(c, nil, clocktesting.NewFakePassiveClock(t0), Options{})

	s, err := g.Gather(context.Background(), Target{Namespace: w.ns, Service: "web"}, gateway)
	if err != nil {
		t.Fatal(err)
	}
	if s.StatefulSet == nil || s.Workload == nil || s.Workload.Kind != selfhealv1alpha1.WorkloadStatefulSet || podNames(s.Pods) != "db-0" {
		t.Fatalf("statefulset not resolved from its pod: workload %+v pods %s", s.Workload, podNames(s.Pods))
	}
	// Without the event index, the namespace's events are listed and filtered.
	if len(s.Events) != 1 || s.Events[0].Reason != "Unhealthy" {
		t.Errorf("events = %+v, want db-0's Unhealthy", s.Events)
	}
	if len(s.Logs) != 1 || s.Logs[0].Err != "no client for pod logs configured" {
		t.Errorf("logs without a client: %+v", s.Logs)
	}

	// A workload the request names but that does not exist is reported, not guessed.
	missing := &selfhealv1alpha1.WorkloadReference{Kind: selfhealv1alpha1.WorkloadDeployment, Name: "web"}
	s, err = g.Gather(context.Background(), Target{Namespace: w.ns, Service: "web", Workload: missing}, gateway)
	if err != nil {
		t.Fatal(err)
	}
	if s.Workload != nil || s.Deployment != nil {
		t.Errorf("a missing named workload was resolved: %+v", s.Workload)
	}
	if issue, summary := Classify(s, nil); issue != selfhealv1alpha1.IssueConfigError {
		t.Errorf("issue = %s (%s), want ConfigError", issue, summary)
	}
}

func TestGatherReturnsAPIErrors(t *testing.T) {
	c, err := client.New(&rest.Config{Host: "http://127.0.0.1:1"}, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		t.Skipf("client construction needs the server: %v", err)
	}
	g := NewGatherer(c, nil, clocktesting.NewFakePassiveClock(t0), Options{})
	if _, err := g.Gather(context.Background(), Target{Namespace: "shop", Service: "web"}, gateway); err == nil {
		t.Fatal("an unreachable API server must be an error, so the caller retries")
	}
}

// logAndMetricsServer speaks the API server's pods/log and metrics.k8s.io protocol,
// standing in for a kubelet and metrics-server, which envtest does not run.
type logAndMetricsServer struct {
	*httptest.Server
	// requests counts every request: log reads, discovery and metrics.
	requests      atomic.Int32
	discoveryHits atomic.Int32
	mu            sync.Mutex
	logQueries    []string
}

func newLogAndMetricsServer(t *testing.T, ns string, logs map[string]string) *logAndMetricsServer {
	s := &logAndMetricsServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /apis/metrics.k8s.io/v1beta1", func(w http.ResponseWriter, r *http.Request) {
		s.discoveryHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(metav1.APIResourceList{
			TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
			GroupVersion: MetricsGroupVersion,
			APIResources: []metav1.APIResource{{Name: "pods", Namespaced: true, Kind: "PodMetrics", Verbs: []string{"get", "list"}}},
		})
	})
	mux.HandleFunc("GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("ns") != ns || r.URL.Query().Get("labelSelector") != "app=web" {
			http.Error(w, "unexpected query "+r.URL.String(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"kind":"PodMetricsList","apiVersion":"metrics.k8s.io/v1beta1","items":[
			{"metadata":{"name":"web-5d7c9b8f4-bbbbb","namespace":%q},"timestamp":"2026-03-01T12:00:00Z","window":"15s",
			 "containers":[{"name":"app","usage":{"cpu":"480m","memory":"250Mi"}}]},
			{"metadata":{"name":"someone-else","namespace":%q},"containers":[{"name":"x","usage":{"cpu":"1","memory":"1Gi"}}]}]}`, ns, ns)
	})
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{pod}/log", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.logQueries = append(s.logQueries, r.PathValue("pod")+"?"+r.URL.RawQuery)
		s.mu.Unlock()
		key := r.PathValue("pod") + "/" + r.URL.Query().Get("container")
		if r.URL.Query().Get("previous") == "true" {
			key += "/previous"
		}
		body, ok := logs[key]
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"previous terminated container \"app\" in pod %q not found","reason":"BadRequest","code":400}`, r.PathValue("pod"))
			return
		}
		// Deliberately ignores tailLines and limitBytes: the gatherer must bound reads itself.
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(body))
	})
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func TestGatherReadsRedactedLogsAndMetrics(t *testing.T) {
	cfg := apiServer(t)
	c := directClient(t, cfg)
	w := &world{t: t, c: c, ns: newNamespace(t, c)}
	dep := w.deployment(webDeployment())
	rs := w.replicaSet(dep)
	w.pod(runningPod("web-5d7c9b8f4-aaaaa"), rs, "ReplicaSet")
	w.pod(runningPod("web-5d7c9b8f4-bbbbb", crashLooping(1, "Error", 3)), rs, "ReplicaSet")
	w.service()

	var previous strings.Builder
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&previous, "request %d served\n", i)
	}
	previous.WriteString("connecting with Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJnYXRld2F5In0.c2lnbmF0dXJlLXZhbHVl\n")
	previous.WriteString("DB_PASSWORD=hunter2-prod\n")
	previous.WriteString("panic: dial tcp 10.96.3.4:5432: connect: connection refused\n")
	srv := newLogAndMetricsServer(t, w.ns, map[string]string{"web-5d7c9b8f4-bbbbb/app/previous": previous.String()})
	kube := kubernetes.NewForConfigOrDie(&rest.Config{Host: srv.URL})

	clk := clocktesting.NewFakePassiveClock(t0)
	g := NewGatherer(c, kube, clk, Options{TailLines: 50, MetricsCacheTTL: time.Minute})
	s, err := g.Gather(context.Background(), Target{Namespace: w.ns, Service: "web"}, gateway)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Logs) != 1 {
		t.Fatalf("logs = %+v, want the crashing pod's previous container", s.Logs)
	}
	l := s.Logs[0]
	if l.Err != "" || len(l.Lines) != 50 {
		t.Fatalf("log: err %q, %d lines, want 50 (TailLines)", l.Err, len(l.Lines))
	}
	text := strings.Join(l.Lines, "\n")
	for _, secret := range []string{"hunter2-prod", "c2lnbmF0dXJlLXZhbHVl", "eyJzdWIiOiJnYXRld2F5In0"} {
		if strings.Contains(text, secret) {
			t.Errorf("secret %q stored in the snapshot", secret)
		}
	}
	if !strings.Contains(text, "DB_PASSWORD=[REDACTED]") || !strings.Contains(text, "Bearer [REDACTED]") {
		t.Errorf("redacted lines missing:\n%s", text)
	}
	srv.mu.Lock()
	query := srv.logQueries[0]
	srv.mu.Unlock()
	for _, want := range []string{"container=app", "previous=true", "tailLines=50", "limitBytes=65536"} {
		if !strings.Contains(query, want) {
			t.Errorf("log query %q lacks %s", query, want)
		}
	}

	if !s.Usage.Available || len(s.Usage.Containers) != 1 || s.Usage.Containers[0].Memory.String() != "250Mi" {
		t.Fatalf("usage = %+v, want the target pod's container only", s.Usage)
	}
	r, err := Evaluate(s, DefaultChecks()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range r.Findings {
		switch f.Check {
		case selfhealv1alpha1.CheckPodLogs:
			if f.Result != fail || !strings.Contains(strings.Join(f.Evidence, "\n"), "panic: dial tcp 10.96.3.4:5432: connect: connection refused") {
				t.Errorf("PodLogs = %s %q %q", f.Result, f.Message, f.Evidence)
			}
		case selfhealv1alpha1.CheckResourceUsage:
			if f.Result != warn || !strings.Contains(f.Message, "web-5d7c9b8f4-bbbbb/app memory") {
				t.Errorf("ResourceUsage = %s %q", f.Result, f.Message)
			}
		}
	}

	// Discovery is asked once per TTL, measured on the injected clock.
	if _, err := g.Gather(context.Background(), Target{Namespace: w.ns, Service: "web"}, gateway); err != nil {
		t.Fatal(err)
	}
	if n := srv.discoveryHits.Load(); n != 1 {
		t.Errorf("discovery asked %d times within the TTL, want 1", n)
	}
	clk.SetTime(t0.Add(time.Minute + time.Second))
	if _, err := g.Gather(context.Background(), Target{Namespace: w.ns, Service: "web"}, gateway); err != nil {
		t.Fatal(err)
	}
	if n := srv.discoveryHits.Load(); n != 2 {
		t.Errorf("discovery asked %d times after the TTL, want 2", n)
	}
}
