package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestStatusURL(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"127.0.0.1:9901", "http://127.0.0.1:9901/status.json", false},
		{"[::1]:9901", "http://[::1]:9901/status.json", false},
		{"http://127.0.0.1:9901", "http://127.0.0.1:9901/status.json", false},
		{"https://lb.example:9901/admin/", "https://lb.example:9901/admin/status.json", false},
		{"127.0.0.1", "", true},
		{"ftp://127.0.0.1:21", "", true},
		{"http://", "", true},
	}
	for _, tc := range tests {
		got, err := statusURL(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("statusURL(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if got != tc.want {
			t.Errorf("statusURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

const (
	statusAllUp = `{"tier":"l4","generated":"2026-12-04T16:00:00Z","rate_window_seconds":1,
"l4":{"engine":"userspace","vips":[{"name":"web","address":"127.0.0.1:443","reals":[
{"address":"127.0.0.1:8443","state":"up","healthy":true,"weight":1},
{"address":"127.0.0.2:8443","state":"draining","healthy":true,"weight":0}]}],"xdp":[]}}`
	statusOneDown = `{"tier":"l7","generated":"2026-12-04T16:00:00Z",
"l7":{"listeners":[],"routes":[],"upstreams":[{"name":"pool","backends":[
{"address":"127.0.0.1:7001","state":"down"}]}],"cache":[],"rate_limit":[]}}`
)

func serveStatus(t *testing.T, code int, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status.json" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestStatusCommandExitCodes(t *testing.T) {
	tests := []struct {
		name   string
		code   int
		body   string
		args   []string
		want   int
		output string
	}{
		{"all up or draining", http.StatusOK, statusAllUp, nil, statusExitOK, "DRAINING"},
		{"backend down", http.StatusOK, statusOneDown, nil, statusExitDown, "DOWN: pool 127.0.0.1:7001"},
		{"json output", http.StatusOK, statusOneDown, []string{"--json"}, statusExitDown, `"state":"down"`},
		{"server error", http.StatusInternalServerError, "gather metrics: failed", nil, statusExitFailure, "500"},
		{"not a status document", http.StatusOK, "<html>", nil, statusExitFailure, "not a status document"},
		{"wrong tier", http.StatusOK, `{"tier":"l4","l7":{}}`, nil, statusExitFailure, "does not match"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := serveStatus(t, tc.code, tc.body)
			args := append([]string{"status", "--admin", addr, "--window", "0"}, tc.args...)
			var stdout, stderr bytes.Buffer
			if got := run(args, &stdout, &stderr); got != tc.want {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", got, tc.want, stdout.String(), stderr.String())
			}
			if out := stdout.String() + stderr.String(); !strings.Contains(out, tc.output) {
				t.Errorf("output lacks %q:\n%s", tc.output, out)
			}
		})
	}
}

func TestStatusCommandUsage(t *testing.T) {
	for _, args := range [][]string{
		{"status"},
		{"status", "--admin", "127.0.0.1"},
		{"status", "--admin", "127.0.0.1:1", "extra"},
		{"status", "--admin", "127.0.0.1:1", "--window", "-1s"},
	} {
		var stdout, stderr bytes.Buffer
		if got := run(args, &stdout, &stderr); got != statusExitUsage {
			t.Errorf("%v: exit code %d, want %d", args, got, statusExitUsage)
		}
	}
}

func TestStatusCommandUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens on addr now

	var stdout, stderr bytes.Buffer
	code := run([]string{"status", "--admin", addr, "--window", "0", "--timeout", "2s"}, &stdout, &stderr)
	if code != statusExitFailure {
		t.Errorf("exit code %d, want %d", code, statusExitFailure)
	}
	if !strings.Contains(stderr.String(), addr) {
		t.Errorf("error output does not name %s: %s", addr, stderr.String())
	}
}
