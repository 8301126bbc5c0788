package goproxy

import (
	"strings"
	"unicode"
)

// redactURL hides the credentials of a URL for logs and error messages:
// the password, or the user name when it stands alone, since that is
// usually a token. It works on the text, so that a URL too malformed to
// parse is redacted too.
func redactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if ok {
		scheme += "://"
	} else {
		scheme, rest = "", raw
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return raw
	}
	user, _, hasPassword := strings.Cut(authority[:at], ":")
	if hasPassword {
		user += ":xxxxx"
	} else {
		user = "xxxxx"
	}
	return scheme + user + rest[at:]
}

// redactURLsIn hides the user information of every URL in s: git prints
// the remote URLs it fails to reach, which may carry tokens that a
// url.<base>.insteadOf setting put there.
func redactURLsIn(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+3])
		s = s[i+3:]
		end := strings.IndexFunc(s, func(r rune) bool {
			return r == '/' || r == '\'' || r == '"' || r == '`' || unicode.IsSpace(r)
		})
		if end < 0 {
			end = len(s)
		}
		if at := strings.LastIndexByte(s[:end], '@'); at >= 0 {
			b.WriteString("xxxxx")
			s = s[at:]
		}
	}
}
