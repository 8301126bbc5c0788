package goproxy

import (
	"strings"
	"unicode"
)

// URLs are redacted for logs and error messages. In the proxy's own
// upstream URLs the password goes, or the user name when it stands alone,
// since that is usually a token ("https://user:xxxxx@host",
// "https://xxxxx@host"), as net/url's URL.Redacted does for passwords. In
// the URLs git prints, which url.<base>.insteadOf settings made, the whole
// user information goes: there a token is often the user name, before a
// placeholder password ("https://TOKEN:x-oauth-basic@github.com"). Both
// functions work on the text, so that a URL too malformed to parse is
// redacted too.

// redactURL redacts one URL, with or without a scheme.
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
	return scheme + redactUserinfo(authority[:at]) + rest[at:]
}

// redactURLsIn hides the user information of every URL in a text, each
// ending at a slash, a quote or a space: git prints the remote URLs it
// fails to reach, which may carry tokens that a url.<base>.insteadOf
// setting put there, in either part.
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

// redactUserinfo applies the upstream URLs' rule to a user information.
func redactUserinfo(userinfo string) string {
	if user, _, hasPassword := strings.Cut(userinfo, ":"); hasPassword {
		return user + ":xxxxx"
	}
	return "xxxxx"
}
