package diagnostics

import (
	"regexp"
	"strings"
)

// Redacted replaces every secret found in log text.
const Redacted = "[REDACTED]"

// secretKey matches key names that carry credentials, including compound names such
// as aws_secret_access_key, GITHUB_TOKEN or db_password. Over-redacting a harmless
// "tokens_used=5" is the accepted price of never storing a credential.
const secretKey = `[A-Za-z0-9_.\-]*(?i:password|passwd|pwd|secret|token|api[_\-]?key|apikey|access[_\-]?key|private[_\-]?key|credentials?)[A-Za-z0-9_.\-]*`

type redaction struct {
	re   *regexp.Regexp
	repl string
	// fn, when set, replaces each match instead of repl.
	fn func(match []string) string
	// hints are lower-case substrings one of which every match contains; a text
	// without any skips the regexp, which keeps redaction cheap on ordinary lines.
	hints []string
}

var keyHints = []string{"pass", "pwd", "secret", "token", "key", "credential"}

// redactions run in order: whole structures (key blocks, URLs, JWTs) before the
// key=value forms, so a value is never half-redacted by an earlier, narrower rule.
var redactions = []redaction{
	// A private key block inside one string (JSON with escaped newlines, or a whole
	// multi-line text), or its unterminated start.
	{re: regexp.MustCompile(`(?s)-----BEGIN[A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?(-----END[A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|\z)`), repl: Redacted, hints: []string{"private key"}},
	// scheme://user:password@host keeps the user, hides the password.
	{re: regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*):[^/\s@]*@`), repl: "${1}:" + Redacted + "@", hints: []string{"://"}},
	// JSON Web Tokens.
	{re: regexp.MustCompile(`eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*`), repl: Redacted, hints: []string{"eyj"}},
	// Authorization headers keep their scheme (Bearer, Basic, ...) and lose the
	// credential; a bare bearer token anywhere else is redacted too.
	{re: regexp.MustCompile(`(?i)(authorization["']?\s*[:=]\s*["']?)((?:bearer|basic|token|digest|apikey)\s+)?[^\s"',;]+`),
		fn: func(m []string) string { return m[1] + m[2] + Redacted }, hints: []string{"authorization"}},
	{re: regexp.MustCompile(`(?i)\b(bearer)(\s+)[A-Za-z0-9\-._~+/]+=*`), repl: "${1}${2}" + Redacted, hints: []string{"bearer"}},
	// Anthropic and OpenAI style keys.
	{re: regexp.MustCompile(`sk-ant-[A-Za-z0-9_\-]+`), repl: Redacted, hints: []string{"sk-ant-"}},
	{re: regexp.MustCompile(`\bsk-[A-Za-z0-9_\-]{16,}`), repl: Redacted, hints: []string{"sk-"}},
	// AWS access key ids.
	{re: regexp.MustCompile(`\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[A-Z0-9]{16}\b`), repl: Redacted, hints: []string{"akia", "asia", "agpa", "aida", "aroa", "anpa"}},
	// GitHub and Slack tokens.
	{re: regexp.MustCompile(`\b(?:gh[pousr]_[A-Za-z0-9]{20,}|xox[abprs]-[A-Za-z0-9\-]{10,})`), repl: Redacted, hints: []string{"ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox"}},
	// key: "quoted value" and key='quoted value', as in JSON or YAML.
	{re: regexp.MustCompile(`(` + secretKey + `["']?\s*[:=]\s*)"(?:[^"\\]|\\.)*"`), repl: `${1}"` + Redacted + `"`, hints: keyHints},
	{re: regexp.MustCompile(`(` + secretKey + `["']?\s*[:=]\s*)'[^']*'`), repl: `${1}'` + Redacted + `'`, hints: keyHints},
	// key=value, key: value, --key value.
	// A value starting with "[" is left alone so "[REDACTED]" is not redacted twice.
	{re: regexp.MustCompile(`(` + secretKey + `["']?\s*[:=]\s*)[^\s"',;&}\][][^\s"',;&}\]]*`), repl: "${1}" + Redacted, hints: keyHints},
	{re: regexp.MustCompile(`(--` + secretKey + `\s+)[^\s"',;&-][^\s"',;&]*`), repl: "${1}" + Redacted, hints: keyHints},
}

// Redact removes credentials from one piece of text.
func Redact(s string) string {
	lower := strings.ToLower(s)
	for _, r := range redactions {
		if !containsAny(lower, r.hints) {
			continue
		}
		if r.fn == nil {
			s = r.re.ReplaceAllString(s, r.repl)
			continue
		}
		s = r.re.ReplaceAllStringFunc(s, func(match string) string {
			return r.fn(r.re.FindStringSubmatch(match))
		})
	}
	return s
}

var (
	keyBegin   = regexp.MustCompile(`-----BEGIN[A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----`)
	keyEnd     = regexp.MustCompile(`-----END[A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----`)
	base64Line = regexp.MustCompile(`^\s*[A-Za-z0-9+/=]{32,}\s*$`)
)

// RedactLines redacts a log tail line by line, and also private key blocks that span
// lines: every line from BEGIN to END is replaced. A tail that starts inside a block
// (its BEGIN line was cut off) has the base64 lines before END replaced too.
func RedactLines(lines []string) []string {
	out := make([]string, len(lines))
	inKey := false
	for i, line := range lines {
		switch {
		case inKey:
			out[i] = Redacted
			if keyEnd.MatchString(line) {
				inKey = false
			}
			continue
		case keyBegin.MatchString(line) && !keyEnd.MatchString(line[keyBegin.FindStringIndex(line)[1]:]):
			inKey = true
			out[i] = Redact(line)
			continue
		case keyEnd.MatchString(line) && !keyBegin.MatchString(line):
			for j := i - 1; j >= 0 && base64Line.MatchString(lines[j]); j-- {
				out[j] = Redacted
			}
			out[i] = Redacted
			continue
		}
		out[i] = Redact(line)
	}
	return out
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
