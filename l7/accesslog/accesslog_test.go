package accesslog

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLogWritesOneJSONLine(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	e := &Entry{Time: time.Unix(0, 0).UTC(), ClientAddr: "192.0.2.1", Method: "GET", Path: "/a\"b<c>", Status: 200, RequestID: "r1"}
	if err := l.Log(e); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("Log wrote %d lines, want 1: %q", len(lines), buf.String())
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatalf("line %q is not JSON: %v", lines[0], err)
	}
	if got["path"] != "/a\"b<c>" || got["status"] != float64(200) || got["client_addr"] != "192.0.2.1" {
		t.Errorf("decoded line = %v", got)
	}
	if strings.Contains(lines[0], `\u003c`) {
		t.Errorf("line %q escapes HTML characters, which only hurts readability", lines[0])
	}
}

func TestOff(t *testing.T) {
	l, err := Open("off")
	if err != nil || l != nil {
		t.Fatalf("Open(off) = %v, %v; want nil, nil", l, err)
	}
	if err := l.Log(&Entry{}); err != nil {
		t.Errorf("nil logger Log = %v", err)
	}
	if err := l.Reopen(); err != nil {
		t.Errorf("nil logger Reopen = %v", err)
	}
}

func TestReopenAfterRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Log(&Entry{Path: "/one"}); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := l.Log(&Entry{Path: "/two"}); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !strings.Contains(string(old), "/one") || strings.Contains(string(old), "/two") {
		t.Errorf("rotated file = %q, want only /one", old)
	}
	if !strings.Contains(string(cur), "/two") || strings.Contains(string(cur), "/one") {
		t.Errorf("new file = %q, want only /two", cur)
	}
}

func TestOpenError(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "missing-dir", "access.log")); err == nil {
		t.Error("Open in a missing directory succeeded")
	}
}

func BenchmarkLog(b *testing.B) {
	var buf bytes.Buffer
	l := New(&buf)
	e := &Entry{Time: time.Now(), ClientAddr: "192.0.2.1", Method: "GET", Host: "www.example.com", Path: "/index.html",
		Status: 200, BytesOut: 5120, DurationMS: 1.25, Route: "web", Upstream: "web", Backend: "10.0.0.1:80", RequestID: "0123456789abcdef"}
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		_ = l.Log(e)
	}
}
