package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/fsnotify/fsnotify"
	ctrl "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/selfheal-dev/selfheal/internal/gateway/anthropic"
)

// TokenHeader carries the client's gateway token when the Authorization and
// x-api-key headers hold the client's own Anthropic key (apiKey.passThrough).
// It is accepted in every mode and never forwarded upstream.
const TokenHeader = anthropic.TokenHeader

type tokenEntry struct {
	name string
	hash [sha256.Size]byte
}

// TokenSet is an immutable set of client tokens. Only hashes are kept: the
// gateway never holds the tokens themselves after loading.
type TokenSet struct {
	entries []tokenEntry
}

// ParseTokens reads one token per line, optionally "name:token". Blank lines
// and lines starting with # are skipped. Unnamed tokens are named token-N
// (their line number), so logs can say who called without saying the token.
func ParseTokens(data []byte) (*TokenSet, error) {
	ts := &TokenSet{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		name, tok := fmt.Sprintf("token-%d", line), s
		if n, t, ok := strings.Cut(s, ":"); ok {
			name, tok = strings.TrimSpace(n), strings.TrimSpace(t)
		}
		if tok == "" || name == "" {
			return nil, fmt.Errorf("line %d: empty token or name", line)
		}
		ts.entries = append(ts.entries, tokenEntry{name: name, hash: sha256.Sum256([]byte(tok))})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return ts, nil
}

// Match returns the name of the token equal to tok. Every entry is compared,
// in constant time over equal-length hashes, with no early exit, so timing
// says nothing about which token or how many bytes matched.
func (ts *TokenSet) Match(tok string) (string, bool) {
	if ts == nil || tok == "" {
		return "", false
	}
	h := sha256.Sum256([]byte(tok))
	found := 0
	name := ""
	for i := range ts.entries {
		eq := subtle.ConstantTimeCompare(h[:], ts.entries[i].hash[:])
		if eq == 1 && found == 0 {
			name = ts.entries[i].name
		}
		found |= eq
	}
	return name, found == 1
}

// Len is the number of tokens.
func (ts *TokenSet) Len() int { return len(ts.entries) }

// Authenticator checks client tokens. The zero value refuses everyone; use
// NewAuthenticator or NoAuth.
type Authenticator struct {
	disabled    bool
	passThrough bool
	path        string
	tokens      atomic.Pointer[TokenSet]
}

// NoAuth admits every request (auth: {mode: none}).
func NoAuth() *Authenticator { return &Authenticator{disabled: true} }

// NewAuthenticator loads the tokens file. passThrough says the Anthropic key
// comes from the client, so on /v1/* the gateway token must come from
// TokenHeader.
func NewAuthenticator(tokensFile string, passThrough bool) (*Authenticator, error) {
	a := &Authenticator{path: tokensFile, passThrough: passThrough}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// NewAuthenticatorFromConfig builds the authenticator the config asks for.
func NewAuthenticatorFromConfig(c *Config) (*Authenticator, error) {
	if c.Auth.AuthDisabled() {
		return NoAuth(), nil
	}
	return NewAuthenticator(c.Auth.TokensFile, c.Anthropic.APIKey.PassThrough)
}

// Reload re-reads the tokens file; on error the previous tokens stay.
func (a *Authenticator) Reload() error {
	data, err := os.ReadFile(a.path)
	if err != nil {
		return fmt.Errorf("auth.tokensFile: %w", err)
	}
	ts, err := ParseTokens(data)
	if err != nil {
		return fmt.Errorf("auth.tokensFile %s: %w", a.path, err)
	}
	a.tokens.Store(ts)
	return nil
}

// Watch reloads the tokens file whenever it changes, until ctx is done. It
// watches the directory, so the atomic symlink swap of a mounted Secret is
// seen as well as an in-place write.
func (a *Authenticator) Watch(ctx context.Context) error {
	if a.disabled {
		<-ctx.Done()
		return nil
	}
	log := ctrl.FromContext(ctx).WithValues("tokensFile", a.path)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching tokens file: %w", err)
	}
	defer func() { _ = w.Close() }()
	if err := w.Add(filepath.Dir(a.path)); err != nil {
		return fmt.Errorf("watching tokens file: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename|fsnotify.Remove) == 0 || !tokensFileEvent(ev.Name, a.path) {
				continue
			}
			if err := a.Reload(); err != nil {
				log.Error(err, "Keeping previous client tokens")
				continue
			}
			log.Info("Reloaded client tokens", "count", a.tokens.Load().Len())
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Error(err, "Watching tokens file")
		}
	}
}

// Middleware admits requests carrying a known token and answers others 401
// in the Anthropic error shape. anthropicRoute says the route is the Claude
// pass-through, where in pass-through mode Authorization/x-api-key belong to
// Anthropic. On other routes the header that carried the gateway token is
// removed before the handler runs, so it never reaches an upstream.
func (a *Authenticator) Middleware(anthropicRoute bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.disabled {
			next.ServeHTTP(w, r)
			return
		}
		tok, from := a.clientToken(r, anthropicRoute)
		name, ok := a.tokens.Load().Match(tok)
		if !ok {
			msg := "missing gateway token: send it as Authorization: Bearer, x-api-key or " + TokenHeader
			if anthropicRoute && a.passThrough {
				msg = "missing gateway token: send it in the " + TokenHeader + " header (Authorization and x-api-key carry your Anthropic key)"
			}
			if tok != "" {
				msg = "invalid gateway token"
			}
			ctrl.FromContext(r.Context()).V(1).Info("Refused unauthenticated request", "path", r.URL.Path, "tokenHeader", from)
			anthropic.WriteError(w, http.StatusUnauthorized, anthropic.ErrAuthentication, msg)
			return
		}
		if !anthropicRoute && from != "" && from != TokenHeader {
			r.Header.Del(from)
		}
		r.Header.Del(TokenHeader)
		ctx := ctrl.IntoContext(r.Context(), ctrl.FromContext(r.Context()).WithValues("client", name))
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// clientToken finds the gateway token and the header it came from.
func (a *Authenticator) clientToken(r *http.Request, anthropicRoute bool) (string, string) {
	if t := r.Header.Get(TokenHeader); t != "" {
		return t, TokenHeader
	}
	if anthropicRoute && a.passThrough {
		return "", ""
	}
	if t, ok := bearer(r.Header.Get("Authorization")); ok {
		return t, "Authorization"
	}
	if t := r.Header.Get("X-Api-Key"); t != "" {
		return t, "X-Api-Key"
	}
	return "", ""
}

func bearer(h string) (string, bool) {
	const p = "bearer "
	if len(h) > len(p) && strings.EqualFold(h[:len(p)], p) {
		return strings.TrimSpace(h[len(p):]), true
	}
	return "", false
}

// tokensFileEvent reports whether a change in the watched directory concerns the
// tokens file: the file itself, or the "..data" symlink swap by which the kubelet
// updates a mounted Secret. Other files in the directory (a log file, say) are
// ignored, or every write to them would reload the tokens.
func tokensFileEvent(name, tokensFile string) bool {
	return filepath.Clean(name) == filepath.Clean(tokensFile) || strings.HasPrefix(filepath.Base(name), "..")
}
