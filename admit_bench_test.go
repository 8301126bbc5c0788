package goproxy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// BenchmarkServeWithAdmission measures what the admission policy costs
// the requests it applies to: a warm .info (from the hot tier) and a
// cached list of 300 versions, each against the same Proxy without a
// policy as the baseline. The policy has 70 deny entries and a cooldown
// over the Proxy's own record, the list's versions first seen a month
// ago but the newest.
func BenchmarkServeWithAdmission(b *testing.B) {
	var list strings.Builder
	for i := range 300 {
		fmt.Fprintf(&list, "v1.%d.0\n", i)
	}
	const info = `{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}`
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/@v/list"):
			w.Write([]byte(list.String()))
		case strings.HasSuffix(r.URL.Path, ".info"):
			w.Write([]byte(info))
		default:
			http.NotFound(w, r)
		}
	}))
	defer up.Close()
	var deny []AdmissionRule
	for i := range 70 {
		deny = append(deny, AdmissionRule{Match: fmt.Sprintf("github.com/org%d/*@<v1.2.3", i), Reason: "broken"})
	}
	for _, withPolicy := range []bool{false, true} {
		name := "baseline"
		if withPolicy {
			name = "policy"
		}
		cache := &MemCacher{}
		p := &Proxy{Cacher: cache, Env: []string{"GOPROXY=" + up.URL, "GOSUMDB=off"}, Transport: http.DefaultTransport,
			TempDir: b.TempDir(), MutableTTL: time.Hour}
		if withPolicy {
			policy := &AdmissionPolicy{Deny: deny, Cooldown: Cooldown{Age: 72 * time.Hour, FirstSeen: p}}
			p.Admission = policy.Decide
			var seen strings.Builder
			for i := range 299 {
				fmt.Fprintf(&seen, "v1.%d.0 %s\n", i, time.Now().Add(-30*24*time.Hour).UTC().Format(time.RFC3339Nano))
			}
			cache.Put(context.Background(), firstSeenName("example.com/m"), strings.NewReader(seen.String()))
		}
		b.Cleanup(func() { p.Close() })
		b.Run("info/"+name, func(b *testing.B) { benchmarkHandler(b, p, "/example.com/m/@v/v1.0.0.info") })
		b.Run("list/"+name, func(b *testing.B) { benchmarkHandler(b, p, "/example.com/m/@v/list") })
	}
}
