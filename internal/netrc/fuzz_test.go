package netrc

import (
	"strings"
	"testing"
)

// FuzzParse feeds Parse arbitrary text: it must never panic, and every line
// it returns must be usable as it is, with a machine, a login and a password,
// none of them holding white space (they are fields of the text).
func FuzzParse(f *testing.F) {
	f.Add("machine a.example login alice password s3cret\n")
	f.Add("machine b.example\n  login bob\n  password hunter2\nmacdef init\n  cd /\n\nmachine c login d password e\n")
	f.Add("default login anyone password any\nmachine d login e password f\n")
	f.Add("machine\nlogin\npassword")
	f.Fuzz(func(t *testing.T, data string) {
		lines := Parse(data)
		for _, l := range lines {
			for _, field := range []string{l.Machine, l.Login, l.Password} {
				if field == "" || strings.ContainsAny(field, " \t\r\n\v\f") {
					t.Fatalf("Parse(%q) returned an unusable line %+v", data, l)
				}
			}
			if _, ok := Find(lines, l.Machine); !ok {
				t.Fatalf("Find(%q) does not find a parsed line", l.Machine)
			}
		}
		if len(lines) > strings.Count(data, "machine") {
			t.Fatalf("Parse(%q) returned %d lines from %d machine tokens", data, len(lines), strings.Count(data, "machine"))
		}
	})
}
