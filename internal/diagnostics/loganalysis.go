package diagnostics

import (
	"strings"
)

// errorWords and errorPhrases mark log lines that usually explain a failure. They are
// deliberately broad: the window of such lines near the end of a tail is what an SRE
// reads first. Words are matched whole and case-insensitively.
var errorWords = map[string]bool{
	"error": true, "errors": true, "err": true, "fatal": true, "panic": true, "panicked": true,
	"exception": true, "traceback": true, "oom": true, "oomkilled": true, "refused": true,
	"segfault": true, "killed": true, "denied": true, "forbidden": true, "unauthorized": true,
	"timeout": true, "cannot": true, "failed": true, "failure": true, "crash": true,
	"crashed": true, "exited": true, "critical": true, "emerg": true, "alert": true,
}

var errorPhrases = []string{
	"out of memory", "segmentation fault", "timed out", "unable to", "no such file",
	"not found", "exit code", "can't", "could not",
}

// isErrorLine reports whether a line reads like an error.
func isErrorLine(line string) bool {
	// klog: E0301 12:00:01.000000 ... and F0301 for fatal.
	if len(line) > 6 && (line[0] == 'E' || line[0] == 'F') && isDigits(line[1:5]) && line[5] == ' ' {
		return true
	}
	lower := strings.ToLower(line)
	start := -1
	for i := 0; i <= len(lower); i++ {
		letter := i < len(lower) && lower[i] >= 'a' && lower[i] <= 'z'
		switch {
		case letter && start < 0:
			start = i
		case !letter && start >= 0:
			if errorWords[lower[start:i]] {
				return true
			}
			start = -1
		}
	}
	for _, p := range errorPhrases {
		if strings.Contains(lower, p) {
			return true
		}
	}
	return false
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ErrorWindow picks from a log tail the last maxMatches error lines, each with up to
// context lines before and after, in log order. Gaps between windows are marked "…".
// It never returns more than maxMatches*(2*context+1) lines plus the gap markers.
func ErrorWindow(lines []string, maxMatches, context int) []string {
	if maxMatches <= 0 || len(lines) == 0 {
		return nil
	}
	if context < 0 {
		context = 0
	}
	var matches []int
	for i := len(lines) - 1; i >= 0 && len(matches) < maxMatches; i-- {
		if isErrorLine(lines[i]) {
			matches = append(matches, i)
		}
	}
	if len(matches) == 0 {
		return nil
	}
	keep := make([]bool, len(lines))
	for _, m := range matches {
		for j := max(0, m-context); j <= min(len(lines)-1, m+context); j++ {
			keep[j] = true
		}
	}
	var out []string
	last := -1
	for i, k := range keep {
		if !k {
			continue
		}
		if last >= 0 && i != last+1 {
			out = append(out, "…")
		}
		out = append(out, strings.TrimRight(lines[i], "\r"))
		last = i
	}
	return out
}
