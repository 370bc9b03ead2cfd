package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controlplane"
	"github.com/selfheal-dev/selfheal/internal/demo/chat"
	"github.com/selfheal-dev/selfheal/internal/demo/stack"
	"github.com/selfheal-dev/selfheal/internal/sse"
)

// streamEvent is one event of a healing events stream as the client read it: its own
// id (none for stream-control events such as events_missed or shutdown).
type streamEvent struct {
	ID, Type string
	chat.Healing
}

// eventStream is one connection to a gateway's healing events stream for the MCP
// server's Service, read event by event as a UI reads it.
type eventStream struct {
	events <-chan streamEvent // closed when the connection ends
	cancel context.CancelFunc
}

// openEvents subscribes on gateway, resuming after lastID when it is set.
func openEvents(ctx context.Context, gateway, lastID string) *eventStream {
	GinkgoHelper()
	sctx, cancel := context.WithCancel(ctx)
	DeferCleanup(cancel)
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, gateway+"/v1/healing/events?service="+stack.Service, nil)
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Authorization", "Bearer "+env.Token)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // the reader below closes it
	Expect(err).NotTo(HaveOccurred())
	if resp.StatusCode != http.StatusOK {
		_ = resp.Body.Close()
		Fail(fmt.Sprintf("events stream on %s: %s", gateway, resp.Status))
	}
	ch := make(chan streamEvent, 256)
	go func() {
		defer close(ch)
		defer func() { _ = resp.Body.Close() }()
		r := sse.NewReader(resp.Body)
		for {
			f, err := r.NextFrame()
			if err != nil {
				return
			}
			if !f.Dispatched {
				continue
			}
			ev := streamEvent{Type: f.Event.Type}
			if f.HasID {
				ev.ID = f.ID
			}
			_ = json.Unmarshal([]byte(f.Event.Data), &ev.Healing)
			select {
			case ch <- ev:
			case <-sctx.Done():
				return
			}
		}
	}()
	return &eventStream{events: ch, cancel: cancel}
}

// next is the next event; it fails, saying what was read before (read), when the
// stream ends or is silent for a minute.
func (s *eventStream) next(read ...streamEvent) streamEvent {
	GinkgoHelper()
	select {
	case ev, ok := <-s.events:
		Expect(ok).To(BeTrue(), "the events stream ended after %v", ids(read))
		return ev
	case <-time.After(time.Minute):
		Fail(fmt.Sprintf("no healing event within a minute after %v", ids(read)))
	}
	return streamEvent{}
}

// through reads events up to and including the one with id.
func (s *eventStream) through(id string) []streamEvent {
	GinkgoHelper()
	var got []streamEvent
	for {
		ev := s.next(got...)
		got = append(got, ev)
		if ev.ID == id {
			return got
		}
	}
}

// rest reads what is left until the connection ends (the gateway went away).
func (s *eventStream) rest() []streamEvent {
	GinkgoHelper()
	var got []streamEvent
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return got
			}
			got = append(got, ev)
		case <-time.After(time.Minute):
			Fail("the events stream did not end within a minute of its gateway")
		}
	}
}

// close drops the connection, as a client that goes away does.
func (s *eventStream) close() {
	s.cancel()
	for range s.events { //nolint:revive // drain until the reader has stopped
	}
}

// ids are the events' own ids, in order.
func ids(evs []streamEvent) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
		if ev.ID == "" {
			out[i] = "(" + ev.Type + ", no id)"
		}
	}
	return out
}

// stepID is the event id of step n of a healing (0 its start, n its n-th progress
// entry), as every gateway replica derives it from the HealingRequest.
func stepID(hr *selfhealv1alpha1.HealingRequest, n int) string {
	return fmt.Sprintf("%s/%s/%d", hr.Namespace, hr.Name, n)
}

// endID is the event id of a healing's end (healing_complete or healing_failed).
func endID(hr *selfhealv1alpha1.HealingRequest) string {
	return hr.Namespace + "/" + hr.Name + "/end"
}

// expectWholeHealing asserts that got is the healing hr, which ended Healed, event for
// event: its start, one event per progress entry with that entry's text, in order,
// then healing_complete with the Ready message; nothing repeated, nothing missing,
// nothing else (no events_missed).
func expectWholeHealing(got []streamEvent, hr *selfhealv1alpha1.HealingRequest) {
	GinkgoHelper()
	want := []string{stepID(hr, 0)}
	for i := range hr.Status.Progress {
		want = append(want, stepID(hr, i+1))
	}
	want = append(want, endID(hr))
	Expect(ids(got)).To(Equal(want), "the events the client read, against the request's progress %v", hr.Status.Progress)
	Expect(got[0].Type).To(Equal(chat.EventHealingStart))
	for i, p := range hr.Status.Progress {
		ev := got[i+1]
		Expect(ev.Type).To(Equal(chat.EventHealingProgress), ev.ID)
		Expect(ev.Message).To(Equal(p.Message), ev.ID)
		Expect(ev.Phase).To(Equal(string(p.Phase)), ev.ID)
	}
	end := got[len(got)-1]
	Expect(end.Type).To(Equal(chat.EventHealingComplete))
	Expect(end.Message).To(Equal(readyMessage(*hr)))
	for _, ev := range got {
		Expect(ev.Request).To(Equal(hr.Name), ev.ID)
	}
}

// holdMCPServer scales the MCP server to zero with a pod template whose pods stay
// Pending (no kwok stage readies a pod labelled "held"): the healing scales it up and
// then waits in Verifying until releasePods. It returns the Deployment's generation.
func holdMCPServer(ctx context.Context) int64 {
	GinkgoHelper()
	patchDeployment(ctx, func(d *appsv1.Deployment) {
		d.Spec.Replicas = ptr.To[int32](0)
		d.Spec.Template.Labels[controlplane.StateLabel] = "held"
	})
	Expect(env.WaitServing(ctx, false)).To(Succeed())
	dep, err := env.Deployment(ctx)
	Expect(err).NotTo(HaveOccurred())
	return dep.Generation
}

// verifyingRequest waits until the one HealingRequest created since before waits in
// Verifying, its action done, and returns it.
func verifyingRequest(ctx context.Context, before map[string]bool) *selfhealv1alpha1.HealingRequest {
	GinkgoHelper()
	var hr selfhealv1alpha1.HealingRequest
	Eventually(func(g Gomega) {
		news := requestsSince(ctx, before)
		g.Expect(news).To(HaveLen(1), "new HealingRequests: %s", describeRequests(news))
		hr = news[0]
		g.Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseVerifying))
	}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(50 * time.Millisecond).Should(Succeed())
	return &hr
}

// ended waits until hr is in a terminal phase, reading it into hr.
func ended(ctx context.Context, hr *selfhealv1alpha1.HealingRequest) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(hr), hr)).To(Succeed())
		g.Expect(hr.Status.Phase.IsTerminal()).To(BeTrue())
	}).WithContext(ctx).WithTimeout(time.Minute).Should(Succeed())
}

// healed waits until hr ended and returns it; it must have ended Healed.
func healed(ctx context.Context, hr *selfhealv1alpha1.HealingRequest) *selfhealv1alpha1.HealingRequest {
	GinkgoHelper()
	ended(ctx, hr)
	Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed), "progress: %v", hr.Status.Progress)
	return hr
}

// resumeOnTheOtherReplica: a UI reads the start of a healing from one gateway
// replica, drops the connection, and resumes with Last-Event-ID on the other replica,
// mid-healing: it gets exactly the rest, backlog then live, to healing_complete.
func resumeOnTheOtherReplica(ctx SpecContext) {
	before := existingRequests(ctx)
	first := openEvents(ctx, env.GatewayURL, "")
	holdMCPServer(ctx)
	c := newClient()
	answer := make(chan error, 1)
	go func() {
		defer GinkgoRecover()
		text, err := c.Ask(ctx, question)
		if err == nil && !answersAlerts(text) {
			err = fmt.Errorf("the answer lacks the alerts: %q", text)
		}
		answer <- err
	}()

	// On replica 1: the start and two progress steps, then the client goes away.
	var read []streamEvent
	for range 3 {
		read = append(read, first.next())
	}
	first.close()
	// The healing goes on without it: scaled up, it waits for its pod.
	hr := verifyingRequest(ctx, before)
	Expect(ids(read)).To(Equal([]string{stepID(hr, 0), stepID(hr, 1), stepID(hr, 2)}))

	// On replica 2, after the last id read: what was missed, then what comes.
	second := openEvents(ctx, env.SecondGatewayURL, read[len(read)-1].ID)
	read = append(read, second.through(stepID(hr, len(hr.Status.Progress)))...)
	releasePods(ctx, stack.Service)
	read = append(read, second.through(endID(hr))...)
	Eventually(answer).WithTimeout(time.Minute).Should(Receive(BeNil()))

	expectWholeHealing(read, healed(ctx, hr))
	Consistently(second.events).WithTimeout(time.Second).ShouldNot(Receive(), "nothing after the healing's end")
}

// notices collects the MCP progress notifications one client session received.
type notices struct {
	mu    sync.Mutex
	texts []string
}

func (n *notices) add(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.texts = append(n.texts, s)
}

// since returns the notices after the first k.
func (n *notices) since(k int) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.texts[min(k, len(n.texts)):]...)
}

func (n *notices) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.texts)
}

// bearerToken adds the suite's gateway token to every request.
type bearerToken struct{ base http.RoundTripper }

func (b bearerToken) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+env.Token)
	return b.base.RoundTrip(r)
}

// mcpSession opens an MCP session (2025-11-25, the revision with sessions) through
// gateway with the official Go SDK, collecting the progress notices of its calls.
func mcpSession(ctx context.Context, gateway string) (*mcp.ClientSession, *notices) {
	GinkgoHelper()
	got := &notices{}
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e-restart", Version: "1.0.0"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) { got.add(r.Params.Message) },
	})
	transport := &http.Transport{MaxIdleConnsPerHost: 4}
	DeferCleanup(transport.CloseIdleConnections)
	session, err := c.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint: gateway + "/mcp/" + stack.Upstream, HTTPClient: &http.Client{Transport: bearerToken{transport}},
		DisableStandaloneSSE: true,
	}, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(session.Close)
	Expect(session.ID()).NotTo(BeEmpty(), "the gateway gave the session an id")
	return session, got
}

// callAlerts calls get_security_alerts in the background; the channel gets the
// call's text, or its error.
func callAlerts(ctx context.Context, session *mcp.ClientSession) <-chan error {
	done := make(chan error, 1)
	go func() {
		params := &mcp.CallToolParams{Name: "get_security_alerts", Arguments: map[string]any{}}
		params.SetProgressToken("e2e-restart")
		res, err := session.CallTool(ctx, params)
		if err == nil {
			var text []string
			for _, c := range res.Content {
				if t, ok := c.(*mcp.TextContent); ok {
					text = append(text, t.Text)
				}
			}
			if all := strings.Join(text, "\n"); res.IsError || !strings.Contains(all, "sf-1041") {
				err = fmt.Errorf("the call answered without the alerts (isError %t): %s", res.IsError, all)
			}
		}
		done <- err
	}()
	return done
}

// restartMidHealing stops gateway replica 1 with sig while a call it holds waits for
// a healing, and starts it again on its address: the held call fails at the client;
// the client retries it in its same MCP session on the restarted gateway, which joins
// the same healing and answers with the alerts after it; a UI that followed the
// healing resumes there with Last-Event-ID and misses nothing; the healing ends once,
// with one action. With endsWhileDown the healing ends while the replica is down: the
// restarted one still resumes the UI to the end, and the retried call is answered.
func restartMidHealing(sig syscall.Signal, endsWhileDown bool) func(SpecContext) {
	return func(ctx SpecContext) {
		down := false
		DeferCleanup(func(ctx SpecContext) {
			// A failed scenario must not leave the replica down for the next ones.
			if down {
				Expect(env.StartGateway(ctx, 0)).To(Succeed())
			}
		})
		before := existingRequests(ctx)
		session, got := mcpSession(ctx, env.GatewayURL)
		sid := session.ID()
		ui := openEvents(ctx, env.GatewayURL, "")
		generation := holdMCPServer(ctx)
		held := callAlerts(ctx, session)
		hr := verifyingRequest(ctx, before)
		read := ui.through(stepID(hr, len(hr.Status.Progress)))

		down = true
		Expect(env.StopGateway(0, sig)).To(Succeed())
		var err error
		Eventually(held).WithTimeout(time.Minute).Should(Receive(&err))
		Expect(err).To(HaveOccurred(), "the held call cannot be answered by a gateway that is gone")
		tail := ui.rest()
		if sig == syscall.SIGTERM {
			// A graceful stop ends the stream with a control event, which moves no id.
			Expect(ids(tail)).To(Equal([]string{"(shutdown, no id)"}))
		} else {
			Expect(tail).To(BeEmpty(), "a crash just breaks the stream")
		}

		if endsWhileDown {
			releasePods(ctx, stack.Service)
			hr = healed(ctx, hr)
		}

		Expect(env.StartGateway(ctx, 0)).To(Succeed())
		down = false
		resumed := openEvents(ctx, env.GatewayURL, read[len(read)-1].ID)
		seen := got.count()
		retried := callAlerts(ctx, session)
		if !endsWhileDown {
			joined := fmt.Sprintf("(HealingRequest %s)", hr.Name)
			Eventually(func() []string { return got.since(seen) }).WithTimeout(time.Minute).
				Should(ContainElement(ContainSubstring(joined)), "the retried call joins the healing in progress")
			releasePods(ctx, stack.Service)
		}
		Eventually(retried).WithTimeout(time.Minute).Should(Receive(BeNil()))
		Expect(session.ID()).To(Equal(sid), "the client kept its session across the restart")

		read = append(read, resumed.through(endID(hr))...)
		hr = healed(ctx, hr)
		expectWholeHealing(read, hr)
		Expect(executedActions(*hr)).To(Equal([]selfhealv1alpha1.ActionType{selfhealv1alpha1.ActionScaleFromZero}))
		dep, err := env.Deployment(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(dep.Generation).To(Equal(generation+1), "scaled up once by the healing, never twice")
		Eventually(func() int { return endedEvents(ctx, hr) }).WithTimeout(30 * time.Second).Should(Equal(1))
		Consistently(func() int { return endedEvents(ctx, hr) }).WithTimeout(2*time.Second).Should(Equal(1), "the healing ends exactly once")
	}
}
