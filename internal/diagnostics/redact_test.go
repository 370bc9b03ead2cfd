package diagnostics

import (
	"strings"
	"testing"
	"unicode"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   string
		secret string // must not survive; defaults to nothing extra beyond want
	}{
		{"bearer header", `GET /v1 Authorization: Bearer abc.DEF-123_xyz`, `GET /v1 Authorization: Bearer [REDACTED]`, "abc.DEF-123_xyz"},
		{"bearer header lowercase", `authorization=bearer tok123456`, `authorization=bearer [REDACTED]`, "tok123456"},
		{"basic header", `Authorization: Basic dXNlcjpwYXNz`, `Authorization: Basic [REDACTED]`, "dXNlcjpwYXNz"},
		{"schemeless authorization", `"authorization": "rawkey123"`, `"authorization": "[REDACTED]"`, "rawkey123"},
		{"bare bearer", `sending bearer Zm9vYmFyYmF6 upstream`, `sending bearer [REDACTED] upstream`, "Zm9vYmFyYmF6"},
		{"anthropic key", `using key sk-ant-api03-AbCdEf_123-xyz for call`, `using key [REDACTED] for call`, "AbCdEf_123"},
		{"x-api-key header", `x-api-key: abcdef0123456789`, `x-api-key: [REDACTED]`, "abcdef0123456789"},
		{"x-api-key with anthropic key", `X-Api-Key: sk-ant-xyz0123`, `X-Api-Key: [REDACTED]`, "xyz0123"},
		{"api_key query", `GET /q?api_key=s3cr3tv4lue&x=1`, `GET /q?api_key=[REDACTED]&x=1`, "s3cr3tv4lue"},
		{"apikey colon", `apikey: QWERTY12345`, `apikey: [REDACTED]`, "QWERTY12345"},
		{"password env", `DB_PASSWORD=hunter2 started`, `DB_PASSWORD=[REDACTED] started`, "hunter2"},
		{"password json", `{"user":"bob","password": "p@ss word!"}`, `{"user":"bob","password": "[REDACTED]"}`, "p@ss word!"},
		{"password json escaped quote", `{"password":"a\"b"}`, `{"password":"[REDACTED]"}`, `a\"b`},
		{"password yaml single quote", `password: 'x y z'`, `password: '[REDACTED]'`, "x y z"},
		{"token", `refreshing token=abc123def`, `refreshing token=[REDACTED]`, "abc123def"},
		{"secret", `client_secret=verysecret,next`, `client_secret=[REDACTED],next`, "verysecret"},
		{"flag", `exec server --password hunter2 --port 80`, `exec server --password [REDACTED] --port 80`, "hunter2"},
		{"aws access key", `creds AKIAIOSFODNN7EXAMPLE loaded`, `creds [REDACTED] loaded`, "AKIAIOSFODNN7EXAMPLE"},
		{"aws secret", `aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY`, `aws_secret_access_key = [REDACTED]`, "wJalrXUtnFEMI"},
		{"jwt", `token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c ok`, `token [REDACTED] ok`, "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"},
		{"private key in one line", `key="-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----" loaded`, `key="[REDACTED]" loaded`, "MIIEpAIBAAKCAQEA"},
		{"basic auth url", `connecting to postgres://app:Sup3rS3cret@db:5432/app`, `connecting to postgres://app:[REDACTED]@db:5432/app`, "Sup3rS3cret"},
		{"basic auth url https", `GET https://u:p4ss@example.com/x`, `GET https://u:[REDACTED]@example.com/x`, "p4ss"},
		{"github token", `ghp_abcdefghijklmnopqrstuvwxyz0123456789 used`, `[REDACTED] used`, "ghp_abcdef"},
		{"no secret", `level=error msg="connection refused" addr=10.0.0.1:8080`, `level=error msg="connection refused" addr=10.0.0.1:8080`, ""},
		{"url without credentials", `dial http://svc.ns:8080/path`, `dial http://svc.ns:8080/path`, ""},
		{"idempotent", `token=[REDACTED] Authorization: Bearer [REDACTED]`, `token=[REDACTED] Authorization: Bearer [REDACTED]`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Redact(tt.in)
			if got != tt.want {
				t.Errorf("Redact(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
			if tt.secret != "" && strings.Contains(got, tt.secret) {
				t.Errorf("secret %q survived in %q", tt.secret, got)
			}
			if again := Redact(got); again != got {
				t.Errorf("Redact is not idempotent: %q -> %q", got, again)
			}
		})
	}
}

func TestRedactLinesPrivateKeyBlock(t *testing.T) {
	in := []string{
		"loading config",
		"-----BEGIN OPENSSH PRIVATE KEY-----",
		"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
		"QyNTUxOQAAACBQq2lKf3T2n2d8Jj0O1uY1Y9rS3ZxJpQ==",
		"-----END OPENSSH PRIVATE KEY-----",
		"panic: password=hunter2",
	}
	got := RedactLines(in)
	want := []string{"loading config", Redacted, Redacted, Redacted, Redacted, "panic: password=[REDACTED]"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: got %q want %q", i, got[i], want[i])
		}
	}

	// A tail cut inside the block: BEGIN is gone, the base64 lines before END are not.
	cut := []string{
		"MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onL",
		"RnrSFSe3dPrOLqhE5CITCcn4c5l8wNRL4DAeUpbTcsxEcIW0M1wVH3bWkLCkfJUhH9TFXzE7",
		"-----END RSA PRIVATE KEY-----",
		"server started",
	}
	got = RedactLines(cut)
	for i := 0; i < 3; i++ {
		if got[i] != Redacted {
			t.Errorf("line %d survived: %q", i, got[i])
		}
	}
	if got[3] != "server started" {
		t.Errorf("line after the block changed: %q", got[3])
	}
}

// secretForms places a secret body into each format Redact must catch.
var secretForms = []func(body string) string{
	func(b string) string { return "Authorization: Bearer " + b },
	func(b string) string { return "authorization: basic " + b },
	func(b string) string { return "sk-ant-api03-" + b },
	func(b string) string { return "x-api-key: " + b },
	func(b string) string { return "api_key=" + b },
	func(b string) string { return "apikey: " + b },
	func(b string) string { return "password=" + b },
	func(b string) string { return `"password": "` + b + `"` },
	func(b string) string { return "token=" + b },
	func(b string) string { return "secret=" + b },
	func(b string) string { return "https://user:" + b + "@host.example/" },
	func(b string) string { return "eyJ" + b + ".eyJ" + b + "." + b },
	func(b string) string { return "-----BEGIN PRIVATE KEY-----\n" + b + "\n-----END PRIVATE KEY-----" },
	func(b string) string { return "AKIA" + strings.ToUpper(b[:16]) },
}

func FuzzRedact(f *testing.F) {
	f.Add("level=error", "done", "s3cr3tValue0123456789", uint8(0))
	f.Add(`{"msg":"x",`, `}`, "hunter2hunter2hunter2", uint8(7))
	f.Add("GET", "HTTP/1.1", "AbCdEfGhIjKlMnOpQrStUv", uint8(10))
	f.Add("", "", "", uint8(13))
	f.Fuzz(func(t *testing.T, prefix, suffix, raw string, form uint8) {
		// Arbitrary text must never panic, whatever it holds.
		_ = Redact(prefix + raw + suffix)
		_ = RedactLines(strings.Split(prefix+"\n"+raw+"\n"+suffix, "\n"))

		// A known secret in a known form must never survive.
		body := strings.Map(func(r rune) rune {
			if r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
				return r
			}
			return -1
		}, raw)
		for len(body) < 20 {
			body += "Q7z"
		}
		if strings.Contains(prefix, body) || strings.Contains(suffix, body) {
			t.Skip("the secret also appears outside its form")
		}
		secret := secretForms[int(form)%len(secretForms)](body)
		check := body
		if int(form)%len(secretForms) == len(secretForms)-1 {
			check = strings.ToUpper(body[:16])
		}
		line := prefix + " " + secret + " " + suffix
		if got := Redact(line); strings.Contains(got, check) {
			t.Fatalf("secret survived Redact:\n in %q\nout %q", line, got)
		}
		lines := strings.Split(line, "\n")
		for _, l := range RedactLines(lines) {
			if strings.Contains(l, check) {
				t.Fatalf("secret survived RedactLines:\n in %q\nout %q", lines, l)
			}
		}
	})
}
