package logging

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestNewFormats(t *testing.T) {
	var buf bytes.Buffer
	l, _, err := New(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("started", "vip", "web")
	if !strings.Contains(buf.String(), `"msg":"started"`) || !strings.Contains(buf.String(), `"vip":"web"`) {
		t.Errorf("json output = %q", buf.String())
	}
	if _, _, err := New(&buf, "loud", "text"); err == nil {
		t.Error("New accepted level loud")
	}
	if _, _, err := New(&buf, "info", "xml"); err == nil {
		t.Error("New accepted format xml")
	}
}

func TestRateLimitedSuppressesRepeats(t *testing.T) {
	var buf bytes.Buffer
	h := RateLimited(slog.NewTextHandler(&buf, nil), 3, time.Minute)
	start := time.Now()
	for i := range 10 {
		r := slog.NewRecord(start.Add(time.Duration(i)*time.Millisecond), slog.LevelWarn, "accept failed", 0)
		if err := h.Handle(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Count(buf.String(), "accept failed"); got != 3 {
		t.Fatalf("wrote %d records in one interval, want 3:\n%s", got, buf.String())
	}
	// The first record of the next interval reports how many were dropped.
	r := slog.NewRecord(start.Add(2*time.Minute), slog.LevelWarn, "accept failed", 0)
	_ = h.Handle(context.Background(), r)
	if !strings.Contains(buf.String(), "suppressed=7") {
		t.Errorf("next interval lacks suppressed=7:\n%s", buf.String())
	}
	// Other messages are limited separately.
	_ = h.Handle(context.Background(), slog.NewRecord(start, slog.LevelWarn, "other", 0))
	if !strings.Contains(buf.String(), "msg=other") {
		t.Error("a different message was suppressed")
	}
}
