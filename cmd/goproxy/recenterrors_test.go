package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
)

func TestErrorRingKeepsTheLatestErrorsWithTheirAttributes(t *testing.T) {
	ring := newErrorRing()
	logger := slog.New(&errorRingHandler{Handler: slog.NewTextHandler(io.Discard, nil), ring: ring})
	ctx := withRequestID(context.Background(), "req-1")
	repoLogger := logger.With("repository", "public")
	repoLogger.InfoContext(ctx, "not kept")
	repoLogger.ErrorContext(ctx, "cache put failed", "file", "example.com/!m/@v/v1.0.0.zip", "error", "disk full")
	logger.WithGroup("tls").Error("certificate", "file", "cert.pem")
	got := ring.recentErrors()
	if len(got) != 2 {
		t.Fatalf("%d errors kept, want 2", len(got))
	}
	if e := got[1]; e.Repo != "public" || e.Module != "example.com/M" || e.RequestID != "req-1" || e.Message != "cache put failed" {
		t.Errorf("the first error: %+v", e)
	}
	if e := got[0]; e.Module != "" || len(e.Attrs) != 1 || e.Attrs[0] != (loggedAttr{"tls.file", "cert.pem"}) {
		t.Errorf("the newest error: %+v", e)
	}
	for range 2 * maxRecentErrors {
		logger.Error("again")
	}
	if n := len(ring.recentErrors()); n != maxRecentErrors {
		t.Errorf("%d errors kept, want at most %d", n, maxRecentErrors)
	}
}
