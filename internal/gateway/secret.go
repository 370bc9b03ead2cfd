package gateway

import (
	"fmt"
	"log/slog"
)

// Redacted is what every printed form of a Secret shows.
const Redacted = "[REDACTED]"

// Secret holds a credential (an API key, a token). Every way of printing it
// (fmt verbs, JSON, text, slog) shows Redacted; only Value returns the real
// string. The value sits behind a pointer so that even a Secret kept in an
// unexported struct field prints as an address, never as the key.
type Secret struct {
	v *string
}

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{v: &s} }

// Value returns the secret itself: pass it to the one place that needs it
// (an outbound header), never to a logger.
func (s Secret) Value() string {
	if s.v == nil {
		return ""
	}
	return *s.v
}

// IsZero reports whether no secret is set.
func (s Secret) IsZero() bool { return s.Value() == "" }

func (s Secret) String() string   { return Redacted }
func (s Secret) GoString() string { return Redacted }

// Format makes every fmt verb (%v, %+v, %#v, %s, %q, %x ...) print Redacted.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
func (s Secret) LogValue() slog.Value         { return slog.StringValue(Redacted) }

// MarshalLog is used by logr sinks (zapr) instead of reflection.
func (s Secret) MarshalLog() any { return Redacted }
