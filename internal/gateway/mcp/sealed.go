package mcp

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"github.com/selfheal-dev/selfheal/internal/gateway/seal"
)

// SessionKeySize is the size of the key that seals session ids (AES-256-GCM).
const SessionKeySize = seal.KeySize

// sealedPrefix starts every sealed session id (and names its format's version).
const sealedPrefix = "shs1."

// sealedState is what a sealed session id carries: enough for any replica (or this
// one after a restart) to address the upstream session, or to create a new one.
type sealedState struct {
	// UpstreamID is the upstream's session id when the id was sealed; empty when the
	// upstream had not answered yet (the id went out with a held initialize).
	UpstreamID string `json:"u,omitempty"`
	// Initialize is the client's initialize request, verbatim.
	Initialize []byte `json:"i"`
	// ProtocolVersion the client asked for.
	ProtocolVersion string `json:"v,omitempty"`
}

// sealer seals session state into the id the client holds: the client can neither
// read it nor forge one, and the upstream's name is authenticated with it, so a
// session of one upstream is no session of another.
type sealer struct{ box *seal.Box }

func newSealer(key []byte) (*sealer, error) {
	box, err := seal.New(key)
	if err != nil {
		return nil, err
	}
	return &sealer{box: box}, nil
}

func additionalData(upstream string) []byte {
	return []byte("selfheal mcp session for upstream " + upstream)
}

// seal returns the client-facing session id for st.
func (s *sealer) seal(upstream string, st sealedState) (string, error) {
	plain, err := json.Marshal(st)
	if err != nil {
		return "", err
	}
	var z bytes.Buffer
	fw, _ := flate.NewWriter(&z, flate.BestCompression)
	_, _ = fw.Write(plain)
	_ = fw.Close()
	out, err := s.box.Seal(z.Bytes(), additionalData(upstream))
	if err != nil {
		return "", err
	}
	return sealedPrefix + out, nil
}

// errNotSealed is any id that is not a session id this key sealed for the upstream.
var errNotSealed = errors.New("not a sealed session id")

// open returns the state sealed in id.
func (s *sealer) open(upstream, id string) (sealedState, error) {
	enc, ok := strings.CutPrefix(id, sealedPrefix)
	if !ok || len(enc) > maxSealedIDLen {
		return sealedState{}, errNotSealed
	}
	z, err := s.box.Open(enc, additionalData(upstream))
	if err != nil {
		return sealedState{}, errNotSealed
	}
	plain, err := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(z)), 2*maxRememberedInitialize))
	if err != nil {
		return sealedState{}, errNotSealed
	}
	var st sealedState
	if err := json.Unmarshal(plain, &st); err != nil || len(st.Initialize) == 0 {
		return sealedState{}, errNotSealed
	}
	return st, nil
}

// maxSealedIDLen bounds what is decrypted: a sealed initialize of
// maxRememberedInitialize bytes, base64-encoded, with room to spare.
const maxSealedIDLen = 4 * maxRememberedInitialize

// sessionFor returns the session the client's id names: one this replica knows, or,
// with sealed ids, the one the id carries (from another replica, or from before a
// restart), remembered from then on.
func (p *Proxy) sessionFor(up *upstream, clientID string) *session {
	if sess := up.session(clientID); sess != nil || p.sealer == nil || clientID == "" {
		return sess
	}
	st, err := p.sealer.open(up.Name, clientID)
	if err != nil {
		return nil // not ours: the upstream decides what the id means
	}
	sess := &session{clientID: clientID, upstreamID: st.UpstreamID, initialize: st.Initialize, protocolVersion: st.ProtocolVersion}
	up.sessions.put(up.Name, sess)
	return sess
}

// ensureUpstreamSession creates the upstream session of a session known only from its
// sealed id whose upstream had not answered when it was sealed.
func (p *Proxy) ensureUpstreamSession(ctx context.Context, up *upstream, sess *session) (*failure, error) {
	if sess == nil || sess.current() != "" || p.sealer == nil {
		return nil, nil
	}
	return p.recoverSession(ctx, up, sess, "")
}
