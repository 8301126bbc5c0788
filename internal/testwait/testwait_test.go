package testwait

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestForReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	For(t, func() bool { return n.Add(1) == 5 })
	if n.Load() != 5 {
		t.Errorf("condition asked %d times, want 5", n.Load())
	}
}

// recorder stands in for a test that fails, to look at its message.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	panic(r)
}

func TestWithinFailsAtTheDeadlineSayingWhat(t *testing.T) {
	r := &recorder{TB: t}
	func() {
		defer func() {
			if v := recover(); v != r {
				t.Fatalf("Within ended with %v, want a failure", v)
			}
		}()
		seen := 0
		Within(r, 10*time.Millisecond, func() bool { seen++; return false }, "the sky ", "to fall; ",
			Show(func() string { return fmt.Sprintf("seen %d times", seen) }))
	}()
	if !strings.Contains(r.msg, "the sky to fall; seen ") || strings.Contains(r.msg, "seen 0 times") {
		t.Errorf("message %q", r.msg)
	}
}
