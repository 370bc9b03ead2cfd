package gateway_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	selfhealv1alpha1 "github.com/selfheal-dev/selfheal/api/v1alpha1"
	"github.com/selfheal-dev/selfheal/internal/analytics"
	"github.com/selfheal-dev/selfheal/internal/gateway"
	"github.com/selfheal-dev/selfheal/internal/gateway/healing"
	"github.com/selfheal-dev/selfheal/internal/gateway/limits"
	"github.com/selfheal-dev/selfheal/internal/gateway/ui"
	"github.com/selfheal-dev/selfheal/internal/scheme"
)

// uiGateway is a gateway with the /ui page mounted as the manager mounts it, reading
// from a fake cluster holding one healing in team-a and one in team-b.
type uiGateway struct {
	*gw
	auth   *gateway.Authenticator
	tokens string // the tokens file
	clock  *clocktesting.FakeClock
	up     *fakeAnthropic
}

func startUIGateway(t *testing.T) *uiGateway {
	t.Helper()
	u := &uiGateway{up: newFakeAnthropic(t), clock: clocktesting.NewFakeClock(time.Now())}
	configure := func(cfg *gateway.Config) []gateway.Option {
		u.tokens = cfg.Auth.TokensFile
		auth, err := gateway.NewAuthenticator(cfg.Auth.TokensFile, false, gateway.WithClients(cfg.ClientFor), gateway.WithReloadSettle(20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		u.auth = auth
		hub := healing.NewHub(healing.HubOptions{})
		streams := healing.StreamOptions{Streams: limits.NewStreams("sse", 8, 4)}
		events := healing.NewEventsHandler(hub, streams)
		page, err := ui.New(ui.Options{Tokens: auth, Events: events, Reader: fakeCluster(t), Clock: u.clock,
			Namespaces: cfg.HealingNamespaces(), Held: func(ns, name string) int { return map[bool]int{true: 2}[name == "hr-a"] }})
		if err != nil {
			t.Fatal(err)
		}
		return []gateway.Option{gateway.WithAuthenticator(auth),
			gateway.Mount("GET /v1/healing/events", events),
			gateway.MountPublic("/ui", page), gateway.MountPublic("/ui/", page)}
	}
	u.gw = startGateway(t, u.up.srv.URL, gwSetup{tokens: scopedTokens, yaml: scopedConfig, configure: configure})
	return u
}

func fakeCluster(t *testing.T) client.Reader {
	t.Helper()
	at := metav1.NewTime(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC))
	hr := func(ns, name, svc string, phase selfhealv1alpha1.HealingPhase) *selfhealv1alpha1.HealingRequest {
		h := &selfhealv1alpha1.HealingRequest{}
		h.Namespace, h.Name, h.CreationTimestamp = ns, name, at
		h.Spec.Target.Service = svc
		h.Status.Phase = phase
		h.Status.Issue = selfhealv1alpha1.IssueType("NoPods")
		h.Status.Findings = []selfhealv1alpha1.Finding{{Check: "DeploymentConfig", Result: selfhealv1alpha1.ResultFail, Message: svc + " has 0 replicas"}}
		h.Status.Progress = []selfhealv1alpha1.ProgressEntry{{Phase: selfhealv1alpha1.PhaseDiagnosing, Message: "Investigating " + svc, Time: at}}
		return h
	}
	policy := func(ns, svc string, healings int64) *selfhealv1alpha1.HealingPolicy {
		p := &selfhealv1alpha1.HealingPolicy{}
		p.Namespace, p.Name = ns, "policy"
		p.Status.Outcomes = &selfhealv1alpha1.Outcomes{Healings: healings, Healed: healings,
			ByIssue:     []selfhealv1alpha1.IssueActionOutcomes{{Issue: "NoPods", Action: "ScaleUp", Healings: healings, Healed: healings, TimeToHealSeconds: healings}},
			TopServices: []selfhealv1alpha1.ServiceOutcomes{{Service: svc, Healings: healings, Healed: healings}, {Service: "other", Healings: 1}}}
		return p
	}
	return fake.NewClientBuilder().WithScheme(scheme.New()).WithStatusSubresource().
		WithObjects(hr("team-a", "hr-a", "tools", selfhealv1alpha1.PhaseHealed), hr("team-b", "hr-b", "billing", selfhealv1alpha1.PhaseFailed),
			hr("team-a", "hr-other", "other", selfhealv1alpha1.PhaseHealed), // in the scoped token's namespace, not its Service
			policy("team-a", "tools", 1), policy("team-b", "billing", 3)).Build()
}

// noRedirect sees the gateway's answers as they are, redirects included.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// answer is a response read whole.
type answer struct {
	StatusCode int
	Header     http.Header
	set        []*http.Cookie
}

func (a answer) Cookies() []*http.Cookie { return a.set }

func (u *uiGateway) do(t *testing.T, method, path string, body url.Values, cookie *http.Cookie, hdr ...string) (answer, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(body.Encode())
	}
	req, _ := http.NewRequest(method, u.url+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return answer{StatusCode: res.StatusCode, Header: res.Header, set: res.Cookies()}, string(b)
}

// login posts the form as a browser on the page's origin does; it returns the cookie.
func (u *uiGateway) login(t *testing.T, token string) *http.Cookie {
	t.Helper()
	res, body := u.do(t, "POST", ui.LoginPath, url.Values{"token": {token}}, nil, "Origin", u.url)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != ui.Path {
		t.Fatalf("login: %d %s %s", res.StatusCode, res.Header.Get("Location"), body)
	}
	for _, c := range res.Cookies() {
		if c.Name == ui.CookieName {
			return c
		}
	}
	t.Fatalf("login set no %s cookie: %v", ui.CookieName, res.Header["Set-Cookie"])
	return nil
}

// Every /ui answer carries the strict CSP and the security headers, and the pages
// load no inline code and nothing from elsewhere. Catches: a missing or loosened
// policy ('unsafe-inline', a CDN), sniffable types, a Referer leaking the page.
func TestUISecurityHeaders(t *testing.T) {
	u := startUIGateway(t)
	c := u.login(t, "tok-full")
	for _, p := range []string{ui.LoginPath, ui.Path, "/ui/assets/app.js", "/ui/assets/app.css", "/ui/api/history", "/ui/api/analytics", "/ui/api/nothing"} {
		cookie := c
		if p == ui.LoginPath {
			cookie = nil // logged in, the login page sends to the page
		}
		res, body := u.do(t, "GET", p, nil, cookie)
		h := res.Header
		if h.Get("Content-Security-Policy") != ui.ContentSecurityPolicy || h.Get("X-Content-Type-Options") != "nosniff" ||
			h.Get("Referrer-Policy") != "no-referrer" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: security headers %v", p, h)
		}
		if strings.HasPrefix(h.Get("Content-Type"), "text/html") {
			if regexp.MustCompile(`<script(\s[^>]*)?>[^<]+</script>|<script>|\sstyle=|\son[a-z]+=|https?://`).MatchString(body) {
				t.Errorf("%s: inline code, inline style or an absolute URL in the page:\n%s", p, body)
			}
			if !strings.Contains(body, `name="viewport"`) {
				t.Errorf("%s: no meta viewport", p)
			}
		}
	}
	csp := ui.ContentSecurityPolicy
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) || strings.Contains(csp, "unsafe") {
			t.Fatalf("CSP %q: want %q and nothing unsafe", csp, want)
		}
	}
}

// A login exchanges the token for a sealed HttpOnly, SameSite=Strict cookie scoped to
// /ui that does not hold the token, Secure behind TLS; the page and its data then
// answer. Catches: a readable or cross-site cookie, the token as the cookie value.
func TestUILoginSetsSessionCookie(t *testing.T) {
	u := startUIGateway(t)
	c := u.login(t, "tok-full")
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui" || c.Secure || c.MaxAge <= 0 {
		t.Fatalf("cookie attributes: %+v", c)
	}
	if strings.Contains(c.Value, "tok-full") || strings.Contains(c.Value, "full") {
		t.Fatalf("cookie carries the token or its name in the clear: %q", c.Value)
	}
	res, body := u.do(t, "GET", ui.Path, nil, c)
	if res.StatusCode != 200 || !strings.Contains(body, `src="/ui/assets/app.js"`) || res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("page after login: %d %v %s", res.StatusCode, res.Header, body)
	}
	res, body = u.do(t, "GET", "/ui/api/history", nil, c)
	if res.StatusCode != 200 || !strings.Contains(body, `"client":"full"`) {
		t.Fatalf("history after login: %d %s", res.StatusCode, body)
	}
	// Behind a TLS-terminating proxy the cookie is Secure.
	res, _ = u.do(t, "POST", ui.LoginPath, url.Values{"token": {"tok-full"}}, nil, "Origin", u.url, "X-Forwarded-Proto", "https")
	if cs := res.Cookies(); len(cs) != 1 || !cs[0].Secure {
		t.Fatalf("login over TLS: cookies %v", res.Header["Set-Cookie"])
	}
	// A cookie altered by one byte, or past its expiry, logs nobody in.
	tampered := *c
	tampered.Value = c.Value[:len(c.Value)-2] + map[bool]string{true: "AA", false: "BB"}[!strings.HasSuffix(c.Value, "AA")]
	if res, _ := u.do(t, "GET", "/ui/api/history", nil, &tampered); res.StatusCode != 401 {
		t.Fatalf("tampered cookie: %d", res.StatusCode)
	}
	u.clock.Step(ui.DefaultSessionTTL + time.Second)
	if res, _ := u.do(t, "GET", "/ui/api/history", nil, c); res.StatusCode != 401 {
		t.Fatalf("expired cookie: %d", res.StatusCode)
	}
}

// A wrong token gets the login page with a clear error and no cookie; a login posted
// from another origin is refused. Catches: any token admitted; login CSRF.
func TestUIWrongTokenRefused(t *testing.T) {
	u := startUIGateway(t)
	for _, tok := range []string{"tok-wrong", ""} {
		res, body := u.do(t, "POST", ui.LoginPath, url.Values{"token": {tok}}, nil, "Origin", u.url)
		if res.StatusCode != 401 || len(res.Cookies()) != 0 || !strings.Contains(body, "That token is not accepted") {
			t.Fatalf("token %q: %d %v %s", tok, res.StatusCode, res.Cookies(), body)
		}
	}
	res, _ := u.do(t, "POST", ui.LoginPath, url.Values{"token": {"tok-full"}}, nil, "Origin", "https://evil.example")
	if res.StatusCode != 403 || len(res.Cookies()) != 0 {
		t.Fatalf("cross-origin login: %d %v", res.StatusCode, res.Cookies())
	}
	for _, hdr := range [][]string{{"Sec-Fetch-Site", "cross-site"}, {"Origin", "null"}, {"Origin", "null", "Sec-Fetch-Site", "same-site"}} {
		res, _ = u.do(t, "POST", ui.LoginPath, url.Values{"token": {"tok-full"}}, nil, hdr...)
		if res.StatusCode != 403 || len(res.Cookies()) != 0 {
			t.Fatalf("cross-site login %v: %d", hdr, res.StatusCode)
		}
	}
	// What a browser posts from the page under Referrer-Policy: no-referrer.
	res, _ = u.do(t, "POST", ui.LoginPath, url.Values{"token": {"tok-full"}}, nil, "Origin", "null", "Sec-Fetch-Site", "same-origin")
	if res.StatusCode != http.StatusSeeOther || len(res.Cookies()) != 1 {
		t.Fatalf("same-origin login with Origin null: %d", res.StatusCode)
	}
}

// Without a session the page sends to the login and every data endpoint answers
// 401; logout clears the cookie. Catches: data served to anyone; a logout that
// leaves the cookie in the browser.
func TestUIWithoutLoginAndLogout(t *testing.T) {
	u := startUIGateway(t)
	for _, p := range []string{"/ui", ui.Path} {
		res, _ := u.do(t, "GET", p, nil, nil)
		if res.StatusCode != http.StatusSeeOther {
			t.Fatalf("%s without login: %d", p, res.StatusCode)
		}
	}
	if res, _ := u.do(t, "GET", ui.Path, nil, nil); res.Header.Get("Location") != ui.LoginPath {
		t.Fatalf("/ui/ without login goes to %q", res.Header.Get("Location"))
	}
	for _, p := range []string{"/ui/api/events", "/ui/api/history", "/ui/api/analytics"} {
		// A gateway token in a header is not a session either.
		res, body := u.do(t, "GET", p, nil, nil, "Authorization", "Bearer tok-full")
		if res.StatusCode != 401 || !strings.Contains(body, "not logged in") {
			t.Fatalf("%s without login: %d %s", p, res.StatusCode, body)
		}
	}
	c := u.login(t, "tok-full")
	res, _ := u.do(t, "POST", ui.LogoutPath, url.Values{}, c, "Origin", u.url)
	cs := res.Cookies()
	if res.StatusCode != http.StatusSeeOther || len(cs) != 1 || cs[0].Name != ui.CookieName || cs[0].MaxAge >= 0 || cs[0].Value != "" {
		t.Fatalf("logout: %d %v", res.StatusCode, res.Header["Set-Cookie"])
	}
}

// The cookie authenticates /ui only: on the Claude pass-through and the token routes
// it is nobody. Catches: a browser session spending the organisation's Claude key.
func TestUICookieNotAcceptedOnV1(t *testing.T) {
	u := startUIGateway(t)
	c := u.login(t, "tok-full")
	res, body := u.do(t, "POST", "/v1/messages", nil, c)
	if res.StatusCode != 401 || len(u.up.requests()) != 0 {
		t.Fatalf("/v1/messages with the cookie: %d %s, upstream saw %d", res.StatusCode, body, len(u.up.requests()))
	}
	if res, _ := u.do(t, "GET", "/v1/healing/events", nil, c); res.StatusCode != 401 {
		t.Fatalf("/v1/healing/events with the cookie: %d", res.StatusCode)
	}
}

// A token removed from the tokens file, or replaced under the same name, ends the
// sessions it opened. Catches: a cookie that outlives its token.
func TestUIRemovedTokenEndsSession(t *testing.T) {
	u := startUIGateway(t)
	full, scoped := u.login(t, "tok-full"), u.login(t, "tok-scoped")
	<-u.auth.Watching()
	before := u.auth.Reloads()
	if err := os.WriteFile(u.tokens, []byte("full:tok-full-rotated\nscoped:tok-scoped\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return u.auth.Reloads() != before })
	if res, _ := u.do(t, "GET", "/ui/api/history", nil, full); res.StatusCode != 401 {
		t.Fatalf("session of a rotated token: %d", res.StatusCode)
	}
	if res, _ := u.do(t, "GET", ui.Path, nil, full); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("page of a rotated token: %d", res.StatusCode)
	}
	if res, _ := u.do(t, "GET", "/ui/api/history", nil, scoped); res.StatusCode != 200 {
		t.Fatalf("session of a kept token: %d", res.StatusCode)
	}
	// The name "scoped" removed, its secret kept under another name (with that name's
	// access): the session of the removed name ends too.
	before = u.auth.Reloads()
	if err := os.WriteFile(u.tokens, []byte("full:tok-full-rotated\nrenamed:tok-scoped\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return u.auth.Reloads() != before })
	if res, _ := u.do(t, "GET", "/ui/api/history", nil, scoped); res.StatusCode != 401 {
		t.Fatalf("session of a removed token name: %d", res.StatusCode)
	}
}

// The data endpoints show a scoped token only its upstreams' healings and
// analytics. Catches: the page widening a token's scope.
func TestUIScopes(t *testing.T) {
	u := startUIGateway(t)
	read := func(c *http.Cookie, p string, v any) {
		t.Helper()
		res, body := u.do(t, "GET", p, nil, c)
		if res.StatusCode != 200 || json.Unmarshal([]byte(body), v) != nil {
			t.Fatalf("%s: %d %s", p, res.StatusCode, body)
		}
	}
	var hf, hs ui.History
	read(u.login(t, "tok-full"), "/ui/api/history", &hf)
	read(u.login(t, "tok-scoped"), "/ui/api/history", &hs)
	if hf.Total != 3 || len(hs.Requests) != 1 || hs.Requests[0].Name != "hr-a" || hs.Total != 1 {
		t.Fatalf("history: full %+v, scoped %+v", hf, hs)
	}
	r := hs.Requests[0]
	if r.Held != 2 || len(r.Findings) != 1 || r.Findings[0].Message != "tools has 0 replicas" || len(r.Progress) != 1 || r.Phase != "Healed" {
		t.Fatalf("request view: %+v", r)
	}
	var af, as analytics.Summary
	read(u.login(t, "tok-full"), "/ui/api/analytics", &af)
	read(u.login(t, "tok-scoped"), "/ui/api/analytics", &as)
	if af.Healings != 4 || as.Healings != 1 || len(as.TopServices) != 1 || as.TopServices[0].Service != "tools" {
		t.Fatalf("analytics: full %+v, scoped %+v", af, as)
	}
}

// The assets come from the binary with their types, revalidated by ETag; the
// templates are not assets. Catches: a wrong Content-Type (refused under nosniff).
func TestUIAssets(t *testing.T) {
	u := startUIGateway(t)
	for p, ct := range map[string]string{"/ui/assets/app.js": "text/javascript; charset=utf-8", "/ui/assets/app.css": "text/css; charset=utf-8"} {
		res, body := u.do(t, "GET", p, nil, nil)
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != ct || len(body) < 500 || res.Header.Get("ETag") == "" {
			t.Fatalf("%s: %d %q %d bytes", p, res.StatusCode, res.Header.Get("Content-Type"), len(body))
		}
		if res2, _ := u.do(t, "GET", p, nil, nil, "If-None-Match", res.Header.Get("ETag")); res2.StatusCode != http.StatusNotModified {
			t.Fatalf("%s revalidated: %d", p, res2.StatusCode)
		}
	}
	res, body := u.do(t, "GET", ui.LoginPath, nil, nil)
	if res.Header.Get("Content-Type") != "text/html; charset=utf-8" || !strings.Contains(body, `action="/ui/login"`) {
		t.Fatalf("login page: %q %s", res.Header.Get("Content-Type"), body)
	}
	for _, p := range []string{"/ui/assets/login.html", "/ui/assets/index.html", "/ui/assets/nope.js", "/ui/assets/..%2fui.go"} {
		if res, _ := u.do(t, "GET", p, nil, nil); res.StatusCode != 404 {
			t.Fatalf("%s: %d", p, res.StatusCode)
		}
	}
}
