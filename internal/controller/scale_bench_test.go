package controller_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controlplane"
)

// BenchmarkScale runs the manager binary, as its ServiceAccount, against a cluster of
// SELFHEAL_SCALE_NAMESPACES namespaces (default 100) with SELFHEAL_SCALE_SERVICES
// Services each (default 10) of SELFHEAL_SCALE_REPLICAS kwok pods (default 10): 1,000
// Services and 10,000 pods. It then breaks SELFHEAL_SCALE_INFLIGHT Services (default
// 50) at once and reports, for those healings in flight together: failure-to-action
// p50/p95 (from each HealingRequest's creation to the scale-up seen on a watch) and
// where it went (to the controller's first sight), the API requests the
// manager made per healing (its rest_client_requests_total, by method), and the CPU
// seconds it used per healing (/proc). With SELFHEAL_SCALE_BASELINE set to another
// manager binary (an older build), that binary heals the same way first, on other
// namespaces of the same cluster, so the two are compared side by side under the same
// load. The heap per cached pod at this size is BenchmarkManagerHeapPerPod's
// measurement with SELFHEAL_BENCH_PODS=10000.
//
//	KUBEBUILDER_ASSETS=$(hack/controlplane.sh) go test ./internal/controller/ -run '^$' -bench BenchmarkScale -benchtime 1x -timeout 60m
func BenchmarkScale(b *testing.B) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	type round struct{ label, bin string }
	rounds := []round{{"this build", filepath.Join(root, "bin", "manager")}}
	if base := os.Getenv("SELFHEAL_SCALE_BASELINE"); base != "" {
		rounds = append([]round{{"baseline " + base, base}}, rounds...)
	}
	nsCount := envInt("SELFHEAL_SCALE_NAMESPACES", 100)
	perNS := envInt("SELFHEAL_SCALE_SERVICES", 10)
	replicas := envInt("SELFHEAL_SCALE_REPLICAS", 10)
	inFlight := min(envInt("SELFHEAL_SCALE_INFLIGHT", 50), nsCount/len(rounds))
	ctx := context.Background()
	cfg := rest.CopyConfig(cluster.Config)
	cfg.QPS, cfg.Burst = 500, 1000
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: controlplane.Scheme()})
	if err != nil {
		b.Fatal(err)
	}

	start := time.Now()
	// One namespace more than asked: the warm-up heals there, apart from the measured.
	namespaces := make([]string, nsCount+1)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range namespaces {
		namespaces[i] = newNamespace(b)
		policy(b, namespaces[i], benchPolicy)
		for j := range perNS {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				app(b, namespaces[i], fmt.Sprintf("mcp-%02d", j), int32(replicas))
			})
		}
	}
	wg.Wait()
	want := int32(len(namespaces) * perNS * replicas)
	NewWithT(b).Eventually(func(g Gomega) {
		var deps appsv1.DeploymentList
		g.Expect(c.List(ctx, &deps)).To(Succeed())
		var ready int32
		for _, d := range deps.Items {
			ready += d.Status.ReadyReplicas
		}
		g.Expect(ready).To(BeNumerically(">=", want))
	}).WithTimeout(30 * time.Minute).WithPolling(2 * time.Second).Should(Succeed())
	b.Logf("%d namespaces, %d Services, %d ready pods in %s", len(namespaces), len(namespaces)*perNS, want, time.Since(start).Round(time.Second))

	for i, r := range rounds {
		f := healInFlight(b, c, r.bin, namespaces[nsCount], namespaces[i*inFlight:(i+1)*inFlight])
		b.Logf("[%s] %d healings in flight over %d pods: %s", r.label, inFlight, want, f)
		if i == len(rounds)-1 {
			b.ReportMetric(ms(f.p50), "action-p50-ms")
			b.ReportMetric(ms(f.p95), "action-p95-ms")
			b.ReportMetric(f.requests, "api-requests/healing")
			b.ReportMetric(f.cpu, "cpu-s/healing")
		}
	}
}

// scaleFigures are one round of BenchmarkScale, per healing.
type scaleFigures struct {
	created            time.Duration // to create every request, the API server's pace
	min, p50, p95, max time.Duration // failure to action
	sight50, sight95   time.Duration // to the controller's first sight
	requests, cpu      float64
	perMethod          string
}

func (f scaleFigures) String() string {
	return fmt.Sprintf("failure to action min %.0f, p50 %.0f, p95 %.0f, max %.0f ms "+
		"(to the controller's first sight p50/p95 %.0f/%.0f ms; creating the requests took %s); "+
		"%.1f API requests (%s) and %.3f CPU s per healing (manager process, until every one is Healed)",
		ms(f.min), ms(f.p50), ms(f.p95), ms(f.max), ms(f.sight50), ms(f.sight95),
		f.created.Round(time.Millisecond), f.requests, f.perMethod, f.cpu)
}

// healInFlight starts the manager bin, warms it up with one healing in warm, then
// scales Service mcp-00 of every target namespace to zero and creates their requests
// at once, and measures until every one is Healed. It stops the manager.
func healInFlight(b *testing.B, c client.WithWatch, bin, warm string, targets []string) scaleFigures {
	ctx := context.Background()
	m := startScaleManager(b, bin)
	defer m.stop()
	// Warm up: the manager syncs its caches over the whole cluster, then heals one.
	breakAgain(b, warm, "mcp-00")
	NewWithT(b).Expect(terminal(b, request(b, warm, "mcp-00")).Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed))

	for _, ns := range targets {
		breakAgain(b, ns, "mcp-00")
	}
	for _, ns := range targets {
		waitReady(b, ns, "mcp-00", 0)
	}
	watcher, err := c.Watch(ctx, &appsv1.DeploymentList{}, client.MatchingFields{"metadata.name": "mcp-00"})
	if err != nil {
		b.Fatal(err)
	}
	defer watcher.Stop()
	// Actions are timed as the watch delivers them, concurrently with the creations:
	// timed when read after the last Create, the early ones would count the time the
	// later ones took to create.
	acted := make(chan map[string]time.Time, 1)
	go func() {
		seen := make(map[string]time.Time, len(targets))
		defer func() { acted <- seen }()
		deadline := time.After(5 * time.Minute)
		for len(seen) < len(targets) {
			select {
			case ev := <-watcher.ResultChan():
				d, ok := ev.Object.(*appsv1.Deployment)
				if !ok || ev.Type != watch.Modified || ptr.Deref(d.Spec.Replicas, 1) != 1 {
					continue
				}
				if _, ok := seen[d.Namespace]; !ok && slices.Contains(targets, d.Namespace) {
					seen[d.Namespace] = time.Now()
				}
			case <-deadline:
				return
			}
		}
	}()
	requestsBefore, cpuBefore := m.requests(b), m.cpu(b)
	createdAt := make(map[string]time.Time, len(targets))
	var reqs []*selfhealv1alpha1.HealingRequest
	for _, ns := range targets {
		createdAt[ns] = time.Now()
		reqs = append(reqs, request(b, ns, "mcp-00"))
	}
	f := scaleFigures{created: time.Since(createdAt[targets[0]])}
	seen := <-acted
	if len(seen) < len(targets) {
		b.Fatalf("%d of %d actions seen after 5 minutes", len(seen), len(targets))
	}
	var toAction []time.Duration
	for ns, at := range seen {
		toAction = append(toAction, at.Sub(createdAt[ns]))
	}
	// The intent is recorded (and the action taken) in the reconcile of the first
	// sight, so the first sight is the only step status can time apart.
	var toSight []time.Duration
	for _, hr := range reqs {
		got := terminal(b, hr)
		if got.Status.Phase != selfhealv1alpha1.PhaseHealed {
			b.Fatalf("%s ended %s: %v", got.Name, got.Status.Phase, got.Status.Progress)
		}
		at := createdAt[got.Namespace]
		toSight = append(toSight, got.Status.StartTime.Sub(at))
	}
	n := float64(len(targets))
	var perMethod []string
	for method, count := range m.requests(b) {
		if count -= requestsBefore[method]; count > 0 {
			f.requests += count / n
			perMethod = append(perMethod, fmt.Sprintf("%s %.1f", method, count/n))
		}
	}
	slices.Sort(perMethod)
	f.perMethod = strings.Join(perMethod, ", ")
	f.cpu = (m.cpu(b) - cpuBefore) / n
	for _, d := range [][]time.Duration{toAction, toSight} {
		slices.Sort(d)
	}
	f.min, f.p50, f.p95, f.max = toAction[0], percentile(toAction, 0.50), percentile(toAction, 0.95), toAction[len(toAction)-1]
	f.sight50, f.sight95 = percentile(toSight, 0.50), percentile(toSight, 0.95)
	return f
}

// scaleManager is the manager binary running for BenchmarkScale.
type scaleManager struct {
	cmd     *exec.Cmd
	metrics string
	stop    func() // SIGTERM, and wait for it to exit
}

func startScaleManager(b *testing.B, bin string) *scaleManager {
	b.Helper()
	kubeconfig, err := cluster.WriteKubeconfig(controlplane.ServiceAccountUser(managerNamespace, managerSA), controlplane.ServiceAccountGroups(managerNamespace))
	if err != nil {
		b.Fatal(err)
	}
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	logDir := os.Getenv("SELFHEAL_SCALE_MANAGER_LOGS") // kept for reading, when set
	if logDir == "" {
		logDir = b.TempDir()
	}
	log, err := os.CreateTemp(logDir, "manager-*.log")
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("manager %s logs to %s", bin, log.Name())
	args := append([]string{"--metrics-bind-address=" + addr, "--metrics-secure=false", "--health-probe-bind-address=0", "--zap-time-encoding=rfc3339nano"},
		strings.Fields(os.Getenv("SELFHEAL_SCALE_MANAGER_ARGS"))...) // to compare flags side by side
	cmd := exec.Command(bin, args...) //nolint:gosec,noctx // our own binary
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	m := &scaleManager{cmd: cmd, metrics: "http://" + addr + "/metrics"}
	m.stop = sync.OnceFunc(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		_ = log.Close()
	})
	b.Cleanup(m.stop)
	NewWithT(b).Eventually(func() error { _, err := m.scrape(); return err }).WithTimeout(time.Minute).Should(Succeed())
	return m
}

func (m *scaleManager) scrape() (string, error) {
	resp, err := http.Get(m.metrics) //nolint:noctx,gosec // loopback
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	var out strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		out.WriteString(sc.Text())
		out.WriteByte('\n')
	}
	return out.String(), sc.Err()
}

// requests is the manager's rest_client_requests_total by method.
func (m *scaleManager) requests(b *testing.B) map[string]float64 {
	b.Helper()
	text, err := m.scrape()
	if err != nil {
		b.Fatal(err)
	}
	byMethod := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		labels, ok := strings.CutPrefix(line, "rest_client_requests_total{")
		if !ok {
			continue
		}
		_, method, _ := strings.Cut(labels, `method="`)
		method, _, _ = strings.Cut(method, `"`)
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			byMethod[method] += v
		}
	}
	return byMethod
}

// cpu is the manager process's user and system CPU seconds, from /proc.
func (m *scaleManager) cpu(b *testing.B) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", m.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which is in parentheses): utime is the 14th
	// field of the line, stime the 15th, in clock ticks (100 per second on Linux).
	rest := string(data[strings.LastIndexByte(string(data), ')')+2:])
	f := strings.Fields(rest)
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}
