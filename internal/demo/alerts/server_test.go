package alerts

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	. "github.com/onsi/gomega"
)

const (
	sessionRevision   = "2025-11-25"
	statelessRevision = "2026-07-28"
)

type progressLog struct {
	mu       sync.Mutex
	messages []string
}

func (p *progressLog) add(m string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.messages = append(p.messages, m)
}

func (p *progressLog) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.messages...)
}

func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func connect(ctx context.Context, t *testing.T, url, revision string, progress *progressLog) (*mcp.ClientSession, error) {
	t.Helper()
	opts := &mcp.ClientOptions{}
	if progress != nil {
		opts.ProgressNotificationHandler = func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			progress.add(r.Params.Message)
		}
	}
	c := mcp.NewClient(&mcp.Implementation{Name: "alerts-test", Version: "1"}, opts)
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, DisableStandaloneSSE: true, MaxRetries: -1},
		&mcp.ClientSessionOptions{ProtocolVersion: revision})
	if err == nil {
		t.Cleanup(func() { _ = cs.Close() })
	}
	return cs, err
}

func callAlerts(ctx context.Context, cs *mcp.ClientSession, args map[string]any) (*mcp.CallToolResult, error) {
	params := &mcp.CallToolParams{Name: ToolName, Arguments: args}
	params.SetProgressToken("p-1")
	return cs.CallTool(ctx, params)
}

func textOf(res *mcp.CallToolResult) string {
	var out string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			out += tc.Text
		}
	}
	return out
}

func TestToolOverBothRevisions(t *testing.T) {
	for _, tc := range []struct {
		name      string
		stateless bool
		revision  string
		progress  []string
	}{
		{"sessions server, 2025-11-25 client", false, sessionRevision, scanSteps},
		{"sessions server, 2026-07-28 client", false, statelessRevision, scanSteps},
		{"stateless server, 2026-07-28 client", true, statelessRevision, scanSteps},
		{"stateless server, 2025-11-25 client", true, sessionRevision, scanSteps},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			s := startServer(t, Options{Stateless: tc.stateless})
			progress := &progressLog{}
			cs, err := connect(ctx, t, s.URL(), tc.revision, progress)
			g.Expect(err).NotTo(HaveOccurred())

			tools, err := cs.ListTools(ctx, nil)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(tools.Tools).To(HaveLen(1))
			g.Expect(tools.Tools[0].Name).To(Equal(ToolName))

			res, err := callAlerts(ctx, cs, nil)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res.IsError).To(BeFalse())
			out, err := ParseOutput(res.StructuredContent)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(out.Count).To(Equal(5))
			g.Expect(out.Alerts[0].Severity).To(Equal(SeverityCritical))
			g.Expect(out.Alerts[0].Host).To(Equal("web-prod-03"))
			g.Expect(textOf(res)).To(HavePrefix("5 security alert(s):\n- [critical] web-prod-03: "))
			// Notifications are dispatched concurrently with the result.
			g.Eventually(progress.list).Should(Equal(tc.progress))
			g.Expect(s.Calls()).To(Equal(1))

			res, err = callAlerts(ctx, cs, map[string]any{"severity": "high"})
			g.Expect(err).NotTo(HaveOccurred())
			out, err = ParseOutput(res.StructuredContent)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(out.Alerts).To(HaveLen(2))
			g.Expect(out.Alerts).To(HaveEach(HaveField("Severity", SeverityHigh)))

			res, err = callAlerts(ctx, cs, map[string]any{"severity": "urgent"})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res.IsError).To(BeTrue())
			g.Expect(textOf(res)).To(ContainSubstring(`unknown severity "urgent"`))
		})
	}
}

func TestNotServingRefusesConnectionsThenServesFresh(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := startServer(t, Options{})
	old, err := connect(ctx, t, s.URL(), sessionRevision, nil)
	g.Expect(err).NotTo(HaveOccurred())
	_, err = callAlerts(ctx, old, nil)
	g.Expect(err).NotTo(HaveOccurred())

	g.Expect(s.SetServing(false)).To(Succeed())
	g.Expect(s.Serving()).To(BeFalse())
	_, err = net.Dial("tcp", s.Addr())
	g.Expect(errors.Is(err, syscall.ECONNREFUSED)).To(BeTrue(), "dial error: %v", err)
	_, err = connect(ctx, t, s.URL(), sessionRevision, nil)
	g.Expect(err).To(HaveOccurred())
	_, err = callAlerts(ctx, old, nil)
	g.Expect(err).To(HaveOccurred())

	g.Expect(s.SetServing(true)).To(Succeed())
	g.Expect(s.Generation()).To(Equal(2))
	// The old session belonged to the previous process.
	_, err = callAlerts(ctx, old, nil)
	g.Expect(err).To(HaveOccurred())
	fresh, err := connect(ctx, t, s.URL(), sessionRevision, nil)
	g.Expect(err).NotTo(HaveOccurred())
	_, err = callAlerts(ctx, fresh, nil)
	g.Expect(err).NotTo(HaveOccurred())
}

func TestRestartDropsSessions(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s := startServer(t, Options{})
	cs, err := connect(ctx, t, s.URL(), sessionRevision, nil)
	g.Expect(err).NotTo(HaveOccurred())
	_, err = callAlerts(ctx, cs, nil)
	g.Expect(err).NotTo(HaveOccurred())

	g.Expect(s.Restart()).To(Succeed())
	g.Expect(s.Serving()).To(BeTrue())
	g.Expect(s.Generation()).To(Equal(2))
	_, err = callAlerts(ctx, cs, nil)
	g.Expect(err).To(HaveOccurred())
	// A new session works (eventually: under load a first attempt may time out).
	g.Eventually(func() error {
		cs2, err := connect(ctx, t, s.URL(), sessionRevision, nil)
		if err != nil {
			return err
		}
		_, err = callAlerts(ctx, cs2, nil)
		return err
	}).Should(Succeed())
}

func TestHangHoldsUntilClientGivesUpOrHangEnds(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := startServer(t, Options{Stateless: true})
	cs, err := connect(ctx, t, s.URL(), statelessRevision, nil)
	g.Expect(err).NotTo(HaveOccurred())

	s.SetHang(true)
	// The client gives up (as a proxy with a timeout does): the request ends, and
	// the server lets it go.
	callCtx, giveUp := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(callCtx, http.MethodPost, s.URL(), strings.NewReader("{}"))
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	g.Eventually(s.Held).Should(Equal(1))
	g.Consistently(errc).ShouldNot(Receive())
	giveUp()
	g.Eventually(errc).Should(Receive(HaveOccurred()))
	g.Eventually(s.Held).Should(BeZero())

	// Hang ends: the held call is answered.
	go func() { _, err := callAlerts(ctx, cs, nil); errc <- err }()
	g.Eventually(s.Held).Should(Equal(1))
	s.SetHang(false)
	g.Eventually(errc).Should(Receive(BeNil()))
	g.Expect(s.Calls()).To(Equal(1))
}

func TestRestartEndsHangUnlessKept(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := startServer(t, Options{Stateless: true})
	cs, err := connect(ctx, t, s.URL(), statelessRevision, nil)
	g.Expect(err).NotTo(HaveOccurred())
	s.SetHang(true)
	errc := make(chan error, 1)
	go func() { _, err := callAlerts(ctx, cs, nil); errc <- err }()
	g.Eventually(s.Held).Should(Equal(1))
	g.Expect(s.Restart()).To(Succeed())
	// The held call died with its process; the new process answers.
	g.Eventually(errc).Should(Receive(HaveOccurred()))
	g.Expect(s.Hanging()).To(BeFalse())
	// The SDK client closes its connection after a transport failure; reconnect.
	cs, err = connect(ctx, t, s.URL(), statelessRevision, nil)
	g.Expect(err).NotTo(HaveOccurred())
	_, err = callAlerts(ctx, cs, nil)
	g.Expect(err).NotTo(HaveOccurred())

	kept := startServer(t, Options{KeepHangOnRestart: true})
	kept.SetHang(true)
	g.Expect(kept.SetServing(false)).To(Succeed())
	g.Expect(kept.SetServing(true)).To(Succeed())
	g.Expect(kept.Hanging()).To(BeTrue())
}
