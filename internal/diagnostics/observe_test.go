package diagnostics

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
)

// countingReader counts the reads made through it, by verb and type.
type countingReader struct {
	client.Reader
	mu    sync.Mutex
	reads map[string]int
}

func (r *countingReader) count(verb string, obj any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reads == nil {
		r.reads = map[string]int{}
	}
	r.reads[verb+" "+strings.TrimPrefix(fmt.Sprintf("%T", obj), "*")]++
}

func (r *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	r.count("get", obj)
	return r.Reader.Get(ctx, key, obj, opts...)
}

func (r *countingReader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	r.count("list", list)
	return r.Reader.List(ctx, list, opts...)
}

// take returns the reads so far, sorted, and their total, and starts counting anew.
func (r *countingReader) take() (string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var lines []string
	total := 0
	for k, n := range r.reads {
		lines = append(lines, fmt.Sprintf("%s×%d", k, n))
		total += n
	}
	sort.Strings(lines)
	r.reads = nil
	return strings.Join(lines, ", "), total
}

// TestObserveReadsOnlyWhatVerificationNeeds compares the reads of one Gather (a
// diagnosis) with one Observe (what the controller does in each Verifying reconcile)
// on a crashlooping Deployment with three pods, with the event index the manager uses:
// Observe reads no events, no network policies, no logs and no metrics, and its facts
// judge the pods, the workload and the endpoints as the diagnosis does.
func TestObserveReadsOnlyWhatVerificationNeeds(t *testing.T) {
	cfg := apiServer(t)
	c := directClient(t, cfg)
	w := &world{t: t, c: c, ns: newNamespace(t, c)}
	dep := w.deployment(webDeployment(unavailable))
	rs := w.replicaSet(dep)
	logs := map[string]string{}
	var pods []string
	for i := range 3 {
		p := w.pod(runningPod(fmt.Sprintf("web-5d7c9b8f4-%d", i), crashLooping(1, "Error", 4)), rs, "ReplicaSet")
		w.event(p, "BackOff", "Back-off restarting failed container app")
		logs[p.Name+"/app/previous"] = "panic: connect: connection refused\n"
		pods = append(pods, p.Name)
	}
	w.service()
	deny := defaultDeny()
	deny.Namespace = ""
	w.create(&deny)
	srv := newLogAndMetricsServer(t, w.ns, logs)
	reader := &countingReader{Reader: c}
	g := NewGatherer(reader, kubernetes.NewForConfigOrDie(&rest.Config{Host: srv.URL}), clocktesting.NewFakePassiveClock(t0),
		Options{UseEventIndex: true})
	target := Target{Namespace: w.ns, Service: "web"}
	ctx := context.Background()

	full, err := g.Gather(ctx, target, gateway)
	if err != nil {
		t.Fatal(err)
	}
	gatherReads, gatherTotal := reader.take()
	gatherRequests := srv.requests.Swap(0)

	obs, err := g.Observe(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	observeReads, observeTotal := reader.take()
	observeRequests := srv.requests.Load()
	t.Logf("Gather:  %d reads through the reader (%s) and %d requests for logs and metrics", gatherTotal, gatherReads, gatherRequests)
	t.Logf("Observe: %d reads through the reader (%s) and %d requests for logs and metrics", observeTotal, observeReads, observeRequests)

	if len(full.Logs) != 3 || !full.Usage.Available || len(full.Events) != 3 || len(full.NetworkPolicies) != 1 {
		t.Fatalf("the diagnosis did not read everything: %d logs, usage %v, %d events, %d policies",
			len(full.Logs), full.Usage.Available, len(full.Events), len(full.NetworkPolicies))
	}
	if observeRequests != 0 {
		t.Errorf("Observe made %d requests for logs or metrics, want none", observeRequests)
	}
	for _, kind := range []string{"EventList", "NetworkPolicyList"} {
		if strings.Contains(observeReads, kind) {
			t.Errorf("Observe read %s: %s", kind, observeReads)
		}
	}
	if !obs.Observation || len(obs.Events) != 0 || len(obs.Logs) != 0 || len(obs.NetworkPolicies) != 0 || obs.Usage.Available {
		t.Errorf("observation carries what it must not read: %+v", obs)
	}
	if podNames(obs.Pods) != strings.Join(pods, ",") || obs.Deployment == nil || obs.Deployment.UID != dep.UID {
		t.Errorf("observation lacks the workload or its pods: %s", podNames(obs.Pods))
	}
	if observeTotal >= gatherTotal {
		t.Errorf("Observe made %d reads, Gather %d", observeTotal, gatherTotal)
	}

	// The same facts of pods, workload and endpoints, so verification judges what the
	// diagnosis saw; the policies are not claimed either way.
	ff, of := full.Facts(), obs.Facts()
	if fmt.Sprint(ff.Pods.Active, ff.Pods.Ready, len(ff.Pods.CrashLoop), ff.Workload, ff.Endpoints) !=
		fmt.Sprint(of.Pods.Active, of.Pods.Ready, len(of.Pods.CrashLoop), of.Workload, of.Endpoints) {
		t.Errorf("facts differ:\n gather  %+v %+v %+v\n observe %+v %+v %+v", ff.Pods, ff.Workload, ff.Endpoints, of.Pods, of.Workload, of.Endpoints)
	}
	if of.Policies.Evaluated || !strings.Contains(of.Policies.Reason, "not read") {
		t.Errorf("an observation judged policies it did not read: %+v", of.Policies)
	}
	if issue, _ := Classify(obs, nil); issue != selfhealv1alpha1.IssueCrashLoopBackOff {
		t.Errorf("observation classifies as %s, want CrashLoopBackOff", issue)
	}
}
