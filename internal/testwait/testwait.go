// Package testwait waits, in tests, for a condition to hold: it polls the
// condition, more and more slowly, and fails the test at a deadline, so
// that a test waits on a condition rather than on a clock, and never
// forever.
package testwait

import (
	"fmt"
	"testing"
	"time"
)

// DefaultTimeout is how long For waits: long enough for a loaded machine,
// short enough to fail a stuck test soon.
const DefaultTimeout = 10 * time.Second

// For polls cond until it holds, failing the test with t.Fatal if it does
// not within DefaultTimeout. args, printed as by fmt.Sprint, say what was
// awaited (Show makes one that says what was seen last).
func For(t testing.TB, cond func() bool, args ...any) {
	t.Helper()
	Within(t, DefaultTimeout, cond, args...)
}

// Within is For with a deadline of its own.
func Within(t testing.TB, d time.Duration, cond func() bool, args ...any) {
	t.Helper()
	deadline := time.Now().Add(d)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			what := fmt.Sprint(args...)
			if what == "" {
				what = "the condition"
			}
			t.Fatalf("waited %v for %s in vain", d, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 25*time.Millisecond)
	}
}

// Show returns an argument of For or Within that prints what f returns
// when the wait fails: the state last seen, rather than that at the call.
func Show(f func() string) fmt.Stringer { return shown(f) }

type shown func() string

func (s shown) String() string { return s() }
