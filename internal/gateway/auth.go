package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/selfheal-dev/selfheal/internal/gateway/access"
	"github.com/selfheal-dev/selfheal/internal/gateway/anthropic"
	"github.com/selfheal-dev/selfheal/internal/gateway/limits"
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
	settle      time.Duration
	clientFor   func(name string) *access.Client
	tokens      atomic.Pointer[TokenSet]
	loaded      [sha256.Size]byte // the tokens file as NewAuthenticator read it
	reloads     atomic.Uint64
	watching    chan struct{} // closed once Watch sees changes
}

// DefaultReloadSettle is how long the tokens file must stay unchanged before a
// change is read: an editor writing in place is not read half-way.
const DefaultReloadSettle = 250 * time.Millisecond

// AuthOption configures an Authenticator.
type AuthOption func(*Authenticator)

// WithReloadSettle sets how long the tokens file must stay unchanged, with the
// same content read twice, before a change is applied.
func WithReloadSettle(d time.Duration) AuthOption { return func(a *Authenticator) { a.settle = d } }

// WithClients resolves a token's name to its access (scope). Default: every
// token is unrestricted.
func WithClients(f func(name string) *access.Client) AuthOption {
	return func(a *Authenticator) { a.clientFor = f }
}

// NoAuth admits every request (auth: {mode: none}).
func NoAuth() *Authenticator { return &Authenticator{disabled: true} }

// NewAuthenticator loads the tokens file. passThrough says the Anthropic key
// comes from the client, so on /v1/* the gateway token must come from
// TokenHeader. A missing file is an error; an empty one admits nobody.
func NewAuthenticator(tokensFile string, passThrough bool, opts ...AuthOption) (*Authenticator, error) {
	a := &Authenticator{path: tokensFile, passThrough: passThrough, settle: DefaultReloadSettle, watching: make(chan struct{})}
	for _, o := range opts {
		o(a)
	}
	if a.clientFor == nil {
		a.clientFor = func(name string) *access.Client { return access.NewClient(name, nil, nil) }
	}
	data, err := os.ReadFile(a.path)
	if err != nil {
		return nil, fmt.Errorf("auth.tokensFile: %w", err)
	}
	ts, err := ParseTokens(data)
	if err != nil {
		return nil, fmt.Errorf("auth.tokensFile %s: %w", a.path, err)
	}
	a.tokens.Store(ts)
	a.loaded = sha256.Sum256(data)
	return a, nil
}

// NewAuthenticatorFromConfig builds the authenticator the config asks for.
func NewAuthenticatorFromConfig(c *Config) (*Authenticator, error) {
	if c.Auth.AuthDisabled() {
		return NoAuth(), nil
	}
	return NewAuthenticator(c.Auth.TokensFile, c.Anthropic.APIKey.PassThrough, WithClients(c.ClientFor))
}

// Disabled reports whether authentication is off (mode none).
func (a *Authenticator) Disabled() bool { return a.disabled }

// Tokens is the number of client tokens accepted now.
func (a *Authenticator) Tokens() int { return a.tokens.Load().Len() }

// Watching is closed once Watch is watching the tokens file: changes made after
// that are seen.
func (a *Authenticator) Watching() <-chan struct{} { return a.watching }

// Reloads counts the changes of the tokens file that were acted on (applied or
// refused), for tests and logs.
func (a *Authenticator) Reloads() uint64 { return a.reloads.Load() }

// apply acts on one settled read of the tokens file. The file is parsed whole and
// swapped in atomically, or not at all: a file that does not parse keeps the
// previous tokens. A missing or empty file admits nobody: a deleted Secret must
// not leave its tokens valid.
func (a *Authenticator) apply(log logr.Logger, data []byte, readErr error) {
	defer a.reloads.Add(1)
	if readErr != nil {
		a.tokens.Store(&TokenSet{})
		log.Error(readErr, "Tokens file unreadable or deleted: refusing every client until it is restored")
		return
	}
	ts, err := ParseTokens(data)
	if err != nil {
		log.Error(err, "Tokens file does not parse: keeping the previous client tokens", "count", a.Tokens())
		return
	}
	a.tokens.Store(ts)
	if ts.Len() == 0 {
		log.Error(errors.New("no client tokens"), "Tokens file is empty: refusing every client")
		return
	}
	log.Info("Reloaded client tokens", "count", ts.Len())
}

// Watch reloads the tokens file whenever it changes, until ctx is done. It
// watches the directory, so the atomic symlink swap of a mounted Secret is
// seen as well as an in-place write or a deletion. A change is applied once the
// file has been quiet for the settle time and two reads agree, so a file read
// while an editor is still writing it never becomes the token set.
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
	close(a.watching)
	settle := time.NewTimer(a.settle)
	settle.Stop()
	defer settle.Stop()
	// A change between the first read and the watch's start sends no event: compare,
	// and treat a difference as a change, so it is not lost.
	if data, err := os.ReadFile(a.path); err != nil || sha256.Sum256(data) != a.loaded {
		settle.Reset(a.settle)
	}
	// The last read of a change not yet applied: applied when the next read,
	// one quiet settle time later, finds the same.
	var (
		pending    []byte
		pendingErr bool
		havePend   bool
	)
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
			havePend = false
			settle.Reset(a.settle)
		case <-settle.C:
			data, err := os.ReadFile(a.path)
			if !havePend || pendingErr != (err != nil) || !bytes.Equal(pending, data) {
				pending, pendingErr, havePend = data, err != nil, true
				settle.Reset(a.settle)
				continue
			}
			havePend = false
			a.apply(log, data, err)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Error(err, "Watching tokens file")
		}
	}
}

// Middleware admits requests carrying a known token and answers others 401
// in the Anthropic error shape, without reading their body. anthropicRoute
// says the route is the Claude pass-through, where in pass-through mode
// Authorization/x-api-key belong to Anthropic. On other routes the header that
// carried the gateway token is removed before the handler runs, so it never
// reaches an upstream. The client's access goes into the request context.
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
			limits.Refuse(w, false)
			anthropic.WriteError(w, http.StatusUnauthorized, anthropic.ErrAuthentication, msg)
			return
		}
		if !anthropicRoute && from != "" && from != TokenHeader {
			r.Header.Del(from)
		}
		r.Header.Del(TokenHeader)
		ctx := ctrl.IntoContext(r.Context(), ctrl.FromContext(r.Context()).WithValues("client", name))
		ctx = access.NewContext(ctx, a.clientFor(name))
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

// TokenDigest is the SHA-256 of a client token: what the gateway keeps of it.
type TokenDigest = [sha256.Size]byte

// Identify returns the name and digest of tok when it is a client token now, for
// a login that remembers the token without keeping it (the /ui session cookie).
func (a *Authenticator) Identify(tok string) (string, TokenDigest, bool) {
	name, ok := a.tokens.Load().Match(tok)
	if !ok {
		return "", TokenDigest{}, false
	}
	return name, sha256.Sum256([]byte(tok)), true
}

// Current reports whether the token named name with this digest is still a client
// token (the file may have changed since the login), and returns its access.
func (a *Authenticator) Current(name string, digest TokenDigest) (*access.Client, bool) {
	if !a.tokens.Load().holds(name, digest) {
		return nil, false
	}
	return a.clientFor(name), true
}

// holds reports whether ts has the token named name with this digest, comparing
// every entry like Match; nil (a zero Authenticator) holds none.
func (ts *TokenSet) holds(name string, digest TokenDigest) bool {
	if ts == nil {
		return false
	}
	found := 0
	for i := range ts.entries {
		found |= subtle.ConstantTimeCompare(digest[:], ts.entries[i].hash[:]) & boolInt(ts.entries[i].name == name)
	}
	return found == 1
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
