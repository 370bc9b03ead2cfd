package gateway

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
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
	DefaultHealingNS      = "default"
	DefaultHealingWait    = 150 * time.Second
	AuthModeNone          = "none"
	AuthModeTokens        = "tokens"
	upstreamURLSchemeHelp = "must be an absolute http(s) URL"
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
	// Caller describes the gateway's own pods, so diagnosis can tell whether a
	// NetworkPolicy admits the gateway. Optional.
	Caller  *CallerIdentity `json:"caller,omitempty"`
	Healing HealingConfig   `json:"healing,omitempty"`
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
}

// CallerIdentity is how the gateway's pods look to a NetworkPolicy.
type CallerIdentity struct {
	Namespace string            `json:"namespace,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// HealingConfig configures HealingRequest creation and waiting.
type HealingConfig struct {
	// Namespace for reports (POST /v1/healing-requests) that name none.
	Namespace string `json:"namespace,omitempty"`
	// WaitTimeout is how long a held call waits for a healing's outcome.
	WaitTimeout *metav1.Duration `json:"waitTimeout,omitempty"`
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

// GetNamespace returns the namespace for reports that name none, defaulted.
func (h HealingConfig) GetNamespace() string {
	if h.Namespace == "" {
		return DefaultHealingNS
	}
	return h.Namespace
}

// GetWaitTimeout returns how long a held call waits for healing, defaulted.
func (h HealingConfig) GetWaitTimeout() time.Duration {
	return durationOr(h.WaitTimeout, DefaultHealingWait)
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

	if c.Caller != nil {
		if c.Caller.Namespace != "" {
			if msgs := validation.IsDNS1123Label(c.Caller.Namespace); len(msgs) > 0 {
				errs.add("caller.namespace", "must be a Kubernetes namespace name (%s)", strings.Join(msgs, "; "))
			}
		}
		for k, v := range c.Caller.Labels {
			if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
				errs.add(fmt.Sprintf("caller.labels[%s]", k), "invalid label key (%s)", strings.Join(msgs, "; "))
			}
			if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
				errs.add(fmt.Sprintf("caller.labels[%s]", k), "invalid label value (%s)", strings.Join(msgs, "; "))
			}
		}
	}

	if c.Healing.Namespace != "" {
		if msgs := validation.IsDNS1123Label(c.Healing.Namespace); len(msgs) > 0 {
			errs.add("healing.namespace", "must be a Kubernetes namespace name (%s)", strings.Join(msgs, "; "))
		}
	}
	if c.Healing.WaitTimeout != nil && c.Healing.WaitTimeout.Duration <= 0 {
		errs.add("healing.waitTimeout", "must be positive")
	}
	return errors.Join(errs...)
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
