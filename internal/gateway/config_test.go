package gateway_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/selfheal-dev/selfheal/internal/gateway"
)

const validConfig = `
anthropic:
  apiKey: {env: KEY}
upstreams:
- name: tools
  url: http://tools.mcp.svc:8080/mcp
  namespace: mcp
  service: tools
auth: {mode: none}
`

func env(k string) string {
	if k == "KEY" {
		return canaryKey
	}
	return ""
}

func TestConfigDefaults(t *testing.T) {
	c, err := gateway.ParseConfig([]byte(validConfig), env)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Anthropic
	if a.GetBaseURL() != "https://api.anthropic.com" || a.GetMaxRetries() != 2 || a.GetTotalTimeout() != 120*time.Second ||
		a.GetAttemptTimeout() != 60*time.Second || a.GetMaxBodyBytes() != 32<<20 {
		t.Fatalf("anthropic defaults wrong: %s %d %s %s %d", a.GetBaseURL(), a.GetMaxRetries(), a.GetTotalTimeout(), a.GetAttemptTimeout(), a.GetMaxBodyBytes())
	}
	u, ok := c.Upstream("tools")
	if !ok || u.GetCallTimeout() != 30*time.Second || u.GetReplay() != gateway.ReplayUnsent {
		t.Fatalf("upstream defaults wrong: %+v", u)
	}
	if len(c.Deprecations()) != 0 || !c.Auth.AuthDisabled() || c.Healing.GetJoinEndedWithin() != 30*time.Second {
		t.Fatal("healing/auth defaults wrong")
	}
	// The healing scope is the upstreams' Services: no namespace is allowed by default.
	if ns := c.HealingNamespaces(); len(ns) != 1 || ns[0] != "mcp" {
		t.Fatalf("healing namespaces %v, want only the upstream's", ns)
	}
	if c.Anthropic.APIKey.Key().Value() != canaryKey {
		t.Fatal("key not loaded from env")
	}
}

func TestConfigValidationNamesTheField(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	replace := func(old, new string) string { return strings.Replace(validConfig, old, new, 1) }
	addUpstream := func(extra string) string {
		return replace("auth:", "- name: second\n  url: http://b:1\n  namespace: mcp\n  service: b\n"+extra+"auth:")
	}
	shortKey := filepath.Join(t.TempDir(), "session-key")
	if err := os.WriteFile(shortKey, []byte("c2hvcnQ=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, yaml, want string
	}{
		{"short session key", validConfig + "sessions: {keyFile: " + shortKey + "}\n", "sessions.keyFile: " + shortKey + " must hold 32 random bytes"},
		{"missing session key", validConfig + "sessions: {keyFile: /nonexistent/key}\n", "sessions.keyFile:"},
		{"bad upstream url", replace("http://tools.mcp.svc:8080/mcp", "tools:8080"), "upstreams[0].url: must be an absolute http(s) URL"},
		{"second upstream url", strings.Replace(addUpstream(""), "http://b:1", "ftp://b", 1), "upstreams[1].url: must be an absolute http(s) URL"},
		{"duplicate name", strings.Replace(addUpstream(""), "name: second", "name: tools", 1), "upstreams[1].name: duplicate"},
		{"name not a DNS label", replace("name: tools", "name: Tools_1"), "upstreams[0].name: must be a DNS label"},
		{"missing service", replace("  service: tools\n", ""), "upstreams[0].service:"},
		{"bad namespace", replace("namespace: mcp", "namespace: MCP"), "upstreams[0].namespace:"},
		{"bad replay", replace("service: tools", "service: tools\n  replay: sometimes"), "upstreams[0].replay: must be one of unsent, always, never"},
		{"bad call timeout", replace("service: tools", "service: tools\n  callTimeout: -1s"), "upstreams[0].callTimeout: must be positive"},
		{"no api key", replace("apiKey: {env: KEY}", "apiKey: {}"), "anthropic.apiKey: set exactly one of env, file, passThrough"},
		{"two api keys", replace("apiKey: {env: KEY}", "apiKey: {env: KEY, passThrough: true}"), "anthropic.apiKey: set exactly one"},
		{"unset env", replace("{env: KEY}", "{env: NOPE}"), "anthropic.apiKey.env: environment variable NOPE is empty or unset"},
		{"empty key file", replace("{env: KEY}", "{file: "+keyFile+"}"), "anthropic.apiKey.file:"},
		{"missing key file", replace("{env: KEY}", "{file: /nonexistent/key}"), "anthropic.apiKey.file:"},
		{"bad base url", replace("anthropic:", "anthropic:\n  baseURL: api.anthropic.com"), "anthropic.baseURL: must be an absolute http(s) URL"},
		{"attempt not below total", replace("anthropic:", "anthropic:\n  totalTimeout: 30s\n  attemptTimeout: 30s"), "anthropic.attemptTimeout: must be less than anthropic.totalTimeout"},
		{"default attempt above total", replace("anthropic:", "anthropic:\n  totalTimeout: 10s"), "anthropic.attemptTimeout: must be less than"},
		{"negative retries", replace("anthropic:", "anthropic:\n  maxRetries: -1"), "anthropic.maxRetries: must be between 0 and 10"},
		{"zero body limit", replace("anthropic:", "anthropic:\n  maxBodyBytes: 0"), "anthropic.maxBodyBytes: must be positive"},
		{"no auth", replace("auth: {mode: none}", ""), "auth: required: tokensFile: PATH, or mode: none"},
		{"auth both", replace("auth: {mode: none}", "auth: {mode: none, tokensFile: /x}"), "auth: set either tokensFile or mode: none, not both"},
		{"auth bad mode", replace("auth: {mode: none}", "auth: {mode: off}"), "auth.mode: must be \"none\""},
		{"bad origin", validConfig + "allowedOrigins: [\"https://ok.example\", \"chat.example.com\"]\n", "allowedOrigins[1]: must be"},
		{"bad healing namespace", validConfig + "healing: {namespace: Not_OK}\n", "healing.namespace:"},
		{"negative join window", validConfig + "healing: {joinEndedWithin: -1s}\n", "healing.joinEndedWithin: must not be negative"},
		{"unknown field", validConfig + "retries: 3\n", "unknown field \"retries\""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := gateway.ParseConfig([]byte(tc.yaml), env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadConfigFromFile(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte(canaryKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "gateway.yaml")
	y := strings.Replace(validConfig, "{env: KEY}", "{file: "+keyFile+"}", 1)
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := gateway.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Anthropic.APIKey.Key().Value() != canaryKey {
		t.Fatal("key not read from file (or not trimmed)")
	}
	if _, err := gateway.LoadConfig(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
}

// TestSecretNeverPrints covers every way a config or key could be printed.
func TestSecretNeverPrints(t *testing.T) {
	c, err := gateway.ParseConfig([]byte(validConfig), env)
	if err != nil {
		t.Fatal(err)
	}
	key := c.Anthropic.APIKey.Key()
	js, _ := json.Marshal(c)
	jsKey, _ := json.Marshal(key)
	var sb strings.Builder
	slog.New(slog.NewTextHandler(&sb, nil)).Info("x", "key", key, "cfg", c)
	outs := []string{
		fmt.Sprint(key), fmt.Sprintf("%v %+v %#v %s %q %x %d", key, key, key, key, key, key, key),
		fmt.Sprintf("%v %+v %#v", c, c, *c), fmt.Sprintf("%+v %#v", c.Anthropic, c.Anthropic.APIKey),
		string(js), string(jsKey), sb.String(), key.String(),
	}
	for _, o := range outs {
		if strings.Contains(o, canaryKey) || strings.Contains(o, "canary") {
			t.Fatalf("secret leaked: %s", o)
		}
	}
	if !strings.Contains(fmt.Sprint(key), gateway.Redacted) {
		t.Fatal("secret does not print as redacted")
	}
}

// A field that no longer does anything is accepted, so an old config still starts,
// and named in a deprecation saying what replaced it. Catches: a strict parse
// refusing the old field (a crash-looping gateway on upgrade), or a silent ignore.
func TestDeprecatedFieldsAreAcceptedAndNamed(t *testing.T) {
	c, err := gateway.ParseConfig([]byte(validConfig+"healing: {waitTimeout: 150s}\ncaller: {namespace: selfheal-system, labels: {app: selfheal}}\n"), env)
	if err != nil {
		t.Fatalf("an old config with healing.waitTimeout and caller was refused: %v", err)
	}
	d := c.Deprecations()
	if len(d) != 2 || !strings.HasPrefix(d[0], "healing.waitTimeout is ignored") || !strings.Contains(d[0], "status.deadline") ||
		!strings.HasPrefix(d[1], "caller is ignored") || !strings.Contains(d[1], "--caller-namespace") || !strings.Contains(d[1], "--caller-labels") {
		t.Fatalf("deprecations %q, want healing.waitTimeout (and the deadline that replaced it) and caller (and the controller flags)", d)
	}
}

func TestSessionKeyIsLoaded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "session-key")
	key := strings.Repeat("k", 32)
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString([]byte(key))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := gateway.ParseConfig([]byte(validConfig+"sessions: {keyFile: "+path+"}\n"), env)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Sessions.Key()) != key {
		t.Fatal("session key not loaded")
	}
}
