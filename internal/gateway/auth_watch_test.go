package gateway

import "testing"

func TestTokensFileEvent(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"/etc/selfheal/tokens", true},
		{"/etc/selfheal/./tokens", true},
		{"/etc/selfheal/..data", true},                  // a mounted Secret's swap
		{"/etc/selfheal/..2026_11_27_10_15_23.1", true}, // its new timestamped directory
		{"/etc/selfheal/manager.log", false},
		{"/etc/selfheal/tokens.swp", false},
	} {
		if got := tokensFileEvent(tc.name, "/etc/selfheal/tokens"); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
