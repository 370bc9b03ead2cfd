package ui

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/selfheal-dev/selfheal/internal/gateway/seal"
)

// sessionVersion starts every session cookie value (and names its format).
const sessionVersion = "v1."

// session is what the cookie carries, sealed: the token's name and digest (so a
// token removed or replaced in the tokens file ends the session) and an expiry.
// Never the token itself.
type session struct {
	Name    string `json:"n"`
	Digest  []byte `json:"d"`
	Expires int64  `json:"e"`
}

// sealer seals sessions under a key derived from the gateway's session key, so that
// the cookie can be neither read nor forged, and every replica sharing the key
// accepts it. The derivation keeps the MCP session ids and the cookies apart
// although they share the configured key.
type sealer struct{ box *seal.Box }

var errNoSession = errors.New("no valid session")

func newSealer(key []byte) (*sealer, error) {
	if len(key) == 0 {
		// No configured key: sessions last as long as this process and replica.
		key = make([]byte, seal.KeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
	}
	k, err := hkdf.Key(sha256.New, key, nil, "selfheal /ui session cookie", seal.KeySize)
	if err != nil {
		return nil, fmt.Errorf("deriving the /ui session key: %w", err)
	}
	box, err := seal.New(k)
	if err != nil {
		return nil, err
	}
	return &sealer{box: box}, nil
}

var sessionAD = []byte("selfheal ui session")

func (s *sealer) seal(se session) (string, error) {
	plain, err := json.Marshal(se)
	if err != nil {
		return "", err
	}
	out, err := s.box.Seal(plain, sessionAD)
	if err != nil {
		return "", err
	}
	return sessionVersion + out, nil
}

// open returns the session a cookie value seals, if it is one of ours and not expired.
func (s *sealer) open(v string, now time.Time) (session, error) {
	raw, ok := strings.CutPrefix(v, sessionVersion)
	if !ok || len(raw) > 1024 {
		return session{}, errNoSession
	}
	plain, err := s.box.Open(raw, sessionAD)
	if err != nil {
		return session{}, errNoSession
	}
	var se session
	if json.Unmarshal(plain, &se) != nil || len(se.Digest) != sha256.Size || !now.Before(time.Unix(se.Expires, 0)) {
		return session{}, errNoSession
	}
	return se, nil
}
