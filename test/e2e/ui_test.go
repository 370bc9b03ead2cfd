package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/controlplane"
	"github.com/selfheal-dev/selfheal/internal/demo/stack"
	"github.com/selfheal-dev/selfheal/internal/gateway/ui"
)

// chromiumPath finds Debian's chromium (CHROMIUM overrides). Its absence fails the
// suite: a browser check that skips is no check (`make chromium` installs it).
func chromiumPath() string {
	GinkgoHelper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	Fail("no Chromium found for the /ui browser test: install it with `make chromium` (Debian's chromium package) or set CHROMIUM")
	return ""
}

// artifactsDir is where the browser test leaves its screenshots: $E2E_ARTIFACTS, or
// test/e2e/artifacts (ignored by git).
func artifactsDir() string {
	GinkgoHelper()
	dir := os.Getenv("E2E_ARTIFACTS")
	if dir == "" {
		root, err := controlplane.RepoRoot()
		Expect(err).NotTo(HaveOccurred())
		dir = filepath.Join(root, "test", "e2e", "artifacts")
	}
	Expect(os.MkdirAll(dir, 0o755)).To(Succeed())
	return dir
}

// browser starts headless Chromium; the context ends it.
func browser(ctx context.Context) context.Context {
	GinkgoHelper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath()),
		chromedp.Flag("headless", true),
		chromedp.WindowSize(1280, 1000),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run as root with its sandbox
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	DeferCleanup(cancelAlloc)
	bctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(func(f string, a ...any) { fmt.Fprintf(GinkgoWriter, "chromedp: "+f+"\n", a...) }))
	DeferCleanup(cancel)
	// The first run starts the browser, which lives as long as bctx: no timeout here.
	Expect(chromedp.Do(bctx)).To(Succeed(), "starting Chromium")
	return bctx
}

// do runs browser steps with a bound of their own.
func do(bctx context.Context, steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(bctx, time.Minute)
	defer cancel()
	return chromedp.Do(ctx, steps...)
}

// get runs one browser action that returns a value, with a bound of its own.
func get[T any](bctx context.Context, a chromedp.Action[T]) T {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(bctx, time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	Expect(err).NotTo(HaveOccurred())
	return v
}

// pageState is what the page shows, read from its DOM.
type pageState struct {
	URL           string   `json:"url"`
	Cookie        string   `json:"cookie"`
	Status        string   `json:"status"`
	Target        string   `json:"target"`
	StepIDs       []string `json:"stepIds"`
	Steps         []string `json:"steps"`
	Outcome       string   `json:"outcome"`
	OutcomeID     string   `json:"outcomeId"`
	Healings      string   `json:"healings"`
	IssueHealings string   `json:"issueHealings"`
	IssueText     string   `json:"issueText"`
	Row           string   `json:"row"`
	FitsWidth     bool     `json:"fitsWidth"`
}

// readPage reads the live card of request (ns/name) and the charts' NoPods bar.
func readPage(bctx context.Context, request string) pageState {
	GinkgoHelper()
	js := fmt.Sprintf(`(() => {
  const q = (s, root) => (root || document).querySelector(s);
  const card = q('article.live-healing[data-request=%[1]q]');
  const bar = q('#chart-success g[data-issue="NoPods"]');
  const row = q('#history tr[data-request=%[1]q]');
  return {
    url: location.href, cookie: document.cookie, status: (q('#status') || {}).textContent || "",
    target: card ? q('.target', card).textContent : "",
    stepIds: card ? [...card.querySelectorAll('.steps li')].map(li => li.dataset.id) : [],
    steps: card ? [...card.querySelectorAll('.steps li .step')].map(s => s.textContent) : [],
    outcome: card ? q('.outcome', card).textContent : "",
    outcomeId: card ? q('.outcome', card).dataset.id || "" : "",
    healings: (q('#fig-healings') || {}).textContent || "",
    issueHealings: bar ? bar.dataset.healings : "0",
    issueText: bar ? q('.value', bar).textContent : "",
    row: row ? row.textContent : "",
    fitsWidth: document.documentElement.scrollWidth <= window.innerWidth,
  };
})()`, request)
	return get(bctx, chromedp.Evaluate[pageState](js))
}

// status of a GET without a session.
func anonymousGet(ctx context.Context, path string) int {
	GinkgoHelper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, env.GatewayURL+path, nil)
	Expect(err).NotTo(HaveOccurred())
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	Expect(err).NotTo(HaveOccurred())
	_ = resp.Body.Close()
	return resp.StatusCode
}

var _ = Describe("selfheal /ui", Ordered, func() {
	// Whatever ran before (the order of the suite's containers is random; a failed
	// scenario may leave a crashlooping pod, which only a rollout replaces), and for
	// what runs after.
	BeforeAll(func(ctx SpecContext) {
		_, err := env.KubectlRun(ctx, "rollout", "restart", "-n", stack.Namespace, "deployment/"+stack.Service)
		Expect(err).NotTo(HaveOccurred())
		restoreHealthy(ctx)
	})
	AfterAll(restoreHealthy)

	It("shows a healing live in a real browser: its steps in order, the outcome, the charts", func(ctx SpecContext) {
		By("refusing the page's data without a session")
		for _, p := range []string{"/ui/api/history", "/ui/api/analytics", "/ui/api/events"} {
			Expect(anonymousGet(ctx, p)).To(Equal(http.StatusUnauthorized), p)
		}
		Expect(anonymousGet(ctx, "/ui/")).To(Equal(http.StatusSeeOther))

		bctx := browser(ctx)
		By("logging in through the form")
		Expect(do(bctx, chromedp.Navigate(env.UIURL()), chromedp.WaitVisible(chromedp.CSS("#token")))).To(Succeed())
		Expect(get(bctx, chromedp.Location())).To(HaveSuffix(ui.LoginPath))
		Expect(do(bctx,
			chromedp.SendKeys(chromedp.CSS("#token"), "not-a-token"),
			chromedp.Submit(chromedp.CSS("#token")),
			chromedp.WaitVisible(chromedp.CSS("#login-error")),
		)).To(Succeed())
		Expect(get(bctx, chromedp.Text(chromedp.CSS("#login-error")))).To(ContainSubstring("not accepted"))
		Expect(do(bctx,
			chromedp.SendKeys(chromedp.CSS("#token"), env.Token),
			chromedp.Submit(chromedp.CSS("#token")),
			chromedp.WaitVisible(chromedp.CSS("#live-section")),
		)).To(Succeed())

		By("holding the session in an HttpOnly, SameSite=Strict cookie, never in the URL")
		cookies, err := chromedp.Call(bctx, network.GetCookies, network.GetCookiesParams{})
		Expect(err).NotTo(HaveOccurred())
		Expect(cookies.Cookies).To(ContainElement(And(
			HaveField("Name", ui.CookieName), HaveField("HTTPOnly", true), HaveField("SameSite", network.CookieSameSiteStrict),
			HaveField("Value", Not(ContainSubstring(env.Token))))))
		var first pageState
		Eventually(func(g Gomega) {
			first = readPage(bctx, "")
			g.Expect(first.Status).To(Equal("live"), "the event stream is connected")
			g.Expect(first.Healings).NotTo(Equal("–"), "the analytics have loaded")
		}).WithContext(ctx).WithTimeout(60 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
		Expect(first.URL).To(Equal(env.UIURL()))
		Expect(first.URL).NotTo(ContainSubstring(env.Token))
		Expect(first.Cookie).NotTo(ContainSubstring(ui.CookieName), "document.cookie must not read the session")
		healingsBefore, err := strconv.Atoi(first.IssueHealings)
		Expect(err).NotTo(HaveOccurred())

		By("breaking the MCP server and asking the question that needs it")
		c := newClient()
		Expect(c.Connect(ctx)).To(Succeed())
		before := existingRequests(ctx)
		Expect(env.Scale(ctx, 0)).To(Succeed())
		Expect(env.WaitServing(ctx, false)).To(Succeed())
		answer, err := c.Ask(ctx, question)
		Expect(err).NotTo(HaveOccurred())
		expectAlertsIn(answer)
		hr := oneRequest(ctx, before)
		Expect(hr.Status.Phase).To(Equal(selfhealv1alpha1.PhaseHealed))
		key := hr.Namespace + "/" + hr.Name

		By("seeing the healing on the page: the target, each step in order, the outcome")
		want := []string{fmt.Sprintf("Healing %s/%s after %s", hr.Namespace, hr.Spec.Target.Service, hr.Spec.Trigger.FailureClass)}
		for _, p := range hr.Status.Progress {
			want = append(want, p.Message)
		}
		var st pageState
		Eventually(func(g Gomega) {
			st = readPage(bctx, key)
			g.Expect(st.Outcome).To(HavePrefix("Healed"))
			g.Expect(st.Outcome).To(ContainSubstring(string(selfhealv1alpha1.IssueNoPods)))
		}).WithContext(ctx).WithTimeout(60 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
		Expect(st.Target).To(Equal(stack.Namespace + "/" + stack.Service))
		// The steps are the start and the request's progress log, in its order; the end
		// is the outcome line, which carries the last event's id.
		Expect(st.Steps).To(Equal(want))
		stepIDs := make([]string, 0, len(want))
		for i := range want {
			stepIDs = append(stepIDs, stepID(&hr, i))
		}
		Expect(st.StepIDs).To(Equal(stepIDs))
		Expect(st.OutcomeID).To(Equal(endID(&hr)))

		By("seeing the charts and the history update")
		Eventually(func(g Gomega) {
			st = readPage(bctx, key)
			g.Expect(st.IssueHealings).To(Equal(strconv.Itoa(healingsBefore + 1)))
			g.Expect(st.Row).To(ContainSubstring("Healed"))
		}).WithContext(ctx).WithTimeout(60 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
		Expect(st.IssueText).To(MatchRegexp(fmt.Sprintf(`^\d+%% \(\d+/%d\)$`, healingsBefore+1)))
		Expect(st.Row).To(ContainSubstring(stack.Namespace + "/" + stack.Service))

		By("saving screenshots, on a laptop and on a phone screen")
		dir := artifactsDir()
		laptop := filepath.Join(dir, "ui.png")
		Expect(os.WriteFile(laptop, get(bctx, chromedp.FullScreenshot(100)), 0o644)).To(Succeed())
		Expect(do(bctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)))).To(Succeed())
		phone := filepath.Join(dir, "ui-phone.png")
		Expect(os.WriteFile(phone, get(bctx, chromedp.FullScreenshot(100)), 0o644)).To(Succeed())
		AddReportEntry("screenshots", laptop+" "+phone)
		fmt.Fprintf(os.Stderr, "/ui screenshots: %s %s\n", laptop, phone)
		Expect(readPage(bctx, key).FitsWidth).To(BeTrue(), "the page fits a phone's width without scrolling sideways")

		By("logging out: the data endpoints refuse the browser again")
		Expect(do(bctx, chromedp.Click(chromedp.CSS("header form button")), chromedp.WaitVisible(chromedp.CSS("#token")))).To(Succeed())
		Expect(get(bctx, chromedp.Evaluate[int](`fetch("/ui/api/history").then(r => r.status)`, chromedp.EvalAwaitPromise))).
			To(Equal(http.StatusUnauthorized))
	})
})
