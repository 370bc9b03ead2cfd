package gateway

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/selfheal-dev/selfheal/internal/gateway/access"
	"github.com/selfheal-dev/selfheal/internal/gateway/healing"
	"github.com/selfheal-dev/selfheal/internal/gateway/mcp"
)

// Defaults, all in one place. Getters on the config types apply them; the
// loader never rewrites what the user wrote.
const (
	DefaultAnthropicBaseURL = "https://api.anthropic.com"
	DefaultMaxRetries       = 2
	DefaultTotalTimeout     = 120 * time.Second
	DefaultAttemptTimeout   = 60 * time.Second
	// DefaultMaxBodyBytes matches the Messages API's own request size limit.
	DefaultMaxBodyBytes   = 32 << 20
	DefaultCallTimeout    = 30 * time.Second
	DefaultReplay         = ReplayUnsent
	AuthModeNone          = "none"
	AuthModeTokens        = "tokens"
	upstreamURLSchemeHelp = "must be an absolute http(s) URL"

	// Limits (limits.*). The memory a gateway can be made to hold is bounded by
	// roughly maxBufferedBytes + maxConnections x ~65 KiB (an MCP client's open GET
	// stream with its upstream connection, the costliest connection measured;
	// an idle event stream is ~8 KiB) + maxSessions x 8 KiB, which the defaults keep
	// inside the manager's 256 MiB (BenchmarkMCPSessionsAcrossReplicas,
	// BenchmarkIdleSSESubscribers).
	DefaultReadHeaderTimeout  = 10 * time.Second
	DefaultBodyReadTimeout    = 30 * time.Second
	DefaultIdleTimeout        = 120 * time.Second
	DefaultMaxConnections     = 2048
	DefaultMaxBufferedBytes   = 64 << 20
	DefaultMaxSubscribers     = 1024
	DefaultMaxClientSubs      = 64
	DefaultMaxSessions        = 4096
	DefaultJoinEndedWithin    = healing.DefaultJoinEndedWithin
	DefaultSessionIdleTimeout = 30 * time.Minute
)

// ReplayMode says when a failed MCP call may be sent again after healing.
type ReplayMode string

const (
	// ReplayUnsent replays only when the upstream provably never got the request.
	ReplayUnsent ReplayMode = "unsent"
	ReplayAlways ReplayMode = "always"
	ReplayNever  ReplayMode = "never"
)

// Config is the gateway's file configuration (--gateway-config).
type Config struct {
	Anthropic AnthropicConfig `json:"anthropic"`
	// Upstreams are the MCP servers served at /mcp/{name}.
	Upstreams []UpstreamConfig `json:"upstreams,omitempty"`
	Auth      AuthConfig       `json:"auth"`
	// AllowedOrigins are the browser origins (scheme://host[:port]) accepted in
	// an MCP request's Origin header; "*" accepts any. Requests without Origin
	// are always accepted (they do not come from a browser).
	AllowedOrigins []string `json:"allowedOrigins,omitempty"`
	// Deprecated: Caller is ignored (see Deprecations). Who calls the healed
	// Services, for the NetworkPolicy check, is the controller's to know: its
	// --caller-namespace and --caller-labels flags.
	Caller  any           `json:"caller,omitempty"`
	Healing HealingConfig `json:"healing,omitempty"`
	// Limits bound what clients can make the gateway hold. All optional.
	Limits LimitsConfig `json:"limits,omitempty"`
	// Sessions configures MCP sessions. Optional.
	Sessions SessionsConfig `json:"sessions,omitempty"`
}

// SessionsConfig configures MCP sessions.
type SessionsConfig struct {
	// KeyFile holds the key that seals MCP session state into the Mcp-Session-Id the
	// client holds (AES-256-GCM: 32 random bytes, base64-encoded, e.g. from
	// `head -c32 /dev/urandom | base64`), mounted from a Secret into every replica.
	// With it any replica, or a restarted one, serves a session; without it a session
	// lives in the replica that saw its initialize (routing must then be sticky).
	KeyFile string `json:"keyFile,omitempty"`

	key []byte
}

// Key returns the loaded session key (nil without keyFile).
func (s SessionsConfig) Key() []byte { return s.key }

func (s *SessionsConfig) load() error {
	if s.KeyFile == "" {
		return nil
	}
	b, err := os.ReadFile(s.KeyFile)
	if err != nil {
		return fmt.Errorf("sessions.keyFile: %w", err) // the error never holds file content
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != sessionKeySize {
		return fmt.Errorf("sessions.keyFile: %s must hold %d random bytes, base64-encoded (head -c%d /dev/urandom | base64)",
			s.KeyFile, sessionKeySize, sessionKeySize)
	}
	s.key = key
	return nil
}

const sessionKeySize = mcp.SessionKeySize

// LimitsConfig bounds time and memory per client and in total. A limit that is
// reached refuses at once (503 with Retry-After), it never queues.
type LimitsConfig struct {
	// ReadHeaderTimeout bounds the arrival of a request's headers.
	ReadHeaderTimeout *metav1.Duration `json:"readHeaderTimeout,omitempty"`
	// BodyReadTimeout bounds the arrival of a whole request body.
	BodyReadTimeout *metav1.Duration `json:"bodyReadTimeout,omitempty"`
	// IdleTimeout closes kept-alive connections with no request for this long.
	IdleTimeout *metav1.Duration `json:"idleTimeout,omitempty"`
	// MaxConnections caps open client connections, event streams included.
	MaxConnections *int `json:"maxConnections,omitempty"`
	// MaxBufferedBytes is the budget, across all requests, of request body bytes
	// held in memory (bodies are kept whole so calls can be retried or replayed).
	MaxBufferedBytes *int64 `json:"maxBufferedBytes,omitempty"`
	// MaxSubscribers caps open event streams (GET /v1/healing/events and report
	// streams); MaxSubscribersPerClient caps them per client token.
	MaxSubscribers          *int `json:"maxSubscribers,omitempty"`
	MaxSubscribersPerClient *int `json:"maxSubscribersPerClient,omitempty"`
	// MaxSessions caps the MCP sessions the proxy remembers (least recently used
	// go first); SessionIdleTimeout forgets a session unused for this long.
	MaxSessions        *int             `json:"maxSessions,omitempty"`
	SessionIdleTimeout *metav1.Duration `json:"sessionIdleTimeout,omitempty"`
}

// GetReadHeaderTimeout returns limits.readHeaderTimeout, defaulted.
func (l LimitsConfig) GetReadHeaderTimeout() time.Duration {
	return durationOr(l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
}

// GetBodyReadTimeout returns limits.bodyReadTimeout, defaulted.
func (l LimitsConfig) GetBodyReadTimeout() time.Duration {
	return durationOr(l.BodyReadTimeout, DefaultBodyReadTimeout)
}

// GetIdleTimeout returns limits.idleTimeout, defaulted.
func (l LimitsConfig) GetIdleTimeout() time.Duration {
	return durationOr(l.IdleTimeout, DefaultIdleTimeout)
}

// GetMaxConnections returns limits.maxConnections, defaulted.
func (l LimitsConfig) GetMaxConnections() int { return intOr(l.MaxConnections, DefaultMaxConnections) }

// GetMaxBufferedBytes returns limits.maxBufferedBytes, defaulted.
func (l LimitsConfig) GetMaxBufferedBytes() int64 {
	if l.MaxBufferedBytes == nil {
		return DefaultMaxBufferedBytes
	}
	return *l.MaxBufferedBytes
}

// GetMaxSubscribers returns limits.maxSubscribers, defaulted.
func (l LimitsConfig) GetMaxSubscribers() int { return intOr(l.MaxSubscribers, DefaultMaxSubscribers) }

// GetMaxSubscribersPerClient returns limits.maxSubscribersPerClient, defaulted.
func (l LimitsConfig) GetMaxSubscribersPerClient() int {
	return intOr(l.MaxSubscribersPerClient, DefaultMaxClientSubs)
}

// GetMaxSessions returns limits.maxSessions, defaulted.
func (l LimitsConfig) GetMaxSessions() int { return intOr(l.MaxSessions, DefaultMaxSessions) }

// GetSessionIdleTimeout returns limits.sessionIdleTimeout, defaulted.
func (l LimitsConfig) GetSessionIdleTimeout() time.Duration {
	return durationOr(l.SessionIdleTimeout, DefaultSessionIdleTimeout)
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

// AnthropicConfig configures the /v1/* pass-through.
type AnthropicConfig struct {
	BaseURL        string           `json:"baseURL,omitempty"`
	APIKey         APIKeySource     `json:"apiKey"`
	MaxRetries     *int             `json:"maxRetries,omitempty"`
	TotalTimeout   *metav1.Duration `json:"totalTimeout,omitempty"`
	AttemptTimeout *metav1.Duration `json:"attemptTimeout,omitempty"`
	MaxBodyBytes   *int64           `json:"maxBodyBytes,omitempty"`
}

// APIKeySource says where the Anthropic key comes from; exactly one is set.
type APIKeySource struct {
	// Env names an environment variable holding the key.
	Env string `json:"env,omitempty"`
	// File is a path to a file holding the key (e.g. a mounted Secret).
	File string `json:"file,omitempty"`
	// PassThrough forwards the client's own key (x-api-key or Authorization)
	// to Anthropic; the client then proves itself to the gateway with the
	// x-selfheal-token header.
	PassThrough bool `json:"passThrough,omitempty"`

	// key is the loaded value when Env or File is set.
	key Secret
}

// Key returns the loaded key (zero when PassThrough).
func (a APIKeySource) Key() Secret { return a.key }

// UpstreamConfig is one MCP server.
type UpstreamConfig struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	// Namespace and Service are the Kubernetes Service the upstream runs as;
	// they are the target of a HealingRequest when calls to it fail.
	Namespace   string           `json:"namespace"`
	Service     string           `json:"service"`
	CallTimeout *metav1.Duration `json:"callTimeout,omitempty"`
	Replay      ReplayMode       `json:"replay,omitempty"`
}

// AuthConfig: either TokensFile, or Mode "none" (explicit, for local use).
type AuthConfig struct {
	// TokensFile holds one client token per line, optionally "name:token";
	// blank lines and lines starting with # are ignored.
	TokensFile string `json:"tokensFile,omitempty"`
	Mode       string `json:"mode,omitempty"`
	// AllowUnauthenticated lets mode none serve on a non-loopback address.
	// Without it the gateway refuses to start there: anyone who can reach the
	// port would spend the organisation's Claude key.
	AllowUnauthenticated bool `json:"allowUnauthenticated,omitempty"`
	// Clients limits named tokens (the name before ":" in the tokens file).
	// Tokens not listed are unrestricted.
	Clients []ClientScope `json:"clients,omitempty"`
}

// ClientScope limits one client token. An empty list leaves that axis open.
type ClientScope struct {
	Name string `json:"name"`
	// Upstreams the client may call at /mcp/{name}; it then reports, and sees
	// the healings of, only these upstreams' Services.
	Upstreams []string `json:"upstreams,omitempty"`
	// Namespaces whose healings the client may report and see, and whose
	// upstreams it may call.
	Namespaces []string `json:"namespaces,omitempty"`
}

// HealingConfig configures HealingRequest creation and waiting.
type HealingConfig struct {
	// Namespace for reports (POST /v1/healing-requests) that name none. It does
	// not widen what may be healed: see Targets.
	Namespace string `json:"namespace,omitempty"`
	// Targets are Services, besides the upstreams' own, that reports may name.
	Targets []HealingTargetConfig `json:"targets,omitempty"`
	// JoinEndedWithin: failures of a Service seen before its healing ended, and
	// reported less than this long after the end, join that healing (the caller gets
	// its outcome) instead of opening a new incident. Default 30s; 0s turns it off.
	JoinEndedWithin *metav1.Duration `json:"joinEndedWithin,omitempty"`
	// Deprecated: WaitTimeout is ignored (see Deprecations). A held call waits until
	// its HealingRequest's status.deadline (the policy's deadline), plus a short grace
	// for the controller to record the outcome.
	WaitTimeout any `json:"waitTimeout,omitempty"`
}

// HealingTargetConfig is a Service reports may name.
type HealingTargetConfig struct {
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
}

// GetBaseURL returns the Anthropic base URL, defaulted.
func (a AnthropicConfig) GetBaseURL() string {
	if a.BaseURL == "" {
		return DefaultAnthropicBaseURL
	}
	return a.BaseURL
}

// GetMaxRetries returns the retry count after the first attempt, defaulted.
func (a AnthropicConfig) GetMaxRetries() int {
	if a.MaxRetries == nil {
		return DefaultMaxRetries
	}
	return *a.MaxRetries
}

// GetTotalTimeout returns the budget for all attempts and waits, defaulted.
func (a AnthropicConfig) GetTotalTimeout() time.Duration {
	return durationOr(a.TotalTimeout, DefaultTotalTimeout)
}

// GetAttemptTimeout returns the per-attempt timeout, defaulted.
func (a AnthropicConfig) GetAttemptTimeout() time.Duration {
	return durationOr(a.AttemptTimeout, DefaultAttemptTimeout)
}

// GetMaxBodyBytes returns the request body limit, defaulted.
func (a AnthropicConfig) GetMaxBodyBytes() int64 {
	if a.MaxBodyBytes == nil {
		return DefaultMaxBodyBytes
	}
	return *a.MaxBodyBytes
}

// GetCallTimeout returns the per-call timeout, defaulted.
func (u UpstreamConfig) GetCallTimeout() time.Duration {
	return durationOr(u.CallTimeout, DefaultCallTimeout)
}

// GetReplay returns the replay mode, defaulted.
func (u UpstreamConfig) GetReplay() ReplayMode {
	if u.Replay == "" {
		return DefaultReplay
	}
	return u.Replay
}

// AuthDisabled reports whether the config explicitly turned auth off.
func (a AuthConfig) AuthDisabled() bool { return a.Mode == AuthModeNone }

// HealingTargets are the Services healings may be requested for: the
// configured upstreams' and healing.targets, in order, without repeats.
func (c *Config) HealingTargets() []access.Target {
	var out []access.Target
	add := func(t access.Target) {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	for _, u := range c.Upstreams {
		add(access.Target{Namespace: u.Namespace, Service: u.Service})
	}
	for _, t := range c.Healing.Targets {
		add(access.Target{Namespace: t.Namespace, Service: t.Service})
	}
	return out
}

// HealingNamespaces are the namespaces of HealingTargets, without repeats: the
// only ones the gateway creates HealingRequests in and watches.
func (c *Config) HealingNamespaces() []string {
	var out []string
	for _, t := range c.HealingTargets() {
		if !slices.Contains(out, t.Namespace) {
			out = append(out, t.Namespace)
		}
	}
	return out
}

// ClientFor returns the access of the client token called name: its scope
// from auth.clients, or unrestricted.
func (c *Config) ClientFor(name string) *access.Client {
	for _, cs := range c.Auth.Clients {
		if cs.Name != name {
			continue
		}
		var ups map[string]access.Target
		if len(cs.Upstreams) > 0 {
			ups = map[string]access.Target{}
			for _, n := range cs.Upstreams {
				if u, ok := c.Upstream(n); ok {
					ups[n] = access.Target{Namespace: u.Namespace, Service: u.Service}
				}
			}
		}
		var nss []string
		if len(cs.Namespaces) > 0 {
			nss = cs.Namespaces
		}
		return access.NewClient(name, ups, nss)
	}
	return access.NewClient(name, nil, nil)
}

// GetJoinEndedWithin returns healing.joinEndedWithin, defaulted (0 means off).
func (h HealingConfig) GetJoinEndedWithin() time.Duration {
	return durationOr(h.JoinEndedWithin, DefaultJoinEndedWithin)
}

// Upstream returns the upstream called name.
func (c *Config) Upstream(name string) (UpstreamConfig, bool) {
	for _, u := range c.Upstreams {
		if u.Name == name {
			return u, true
		}
	}
	return UpstreamConfig{}, false
}

func durationOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.Duration
}

// LoadConfig reads, validates and resolves the config at path (the API key is
// read from its env var or file). Errors name the offending field.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading gateway config: %w", err)
	}
	return ParseConfig(data, os.Getenv)
}

// ParseConfig is LoadConfig on bytes; getenv resolves apiKey.env.
func ParseConfig(data []byte, getenv func(string) string) (*Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("parsing gateway config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("invalid gateway config: %w", err)
	}
	if err := c.Anthropic.APIKey.load(getenv); err != nil {
		return nil, fmt.Errorf("invalid gateway config: %w", err)
	}
	if err := c.Sessions.load(); err != nil {
		return nil, fmt.Errorf("invalid gateway config: %w", err)
	}
	return &c, nil
}

func (a *APIKeySource) load(getenv func(string) string) error {
	switch {
	case a.Env != "":
		v := strings.TrimSpace(getenv(a.Env))
		if v == "" {
			return fmt.Errorf("anthropic.apiKey.env: environment variable %s is empty or unset", a.Env)
		}
		a.key = NewSecret(v)
	case a.File != "":
		b, err := os.ReadFile(a.File)
		if err != nil {
			// The path is config, not secret; the error never holds file content.
			return fmt.Errorf("anthropic.apiKey.file: %w", err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return fmt.Errorf("anthropic.apiKey.file: %s is empty", a.File)
		}
		a.key = NewSecret(v)
	}
	return nil
}

// Deprecations are the fields of the config that are accepted but ignored, each
// with what replaced it, for the gateway to log at start. They are accepted rather
// than refused so that a gateway rolled out with an older config starts (refusing
// would crash-loop it on a field that only ever bounded a wait or informed nobody).
func (c *Config) Deprecations() []string {
	var out []string
	if c.Healing.WaitTimeout != nil {
		out = append(out, "healing.waitTimeout is ignored: a held call now waits until its HealingRequest's status.deadline "+
			"(the HealingPolicy's deadline, 10s..10m) plus a few seconds for the controller to record the outcome; remove the field")
	}
	if c.Caller != nil {
		out = append(out, "caller is ignored: the network policy check runs in the controller, which learns who calls the "+
			"healed Services from its --caller-namespace and --caller-labels flags; set them on the controller and remove the field")
	}
	return out
}

// fieldErrs collects "field: message" errors.
type fieldErrs []error

func (e *fieldErrs) add(field, format string, args ...any) {
	*e = append(*e, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// Validate checks the config without touching the environment or files.
// All problems are reported, each prefixed with its field path.
func (c *Config) Validate() error {
	var errs fieldErrs
	c.Anthropic.validate(&errs)

	seen := map[string]int{}
	for i, u := range c.Upstreams {
		f := fmt.Sprintf("upstreams[%d]", i)
		if msgs := validation.IsDNS1123Label(u.Name); len(msgs) > 0 {
			errs.add(f+".name", "must be a DNS label (%s)", strings.Join(msgs, "; "))
		} else if j, dup := seen[u.Name]; dup {
			errs.add(f+".name", "duplicate of upstreams[%d].name %q", j, u.Name)
		} else {
			seen[u.Name] = i
		}
		if !isHTTPURL(u.URL) {
			errs.add(f+".url", upstreamURLSchemeHelp)
		}
		if msgs := validation.IsDNS1123Label(u.Namespace); len(msgs) > 0 {
			errs.add(f+".namespace", "must be a Kubernetes namespace name (%s)", strings.Join(msgs, "; "))
		}
		if msgs := validation.IsDNS1035Label(u.Service); len(msgs) > 0 {
			errs.add(f+".service", "must be a Kubernetes Service name (%s)", strings.Join(msgs, "; "))
		}
		if u.CallTimeout != nil && u.CallTimeout.Duration <= 0 {
			errs.add(f+".callTimeout", "must be positive")
		}
		switch u.Replay {
		case "", ReplayUnsent, ReplayAlways, ReplayNever:
		default:
			errs.add(f+".replay", "must be one of unsent, always, never")
		}
	}

	switch {
	case c.Auth.TokensFile != "" && c.Auth.Mode != "" && c.Auth.Mode != AuthModeTokens:
		errs.add("auth", "set either tokensFile or mode: none, not both")
	case c.Auth.Mode == AuthModeNone:
	case c.Auth.Mode != "" && c.Auth.Mode != AuthModeTokens:
		errs.add("auth.mode", "must be %q (or omitted with tokensFile set)", AuthModeNone)
	case c.Auth.TokensFile == "":
		errs.add("auth", "required: tokensFile: PATH, or mode: none to run without client authentication")
	}
	if c.Auth.AllowUnauthenticated && !c.Auth.AuthDisabled() {
		errs.add("auth.allowUnauthenticated", "only applies to mode: none")
	}
	clientSeen := map[string]int{}
	for i, cs := range c.Auth.Clients {
		f := fmt.Sprintf("auth.clients[%d]", i)
		if c.Auth.AuthDisabled() {
			errs.add(f, "client scopes need tokensFile (mode: none has no clients)")
			break
		}
		if cs.Name == "" || strings.ContainsAny(cs.Name, ": \t") {
			errs.add(f+".name", "must be the name of a token in the tokens file (the part before \":\")")
		} else if j, dup := clientSeen[cs.Name]; dup {
			errs.add(f+".name", "duplicate of auth.clients[%d].name %q", j, cs.Name)
		} else {
			clientSeen[cs.Name] = i
		}
		for j, u := range cs.Upstreams {
			if _, ok := seen[u]; !ok {
				errs.add(fmt.Sprintf("%s.upstreams[%d]", f, j), "%q is not a configured upstream", u)
			}
		}
		for j, ns := range cs.Namespaces {
			if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
				errs.add(fmt.Sprintf("%s.namespaces[%d]", f, j), "must be a Kubernetes namespace name (%s)", strings.Join(msgs, "; "))
			}
		}
	}

	for i, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			errs.add(fmt.Sprintf("allowedOrigins[%d]", i), "must be \"*\" or an origin like https://chat.example.com")
		}
	}

	if c.Healing.Namespace != "" {
		if msgs := validation.IsDNS1123Label(c.Healing.Namespace); len(msgs) > 0 {
			errs.add("healing.namespace", "must be a Kubernetes namespace name (%s)", strings.Join(msgs, "; "))
		}
	}
	if c.Healing.JoinEndedWithin != nil && c.Healing.JoinEndedWithin.Duration < 0 {
		errs.add("healing.joinEndedWithin", "must not be negative (0s turns it off)")
	}
	for i, t := range c.Healing.Targets {
		f := fmt.Sprintf("healing.targets[%d]", i)
		if msgs := validation.IsDNS1123Label(t.Namespace); len(msgs) > 0 {
			errs.add(f+".namespace", "must be a Kubernetes namespace name (%s)", strings.Join(msgs, "; "))
		}
		if msgs := validation.IsDNS1035Label(t.Service); len(msgs) > 0 {
			errs.add(f+".service", "must be a Kubernetes Service name (%s)", strings.Join(msgs, "; "))
		}
	}
	c.Limits.validate(&errs)
	if c.Anthropic.GetMaxBodyBytes() > c.Limits.GetMaxBufferedBytes() {
		errs.add("anthropic.maxBodyBytes", "must not exceed limits.maxBufferedBytes (%d)", c.Limits.GetMaxBufferedBytes())
	}
	return errors.Join(errs...)
}

func (l *LimitsConfig) validate(errs *fieldErrs) {
	for _, d := range []struct {
		field string
		v     *metav1.Duration
	}{
		{"readHeaderTimeout", l.ReadHeaderTimeout}, {"bodyReadTimeout", l.BodyReadTimeout},
		{"idleTimeout", l.IdleTimeout}, {"sessionIdleTimeout", l.SessionIdleTimeout},
	} {
		if d.v != nil && d.v.Duration <= 0 {
			errs.add("limits."+d.field, "must be positive")
		}
	}
	for _, n := range []struct {
		field string
		v     *int
	}{
		{"maxConnections", l.MaxConnections}, {"maxSubscribers", l.MaxSubscribers},
		{"maxSubscribersPerClient", l.MaxSubscribersPerClient}, {"maxSessions", l.MaxSessions},
	} {
		if n.v != nil && *n.v <= 0 {
			errs.add("limits."+n.field, "must be positive")
		}
	}
	if l.MaxBufferedBytes != nil && *l.MaxBufferedBytes <= 0 {
		errs.add("limits.maxBufferedBytes", "must be positive")
	}
}

func (a *AnthropicConfig) validate(errs *fieldErrs) {
	if a.BaseURL != "" && !isHTTPURL(a.BaseURL) {
		errs.add("anthropic.baseURL", upstreamURLSchemeHelp)
	}
	n := 0
	if a.APIKey.Env != "" {
		n++
	}
	if a.APIKey.File != "" {
		n++
	}
	if a.APIKey.PassThrough {
		n++
	}
	if n != 1 {
		errs.add("anthropic.apiKey", "set exactly one of env, file, passThrough: true")
	}
	if a.MaxRetries != nil && (*a.MaxRetries < 0 || *a.MaxRetries > 10) {
		errs.add("anthropic.maxRetries", "must be between 0 and 10")
	}
	if a.TotalTimeout != nil && a.TotalTimeout.Duration <= 0 {
		errs.add("anthropic.totalTimeout", "must be positive")
	}
	if a.AttemptTimeout != nil && a.AttemptTimeout.Duration <= 0 {
		errs.add("anthropic.attemptTimeout", "must be positive")
	} else if a.GetAttemptTimeout() >= a.GetTotalTimeout() {
		errs.add("anthropic.attemptTimeout", "must be less than anthropic.totalTimeout (%s)", a.GetTotalTimeout())
	}
	if a.MaxBodyBytes != nil && *a.MaxBodyBytes <= 0 {
		errs.add("anthropic.maxBodyBytes", "must be positive")
	}
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
