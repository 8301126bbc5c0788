package goproxy

import (
	"bytes"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxMessage caps the upstream text passed on to clients, in bytes: the go
// command shows an error body's first lines, and a sentence is enough.
const maxMessage = 300

// upstreamMessage reduces an upstream's error body to what a client may be
// shown: one line of printable text, without terminal escape sequences or
// other control characters, at most maxMessage bytes. An HTML page gives
// its title.
func upstreamMessage(body []byte, contentType string) string {
	text := string(body)
	if isHTML(contentType, text) {
		text = htmlTitle(text)
	}
	var b strings.Builder
	space := false
	for i := 0; i < len(text); {
		if text[i] == 0x1b {
			i += escapeLen(text[i:])
			space = true
			continue
		}
		r, size := utf8.DecodeRuneInString(text[i:])
		i += size
		switch {
		case r == utf8.RuneError && size <= 1:
		case unicode.IsSpace(r) || unicode.IsControl(r):
			space = true
		case unicode.IsPrint(r):
			if b.Len()+len(" ")+utf8.RuneLen(r) > maxMessage-len("…") {
				b.WriteString("…")
				return b.String()
			}
			if space && b.Len() > 0 {
				b.WriteByte(' ')
			}
			space = false
			b.WriteRune(r)
		}
	}
	return b.String()
}

// escapeLen is the length of the terminal escape sequence s starts with:
// CSI (ESC [ ... final byte), OSC (ESC ] ... BEL or ESC \), or ESC and one
// more character.
func escapeLen(s string) int {
	if len(s) < 2 {
		return len(s)
	}
	switch s[1] {
	case '[':
		for i := 2; i < len(s); i++ {
			if s[i] >= 0x40 && s[i] <= 0x7e {
				return i + 1
			}
		}
		return len(s)
	case ']':
		for i := 2; i < len(s); i++ {
			if s[i] == 0x07 {
				return i + 1
			}
			if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '\\' {
				return i + 2
			}
		}
		return len(s)
	}
	_, size := utf8.DecodeRuneInString(s[1:])
	return 1 + size
}

func isHTML(contentType, text string) bool {
	if strings.HasPrefix(strings.ToLower(strings.TrimSpace(contentType)), "text/html") {
		return true
	}
	start := strings.ToLower(strings.TrimSpace(text[:min(len(text), 64)]))
	return strings.HasPrefix(start, "<!doctype html") || strings.HasPrefix(start, "<html")
}

// htmlTitle returns the text of an HTML page's title, or a word for a
// page without one: its markup is no message.
func htmlTitle(page string) string {
	// Lower-cased byte for byte, ASCII only: strings.ToLower changes the
	// length of invalid UTF-8 and of some letters, and the offsets found
	// in lower must hold in page.
	lower := []byte(page)
	for i, c := range lower {
		if 'A' <= c && c <= 'Z' {
			lower[i] = c + 'a' - 'A'
		}
	}
	if i := bytes.Index(lower, []byte("<title")); i >= 0 {
		if j := bytes.IndexByte(lower[i:], '>'); j >= 0 {
			start := i + j + 1
			if end := bytes.Index(lower[start:], []byte("</title")); end >= 0 {
				return page[start : start+end]
			}
		}
	}
	return "(an HTML page)"
}
