package seal

import (
	"bytes"
	"errors"
	"testing"
)

// A sealed value opens with its key and context only, and a changed byte does not
// open. Catches: a forgeable or transferable seal.
func TestSealOpensOnlyWithItsKeyAndContext(t *testing.T) {
	key := bytes.Repeat([]byte{7}, KeySize)
	box, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := box.Seal([]byte("state"), []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := box.Open(s, []byte("a")); err != nil || string(got) != "state" {
		t.Fatalf("open: %q %v", got, err)
	}
	other, _ := New(bytes.Repeat([]byte{8}, KeySize))
	flipped := []byte(s)
	flipped[len(flipped)/2] ^= 1
	for name, open := range map[string]func() ([]byte, error){
		"other context": func() ([]byte, error) { return box.Open(s, []byte("b")) },
		"other key":     func() ([]byte, error) { return other.Open(s, []byte("a")) },
		"changed byte":  func() ([]byte, error) { return box.Open(string(flipped), []byte("a")) },
		"not base64":    func() ([]byte, error) { return box.Open("%%%", []byte("a")) },
		"too short":     func() ([]byte, error) { return box.Open("AAAA", []byte("a")) },
	} {
		if _, err := open(); !errors.Is(err, ErrNotSealed) {
			t.Errorf("%s: %v, want ErrNotSealed", name, err)
		}
	}
	if _, err := New(key[:16]); err == nil {
		t.Fatal("a 16-byte key was accepted")
	}
}
