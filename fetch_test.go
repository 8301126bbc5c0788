package goproxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestGoproxyWalk(t *testing.T) {
	const mod = "/example.com/a/@v/v1.0.0.mod"
	behaviours := map[string]func(w http.ResponseWriter, r *http.Request){
		"ok":      func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("module example.com/a\n")) },
		"404":     func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no such module here", 404) },
		"410":     func(w http.ResponseWriter, r *http.Request) { http.Error(w, "gone from here", 410) },
		"500":     func(w http.ResponseWriter, r *http.Request) { http.Error(w, "upstream exploded", 500) },
		"timeout": func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
	}
	tests := []struct {
		name       string
		list       string // A and B stand for the two upstreams
		a, b       string // their behaviours
		env        []string
		wantStatus int
		wantBody   string
		wantB      int // requests B should see
	}{
		{name: "comma falls through on 404", list: "A,B", a: "404", b: "ok", wantStatus: 200, wantB: 1},
		{name: "comma falls through on 410", list: "A,B", a: "410", b: "ok", wantStatus: 200, wantB: 1},
		{name: "comma stops on 500", list: "A,B", a: "500", b: "ok", wantStatus: 502, wantBody: "upstream exploded"},
		{name: "comma stops on timeout", list: "A,B", a: "timeout", b: "ok", wantStatus: 502, wantBody: "timeout"},
		{name: "pipe falls through on 404", list: "A|B", a: "404", b: "ok", wantStatus: 200, wantB: 1},
		{name: "pipe falls through on 500", list: "A|B", a: "500", b: "ok", wantStatus: 200, wantB: 1},
		{name: "pipe falls through on timeout", list: "A|B", a: "timeout", b: "ok", wantStatus: 200, wantB: 1},
		{name: "all not found passes the first message on", list: "A,B", a: "404", b: "410", wantStatus: 404, wantBody: "no such module here", wantB: 1},
		{name: "a failure outranks a not-found", list: "A,B", a: "404", b: "500", wantStatus: 502, wantBody: "upstream exploded", wantB: 1},
		{name: "off refuses", list: "off", wantStatus: 403, wantBody: "GOPROXY=off"},
		{name: "off after a not-found refuses", list: "A,off,B", a: "404", b: "ok", wantStatus: 403, wantBody: "GOPROXY=off"},
		{name: "direct is not configured yet", list: "A,direct", a: "404", wantStatus: 404, wantBody: "direct fetching"},
		{name: "entries after direct are ignored", list: "direct,B", b: "ok", wantStatus: 404, wantBody: "direct fetching"},
		{name: "GONOPROXY skips the proxies", list: "B", b: "ok", env: []string{"GONOPROXY=example.com/a"}, wantStatus: 404, wantBody: "direct fetching"},
		{name: "GOPRIVATE skips the proxies", list: "B", b: "ok", env: []string{"GOPRIVATE=example.com"}, wantStatus: 404, wantBody: "direct fetching"},
		{name: "GONOPROXY overrides GOPRIVATE", list: "B", b: "ok", env: []string{"GOPRIVATE=example.com", "GONOPROXY=none.example"}, wantStatus: 200, wantB: 1},
		{name: "empty entries are skipped", list: ",,B,", b: "ok", wantStatus: 200, wantB: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ups [2]*fakeUpstream
			for i, b := range []string{tt.a, tt.b} {
				u := newFakeUpstream(t, nil)
				if h := behaviours[b]; h != nil {
					u.setHook(func(w http.ResponseWriter, r *http.Request) bool { h(w, r); return true })
				}
				ups[i] = u
			}
			list := strings.NewReplacer("A", ups[0].URL, "B", ups[1].URL).Replace(tt.list)
			p := newTestProxy(t, list, tt.env...)
			p.Transport = &http.Transport{ResponseHeaderTimeout: 200 * time.Millisecond}
			p.Download.Attempts = 1 // the walk, not the retries, is under test
			w := do(p, "GET", mod)
			if w.Code != tt.wantStatus || !strings.Contains(w.Body.String(), tt.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", w.Code, w.Body, tt.wantStatus, tt.wantBody)
			}
			if n := ups[1].count(mod); n != tt.wantB {
				t.Errorf("second upstream got %d requests, want %d", n, tt.wantB)
			}
		})
	}
}

func TestParseUpstreams(t *testing.T) {
	tests := []struct {
		in   string
		want []Upstream
	}{
		{"https://a.example,direct", []Upstream{{URL: "https://a.example", Priority: 2}, {URL: "direct", Priority: 1}}},
		{"a.example/path/|b.example", []Upstream{{URL: "https://a.example/path/", Priority: 2, FallBackOnError: true}, {URL: "https://b.example", Priority: 1}}},
		{" off ", []Upstream{{URL: "off", Priority: 1}}},
	}
	for _, tt := range tests {
		got, err := ParseUpstreams(tt.in)
		if err != nil || len(got) != len(tt.want) {
			t.Errorf("ParseUpstreams(%q) = %v, %v", tt.in, got, err)
			continue
		}
		for i := range got {
			if fmt.Sprint(got[i]) != fmt.Sprint(tt.want[i]) {
				t.Errorf("ParseUpstreams(%q)[%d] = %+v, want %+v", tt.in, i, got[i], tt.want[i])
			}
		}
	}
	for _, bad := range []string{"", ",", "ftp://a.example", "http://a b/"} {
		if _, err := ParseUpstreams(bad); err == nil {
			t.Errorf("ParseUpstreams(%q) accepted", bad)
		}
	}
}

func TestCredentialsStayOutOfMessages(t *testing.T) {
	up := newFakeUpstream(t, nil)
	up.setHook(func(w http.ResponseWriter, r *http.Request) bool { http.Error(w, "boom", 500); return true })
	var logs strings.Builder
	p := newTestProxy(t, strings.Replace(up.URL, "http://", "http://user:s3cret@", 1))
	p.Logger = newBufferLogger(&logs)
	w := do(p, "GET", "/example.com/a/@v/list")
	if strings.Contains(w.Body.String(), "s3cret") || strings.Contains(logs.String(), "s3cret") {
		t.Errorf("password leaked: body %q, logs %q", w.Body, logs.String())
	}
}
