package netrc

import "testing"

func TestParse(t *testing.T) {
	lines := Parse(`
machine a.example login alice password s3cret
machine b.example
  login bob
  password hunter2
macdef init
  cd /
  ls

machine c.example login carol password pw
default login anyone password any
machine d.example login dave password pw
`)
	want := []Line{{"a.example", "alice", "s3cret"}, {"b.example", "bob", "hunter2"}, {"c.example", "carol", "pw"}}
	if len(lines) != len(want) {
		t.Fatalf("Parse = %v, want %v", lines, want)
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d = %v, want %v", i, lines[i], want[i])
		}
	}
	if l, ok := Find(lines, "b.example"); !ok || l.Login != "bob" {
		t.Errorf("Find(b.example) = %v, %v", l, ok)
	}
	if _, ok := Find(lines, "d.example"); ok {
		t.Error("an entry after default was used")
	}
}

func TestPath(t *testing.T) {
	env := map[string]string{"HOME": "/home/u"}
	if p := Path(func(k string) string { return env[k] }); p != "/home/u/.netrc" {
		t.Errorf("Path = %q", p)
	}
	env["NETRC"] = "/etc/netrc"
	if p := Path(func(k string) string { return env[k] }); p != "/etc/netrc" {
		t.Errorf("Path with NETRC = %q", p)
	}
}
