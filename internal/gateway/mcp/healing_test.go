package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controlplane"
	"github.com/selfheal-dev/selfheal/internal/gateway/healing"
	"github.com/selfheal-dev/selfheal/internal/sse"
)

var cp *controlplane.ControlPlane

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	var err error
	cp, err = controlplane.Start(context.Background(), controlplane.Options{Progress: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the control plane:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := cp.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
	}
	os.Exit(code)
}

var nsSeq atomic.Int32

func freshNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("mcp-%d-%d", os.Getpid()%10000, nsSeq.Add(1))
	if err := cp.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

// startHealer runs the gateway's healing side against the real API server.
func startHealer(t *testing.T, ctx context.Context, ns string) *healing.Healer {
	t.Helper()
	return startHealerWith(t, ctx, ns, healing.Options{})
}

// startHealerWith is startHealer with options (client and namespaces are set here).
func startHealerWith(t *testing.T, ctx context.Context, ns string, opts healing.Options) *healing.Healer {
	t.Helper()
	c, err := healing.NewInformerCache(cp.Config, []string{ns})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go func() { _ = c.Start(cctx) }()
	opts.Client, opts.Namespaces = cp.Client, []string{ns}
	h := healing.New(opts)
	if err := h.Start(cctx, c); err != nil {
		t.Fatal(err)
	}
	waitFor(t, h.Available)
	return h
}

func requests(t *testing.T, ns string) []selfhealv1alpha1.HealingRequest {
	t.Helper()
	var list selfhealv1alpha1.HealingRequestList
	if err := cp.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// waitForOneRequest waits until a HealingRequest exists and returns its name.
func waitForOneRequest(t *testing.T, ns string) string {
	t.Helper()
	waitFor(t, func() bool { return len(requests(t, ns)) > 0 })
	return requests(t, ns)[0].Name
}

// playController writes status through the API, as the healing controller does.
func playController(t *testing.T, ns, name string, mutate func(*selfhealv1alpha1.HealingRequestStatus)) {
	t.Helper()
	for {
		var hr selfhealv1alpha1.HealingRequest
		if err := cp.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &hr); err != nil {
			t.Fatal(err)
		}
		mutate(&hr.Status)
		err := cp.Client.Status().Update(context.Background(), &hr)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "the object has been modified") {
			t.Fatal(err)
		}
	}
}

func step(phase selfhealv1alpha1.HealingPhase, msg string) func(*selfhealv1alpha1.HealingRequestStatus) {
	return func(s *selfhealv1alpha1.HealingRequestStatus) {
		s.Phase = phase
		s.Progress = append(s.Progress, selfhealv1alpha1.ProgressEntry{Time: metav1.Now(), Phase: phase, Message: msg})
	}
}

func end(phase selfhealv1alpha1.HealingPhase, issue selfhealv1alpha1.IssueType, reason, msg string) func(*selfhealv1alpha1.HealingRequestStatus) {
	return func(s *selfhealv1alpha1.HealingRequestStatus) {
		s.Phase = phase
		s.Issue = issue
		status := metav1.ConditionFalse
		if phase == selfhealv1alpha1.PhaseHealed {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: selfhealv1alpha1.ConditionReady, Status: status, Reason: reason, Message: msg})
		now := metav1.Now() // as the controller does: failures seen before it join this healing
		s.CompletionTime = &now
		if phase != selfhealv1alpha1.PhaseHealed {
			s.Findings = []selfhealv1alpha1.Finding{{Check: selfhealv1alpha1.CheckPodStatus, Result: selfhealv1alpha1.ResultFail, Message: "pod tools-0: " + string(issue)}}
		}
	}
}

// heldClient is one raw Streamable HTTP client (2026-07-28, stateless) whose call is
// held by the proxy.
type heldClient struct {
	notes  []string // healing steps and tool progress, as received
	result json.RawMessage
	err    json.RawMessage
}

func rawCall(ctx context.Context, url string, id int, withToken bool, held func()) (*heldClient, error) {
	meta := `"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}`
	if withToken {
		meta += fmt.Sprintf(`,"progressToken":"p-%d"`, id)
	}
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"count","arguments":{"n":2},"_meta":{%s}}}`, id, meta)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "tools/call")
	req.Header.Set("Mcp-Name", "count")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		return nil, fmt.Errorf("call %d: %d %s", id, resp.StatusCode, ct)
	}
	out := &heldClient{}
	r := sse.NewReader(resp.Body)
	first := true
	for {
		ev, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("call %d: stream ended without a response: %w", id, err)
		}
		data := ev.Data
		var m struct {
			Method string `json:"method"`
			Params struct {
				Message string `json:"message"`
				Data    struct {
					Message string `json:"message"`
				} `json:"data"`
			} `json:"params"`
			Result json.RawMessage `json:"result"`
			Error  json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &m); err != nil {
			return nil, err
		}
		switch m.Method {
		case "notifications/progress":
			out.notes = append(out.notes, "progress: "+m.Params.Message)
		case "notifications/message":
			out.notes = append(out.notes, "message: "+m.Params.Data.Message)
		case "":
			out.result, out.err = m.Result, m.Error
			return out, nil
		}
		if first {
			first = false
			held()
		}
	}
}

func TestThousandFailingCallsMakeOneHealingAndAllGetTheResult(t *testing.T) {
	// Generous: a thousand held calls under the race detector, beside other builds.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ns := freshNamespace(t)
	healer := startHealer(t, ctx, ns)
	up := &upstreamServer{t: t, stateless: true, addr: reserveAddr(t)} // nothing listens yet
	t.Cleanup(up.stop)
	proxy := startProxy(t, Options{
		Upstreams: []Upstream{{Name: "tools", URL: up.url(), Namespace: ns, Service: "tools"}},
		Healer:    healer,
	})

	const calls = 1000
	var held atomic.Int32
	results := make([]*heldClient, calls)
	errs := make(chan error, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			res, err := rawCall(ctx, proxy.URL+"/mcp/tools", i+1, i%2 == 0, func() { held.Add(1) })
			if err != nil {
				errs <- err
				return
			}
			results[i] = res
		})
	}
	waitFor(t, func() bool { return held.Load() == calls })
	items := requests(t, ns)
	if len(items) != 1 {
		t.Fatalf("%d HealingRequests for %d failing calls, want 1", len(items), calls)
	}
	name := items[0].Name
	if items[0].Spec.Trigger.FailureClass != selfhealv1alpha1.FailureConnectionRefused || items[0].Spec.Trigger.Upstream != "tools" {
		t.Fatalf("trigger %+v", items[0].Spec.Trigger)
	}

	playController(t, ns, name, step(selfhealv1alpha1.PhaseDiagnosing, "endpoints of tools: none ready"))
	playController(t, ns, name, step(selfhealv1alpha1.PhaseRemediating, "rollout restart of deployment/tools"))
	up.start() // the restarted workload serves again
	playController(t, ns, name, end(selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueNoReadyPods, selfhealv1alpha1.ReasonHealed, "tools is serving again"))

	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, res := range results {
		if res.err != nil || !strings.Contains(string(res.result), `"sum":3`) {
			t.Fatalf("call %d ended with result %s error %s", i+1, res.result, res.err)
		}
		kind := "message: "
		if i%2 == 0 {
			kind = "progress: "
		}
		joined := strings.Join(res.notes, "\n")
		for _, want := range []string{"endpoints of tools: none ready", "rollout restart of deployment/tools", "tools is serving again"} {
			if !strings.Contains(joined, want) {
				t.Fatalf("call %d did not see the step %q; got:\n%s", i+1, want, joined)
			}
		}
		for _, n := range res.notes {
			if !strings.HasPrefix(n, kind) {
				t.Fatalf("call %d (progress token: %v) got %q", i+1, i%2 == 0, n)
			}
		}
	}
	if got := up.calls.Load(); got != calls {
		t.Fatalf("upstream ran the tool %d times, want each held call replayed once (%d)", got, calls)
	}
	if n := len(requests(t, ns)); n != 1 {
		t.Fatalf("%d HealingRequests at the end, want 1", n)
	}
}

func TestFailedHealingAnswersJSONRPCErrorWithDiagnosis(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := freshNamespace(t)
	healer := startHealer(t, ctx, ns)
	up := newUpstream(t, true) // healthy, so the SDK client can connect first
	proxy := startProxy(t, Options{
		Upstreams: []Upstream{{Name: "tools", URL: up.url(), Namespace: ns, Service: "tools"}},
		Healer:    healer,
	})
	cs, log := connectSDK(t, ctx, proxy.URL+"/mcp/tools", "2026-07-28")
	up.stop()

	type outcome struct{ err error }
	done := make(chan outcome, 1)
	go func() {
		_, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "count", Arguments: map[string]any{"n": 1}})
		done <- outcome{err}
	}()
	name := waitForOneRequest(t, ns)
	playController(t, ns, name, step(selfhealv1alpha1.PhaseDiagnosing, "pod tools-0 cannot pull its image"))
	playController(t, ns, name, end(selfhealv1alpha1.PhaseFailed, selfhealv1alpha1.IssueImagePullBackOff, selfhealv1alpha1.ReasonNotHealable, `image "tools:v9" not found`))
	res := <-done
	var rpcErr *jsonrpc.Error
	if !errors.As(res.err, &rpcErr) {
		t.Fatalf("CallTool error %v is not a JSON-RPC error", res.err)
	}
	var data map[string]any
	_ = json.Unmarshal(rpcErr.Data, &data)
	if rpcErr.Code != codeUpstreamUnavailable || !strings.Contains(rpcErr.Message, `image "tools:v9" not found`) ||
		data["issue"] != "ImagePullBackOff" || data["reason"] != selfhealv1alpha1.ReasonNotHealable || data["healingRequest"] != name || data["phase"] != "Failed" {
		t.Fatalf("error %d %q data %v does not carry the diagnosis", rpcErr.Code, rpcErr.Message, data)
	}
	waitFor(t, func() bool { return len(log.logMessages()) >= 2 })
	if joined := strings.Join(log.logMessages(), "\n"); !strings.Contains(joined, "pod tools-0 cannot pull its image") {
		t.Fatalf("the client's log did not relay the step; got:\n%s", joined)
	}
}

func TestHealedUpstreamWithLostSessionIsReinitializedAndCallReplayed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := freshNamespace(t)
	healer := startHealer(t, ctx, ns)
	up := newUpstream(t, false)
	proxy := startProxy(t, Options{
		Upstreams:     []Upstream{{Name: "tools", URL: up.url(), Namespace: ns, Service: "tools"}},
		Healer:        healer,
		RetryInterval: 20 * time.Millisecond,
	})
	cs, log := connectSDK(t, ctx, proxy.URL+"/mcp/tools", "2025-11-25")
	session := cs.ID()
	if sum := callCount(t, ctx, cs, 2, nil); sum != 3 {
		t.Fatalf("count(2) = %d", sum)
	}
	up.stop() // the pod dies

	done := make(chan int, 1)
	go func() { done <- callCount(t, ctx, cs, 3, "tok-heal") }()
	name := waitForOneRequest(t, ns)
	playController(t, ns, name, step(selfhealv1alpha1.PhaseRemediating, "rollout restart of deployment/tools"))
	up.start() // a new pod: it knows none of the old sessions
	playController(t, ns, name, end(selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ReasonHealed, "tools is serving again"))

	if sum := <-done; sum != 6 {
		t.Fatalf("replayed count(3) = %d, want 6", sum)
	}
	if cs.ID() != session {
		t.Fatalf("client session changed from %q to %q", session, cs.ID())
	}
	if got := up.inits.Load(); got != 2 {
		t.Fatalf("upstream saw %d initialize requests, want 2", got)
	}
	// Notification handlers run asynchronously: wait for the tool's last step.
	waitFor(t, func() bool { return strings.Contains(strings.Join(log.progressMessages(), "\n"), "step 3") })
	joined := strings.Join(log.progressMessages(), "\n")
	for _, want := range []string{"rollout restart of deployment/tools", "tools is serving again", "step 3"} {
		if !strings.Contains(joined, want) {
			t.Fatalf("progress did not include %q; got:\n%s", want, joined)
		}
	}
	if sum := callCount(t, ctx, cs, 4, nil); sum != 10 {
		t.Fatalf("count(4) on the recovered session = %d", sum)
	}
}

func TestReplayModesAfterHealing(t *testing.T) {
	for _, tc := range []struct {
		mode     ReplayMode
		replayed bool
	}{
		{ReplayNever, false},
		{ReplayUnsent, true}, // connection refused: provably unsent
		{ReplayAlways, true},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			ns := freshNamespace(t)
			healer := startHealer(t, ctx, ns)
			up := &upstreamServer{t: t, stateless: true, addr: reserveAddr(t)}
			t.Cleanup(up.stop)
			proxy := startProxy(t, Options{
				Upstreams: []Upstream{{Name: "tools", URL: up.url(), Namespace: ns, Service: "tools", Replay: tc.mode}},
				Healer:    healer,
			})
			done := make(chan *heldClient, 1)
			go func() {
				res, err := rawCall(ctx, proxy.URL+"/mcp/tools", 1, false, func() {})
				if err != nil {
					t.Error(err)
				}
				done <- res
			}()
			name := waitForOneRequest(t, ns)
			up.start()
			playController(t, ns, name, end(selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueNoReadyPods, selfhealv1alpha1.ReasonHealed, "tools is serving again"))
			res := <-done
			if res == nil {
				return
			}
			if got := res.err == nil; got != tc.replayed || (up.calls.Load() == 1) != tc.replayed {
				t.Fatalf("replay %s: result %s error %s, upstream calls %d", tc.mode, res.result, res.err, up.calls.Load())
			}
			if !tc.replayed && !strings.Contains(string(res.err), "not replayed") {
				t.Fatalf("error %s does not say the call was not replayed", res.err)
			}
		})
	}
}

// A session that died with the pods a healing restarted is re-created without a new
// incident: it was the healing's doing. The idle client speaks raw HTTP so that nothing
// (such as the SDK's standalone GET stream) re-creates its session before its call.
func TestSessionLostToARecentHealingIsNotANewIncident(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := freshNamespace(t)
	healer := startHealer(t, ctx, ns)
	up := newUpstream(t, false)
	proxy := startProxy(t, Options{
		Upstreams:     []Upstream{{Name: "tools", URL: up.url(), Namespace: ns, Service: "tools"}},
		Healer:        healer,
		RetryInterval: 20 * time.Millisecond,
	})
	url := proxy.URL + "/mcp/tools"
	busy, _ := connectSDK(t, ctx, url, "2025-11-25")

	const version = "2025-11-25"
	init := rawPost(t, url, map[string]string{"Mcp-Protocol-Version": version},
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+version+`","capabilities":{},"clientInfo":{"name":"idle","version":"1"}}}`)
	_, _ = io.Copy(io.Discard, init.Body)
	_ = init.Body.Close()
	sid := init.Header.Get("Mcp-Session-Id")
	if init.StatusCode != http.StatusOK || sid == "" {
		t.Fatalf("initialize: %d, session %q", init.StatusCode, sid)
	}
	hdr := map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": version}
	inited := rawPost(t, url, hdr, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	_ = inited.Body.Close()

	up.stop()
	done := make(chan int, 1)
	go func() { done <- callCount(t, ctx, busy, 3, nil) }()
	name := waitForOneRequest(t, ns)
	up.start() // a new pod: the idle client's upstream session is gone
	playController(t, ns, name, end(selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueCrashLoopBackOff, selfhealv1alpha1.ReasonHealed, "tools is serving again"))
	if sum := <-done; sum != 6 {
		t.Fatalf("replayed count(3) = %d, want 6", sum)
	}

	resp := rawPost(t, url, hdr, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"count","arguments":{"n":2}}}`)
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"result"`) {
		t.Fatalf("idle client's call after the healing: %d %s (%v)", resp.StatusCode, body, err)
	}
	if n := len(requests(t, ns)); n != 1 {
		t.Fatalf("%d HealingRequests, want 1: a session lost to the healing is not a new incident", n)
	}
}

// A held call waits as long as its HealingRequest may take, the request's own
// status.deadline, and is released with the diagnosis once that (plus a grace) has
// passed without an outcome. Catches: a gateway-side hold timer (or the fallback for
// requests without a deadline) releasing a call whose healing still runs, and a wait
// that ignores the deadline and holds the call after it.
func TestHeldCallFollowsTheRequestsDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := freshNamespace(t)
	const fallback, grace = 150 * time.Millisecond, 150 * time.Millisecond
	healer := startHealerWith(t, ctx, ns, healing.Options{UnclaimedTimeout: fallback, DeadlineGrace: grace})
	sub, _, _ := healer.Hub().Subscribe(healing.Filter{Namespace: ns}, 0, false)
	defer sub.Close()

	// A healing a controller is running, with a deadline an hour away (the policy's).
	hr := &selfhealv1alpha1.HealingRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "tools-running", Namespace: ns},
		Spec: selfhealv1alpha1.HealingRequestSpec{Target: selfhealv1alpha1.HealingTarget{Service: "tools"},
			Trigger: selfhealv1alpha1.HealingTrigger{Source: selfhealv1alpha1.TriggerSourceManual, FailureClass: selfhealv1alpha1.FailureConnectionRefused}},
	}
	if err := cp.Client.Create(ctx, hr); err != nil {
		t.Fatal(err)
	}
	playController(t, ns, hr.Name, func(s *selfhealv1alpha1.HealingRequestStatus) {
		now := metav1.NowMicro()
		s.StartTime, s.Deadline = &now, &metav1.MicroTime{Time: now.Add(time.Hour)}
		s.Issue = selfhealv1alpha1.IssueNoReadyPods
		s.Findings = []selfhealv1alpha1.Finding{{Check: selfhealv1alpha1.CheckEndpoints, Result: selfhealv1alpha1.ResultFail, Message: "no ready endpoints for tools"}}
		step(selfhealv1alpha1.PhaseDiagnosing, "endpoints of tools: none ready")(s)
	})
	// The gateway has seen the deadline once it has published the step.
	for seen := false; !seen; {
		select {
		case ev := <-sub.Events():
			seen = ev.Request == hr.Name && ev.Type == healing.EventHealingProgress
		case <-ctx.Done():
			t.Fatal("the healer never published the request's step")
		}
	}

	up := &upstreamServer{t: t, stateless: true, addr: reserveAddr(t)} // down
	t.Cleanup(up.stop)
	proxy := startProxy(t, Options{
		Upstreams: []Upstream{{Name: "tools", URL: up.url(), Namespace: ns, Service: "tools"}},
		Healer:    healer,
	})
	held := make(chan struct{})
	done := make(chan *heldClient, 1)
	go func() {
		res, err := rawCall(ctx, proxy.URL+"/mcp/tools", 7, false, func() { close(held) })
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	select {
	case <-held:
	case <-ctx.Done():
		t.Fatal("the call was not held")
	}
	// Held well past the fallback and the grace: the healing still has an hour.
	select {
	case res := <-done:
		t.Fatalf("the call was released while its healing still had an hour: %q", res.notes)
	case <-time.After(10 * (fallback + grace)):
	}
	if n := len(requests(t, ns)); n != 1 {
		t.Fatalf("%d HealingRequests, want the call to have joined the running one", n)
	}

	// The deadline passes and no controller records an outcome: the call is
	// released with what the healing found.
	playController(t, ns, hr.Name, func(s *selfhealv1alpha1.HealingRequestStatus) {
		s.Deadline = &metav1.MicroTime{Time: time.Now().Add(-time.Second)}
	})
	var res *heldClient
	select {
	case res = <-done:
	case <-ctx.Done():
		t.Fatal("the call was still held after the deadline passed")
	}
	if res == nil {
		return
	}
	var rpcErr struct {
		Code    int            `json:"code"`
		Message string         `json:"message"`
		Data    map[string]any `json:"data"`
	}
	if err := json.Unmarshal(res.err, &rpcErr); err != nil {
		t.Fatalf("the released call got %s / %s, want a JSON-RPC error", res.result, res.err)
	}
	if rpcErr.Code != codeUpstreamUnavailable || rpcErr.Data["reason"] != selfhealv1alpha1.ReasonDeadlineExceeded ||
		rpcErr.Data["issue"] != string(selfhealv1alpha1.IssueNoReadyPods) || rpcErr.Data["healingRequest"] != hr.Name ||
		rpcErr.Data["findings"] == nil || !strings.Contains(rpcErr.Message, "deadline") {
		t.Fatalf("error %d %q %v does not carry the deadline and the diagnosis", rpcErr.Code, rpcErr.Message, rpcErr.Data)
	}
}

// A call sent after a healing ended that fails again opens a new incident: it is not
// answered with the old healing's outcome. Catches: joining an ended healing on
// arrival (the call would get "healed", a useless replay, and no healing at all).
func TestFailureAfterAHealingEndedIsANewIncident(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ns := freshNamespace(t)
	healer := startHealer(t, ctx, ns)
	up := &upstreamServer{t: t, stateless: true, addr: reserveAddr(t)} // down
	t.Cleanup(up.stop)
	proxy := startProxy(t, Options{
		Upstreams: []Upstream{{Name: "tools", URL: up.url(), Namespace: ns, Service: "tools"}},
		Healer:    healer,
	})
	call := func(id int) chan *heldClient {
		done := make(chan *heldClient, 1)
		go func() {
			res, err := rawCall(ctx, proxy.URL+"/mcp/tools", id, false, func() {})
			if err != nil {
				t.Error(err)
			}
			done <- res
		}()
		return done
	}
	done := call(1)
	first := waitForOneRequest(t, ns)
	up.start()
	playController(t, ns, first, end(selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueNoReadyPods, selfhealv1alpha1.ReasonHealed, "tools is serving again"))
	if res := <-done; res == nil || res.err != nil {
		t.Fatalf("first call: %+v", res)
	}
	up.stop() // it breaks again, seconds after the healing
	done = call(2)
	waitFor(t, func() bool { return len(requests(t, ns)) == 2 })
	var second string
	for _, hr := range requests(t, ns) {
		if hr.Name != first {
			second = hr.Name
		}
	}
	up.start()
	playController(t, ns, second, end(selfhealv1alpha1.PhaseHealed, selfhealv1alpha1.IssueNoReadyPods, selfhealv1alpha1.ReasonHealed, "tools is serving again"))
	if res := <-done; res == nil || res.err != nil || !strings.Contains(string(res.result), `"sum":3`) {
		t.Fatalf("second call: %+v", res)
	}
}
