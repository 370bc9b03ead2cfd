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
// p50/p95 (from each HealingRequest's creation to the scale-up seen on a watch), the
// API requests the manager made per healing (its rest_client_requests_total), and the
// CPU seconds it used per healing (/proc). The heap per cached pod at this size is
// BenchmarkManagerHeapPerPod's measurement with SELFHEAL_BENCH_PODS=10000.
//
//	KUBEBUILDER_ASSETS=$(hack/controlplane.sh) go test ./internal/controller/ -run '^$' -bench BenchmarkScale -benchtime 1x -timeout 60m
func BenchmarkScale(b *testing.B) {
	nsCount := envInt("SELFHEAL_SCALE_NAMESPACES", 100)
	perNS := envInt("SELFHEAL_SCALE_SERVICES", 10)
	replicas := envInt("SELFHEAL_SCALE_REPLICAS", 10)
	inFlight := min(envInt("SELFHEAL_SCALE_INFLIGHT", 50), nsCount)
	ctx := context.Background()
	cfg := rest.CopyConfig(cluster.Config)
	cfg.QPS, cfg.Burst = 500, 1000
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: controlplane.Scheme()})
	if err != nil {
		b.Fatal(err)
	}

	start := time.Now()
	namespaces := make([]string, nsCount)
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
	want := int32(nsCount * perNS * replicas)
	NewWithT(b).Eventually(func(g Gomega) {
		var deps appsv1.DeploymentList
		g.Expect(c.List(ctx, &deps)).To(Succeed())
		var ready int32
		for _, d := range deps.Items {
			ready += d.Status.ReadyReplicas
		}
		g.Expect(ready).To(BeNumerically(">=", want))
	}).WithTimeout(30 * time.Minute).WithPolling(2 * time.Second).Should(Succeed())
	b.Logf("%d namespaces, %d Services, %d ready pods in %s", nsCount, nsCount*perNS, want, time.Since(start).Round(time.Second))

	m := startScaleManager(b)
	// Warm up: the manager syncs its caches over the whole cluster, then heals one.
	warm := namespaces[nsCount-1]
	breakAgain(b, warm, "mcp-00")
	NewWithT(b).Expect(terminal(b, request(b, warm, "mcp-00")).Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed))

	// The failures: one Service in each of inFlight namespaces, scaled to zero.
	targets := namespaces[:inFlight]
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
	requestsBefore, cpuBefore := m.requests(b), m.cpu(b)
	created := make(map[string]time.Time, inFlight)
	var reqs []*selfhealv1alpha1.HealingRequest
	for _, ns := range targets {
		created[ns] = time.Now()
		reqs = append(reqs, request(b, ns, "mcp-00"))
	}
	var toAction []time.Duration
	deadline := time.After(5 * time.Minute)
	for len(toAction) < inFlight {
		select {
		case ev := <-watcher.ResultChan():
			d, ok := ev.Object.(*appsv1.Deployment)
			if !ok || ev.Type != watch.Modified || ptr.Deref(d.Spec.Replicas, 1) != 1 {
				continue
			}
			if at, ok := created[d.Namespace]; ok {
				toAction = append(toAction, time.Since(at))
				delete(created, d.Namespace)
			}
		case <-deadline:
			b.Fatalf("%d of %d actions seen after 5 minutes", len(toAction), inFlight)
		}
	}
	for _, hr := range reqs {
		if got := terminal(b, hr); got.Status.Phase != selfhealv1alpha1.PhaseHealed {
			b.Fatalf("%s ended %s: %v", got.Name, got.Status.Phase, got.Status.Progress)
		}
	}
	requests := m.requests(b) - requestsBefore
	cpu := m.cpu(b) - cpuBefore
	slices.Sort(toAction)
	p50, p95 := percentile(toAction, 0.50), percentile(toAction, 0.95)
	b.ReportMetric(ms(p50), "action-p50-ms")
	b.ReportMetric(ms(p95), "action-p95-ms")
	b.ReportMetric(requests/float64(inFlight), "api-requests/healing")
	b.ReportMetric(cpu/float64(inFlight), "cpu-s/healing")
	b.Logf("%d healings in flight over %d pods: failure to action min %.0f, p50 %.0f, p95 %.0f, max %.0f ms; %.1f API requests and %.3f CPU s per healing (manager process, until every one is Healed)",
		inFlight, want, ms(toAction[0]), ms(p50), ms(p95), ms(toAction[len(toAction)-1]), requests/float64(inFlight), cpu/float64(inFlight))
}

// scaleManager is the manager binary running for BenchmarkScale.
type scaleManager struct {
	cmd     *exec.Cmd
	metrics string
}

func startScaleManager(b *testing.B) *scaleManager {
	b.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(root, "bin", "manager")
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
	log, err := os.Create(filepath.Join(b.TempDir(), "manager.log"))
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "--metrics-bind-address="+addr, "--metrics-secure=false", "--health-probe-bind-address=0") //nolint:gosec,noctx // our own binary
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		_ = log.Close()
	})
	m := &scaleManager{cmd: cmd, metrics: "http://" + addr + "/metrics"}
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

// requests sums the manager's rest_client_requests_total over all labels.
func (m *scaleManager) requests(b *testing.B) float64 {
	b.Helper()
	text, err := m.scrape()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "rest_client_requests_total{") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			total += v
		}
	}
	return total
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
