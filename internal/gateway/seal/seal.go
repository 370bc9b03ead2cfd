// Package seal encrypts and authenticates the small values the gateway hands to
// clients and later reads back (sealed MCP session ids, /ui session cookies), with
// AES-256-GCM: a client can neither read nor forge one, and every replica holding the
// key opens what another sealed.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
)

// KeySize is the size of a key (AES-256).
const KeySize = 32

// ErrNotSealed is anything that is not a value this key sealed with this context.
var ErrNotSealed = errors.New("not a value sealed with this key")

// Box seals and opens values under one key.
type Box struct{ aead cipher.AEAD }

// New returns a Box for a KeySize-byte key.
func New(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("session key: %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Seal returns plain encrypted under a fresh nonce, authenticated together with
// context (which is not in the result: Open must be given the same), as unpadded
// base64url.
func (b *Box) Seal(plain, context []byte) (string, error) {
	nonce := make([]byte, b.aead.NonceSize(), b.aead.NonceSize()+len(plain)+b.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b.aead.Seal(nonce, nonce, plain, context)), nil
}

// Open returns what Seal sealed with context, or ErrNotSealed.
func (b *Box) Open(sealed string, context []byte) ([]byte, error) {
	raw, err := base64.RawURLEncoding.DecodeString(sealed)
	n := b.aead.NonceSize()
	if err != nil || len(raw) < n+b.aead.Overhead() {
		return nil, ErrNotSealed
	}
	plain, err := b.aead.Open(nil, raw[:n], raw[n:], context)
	if err != nil {
		return nil, ErrNotSealed
	}
	return plain, nil
}
