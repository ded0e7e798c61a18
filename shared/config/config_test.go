package config

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// wantLines returns the "# want: TEXT" lines at the top of a test file.
func wantLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if w, ok := strings.CutPrefix(sc.Text(), "# want: "); ok {
			out = append(out, w)
		}
	}
	return out
}

func TestLoadInvalidFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/invalid/*.yaml")
	if len(files) == 0 {
		t.Fatal("no files in testdata/invalid")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			_, err := Load(path)
			if err == nil {
				t.Fatal("Load succeeded, want errors")
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Load error %T is not Errors: %v", err, err)
			}
			text := err.Error()
			wants := wantLines(t, path)
			if len(wants) == 0 {
				t.Fatal("file has no # want: lines")
			}
			for _, w := range wants {
				if !strings.Contains(text, w) {
					t.Errorf("errors lack %q; got:\n%s", w, text)
				}
			}
		})
	}
}

func TestLoadValidFile(t *testing.T) {
	f, err := Load("testdata/valid/both.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := f.DrainTimeout.D(); got != 10*time.Second {
		t.Errorf("DrainTimeout = %s, want 10s", got)
	}
	if got := f.L7.Listeners[0].MaxHeaderBytes; got != 32<<10 {
		t.Errorf("MaxHeaderBytes = %d, want %d", got, 32<<10)
	}
	if got := f.L4.VIPs[0].TableSize; got != DefaultTableSize {
		t.Errorf("TableSize default = %d, want %d", got, DefaultTableSize)
	}
	if got := f.L4.VIPs[0].Reals[1].RealWeight(); got != 0 {
		t.Errorf("weight 0 read as %d", got)
	}
	if got := f.L4.VIPs[0].Reals[0].RealWeight(); got != 2 {
		t.Errorf("weight 2 read as %d", got)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		ok   bool
	}{
		{"512", 512, true},
		{"512B", 512, true},
		{"64KiB", 64 << 10, true},
		{"1MiB", 1 << 20, true},
		{"10MB", 10e6, true},
		{"2 GiB", 2 << 30, true},
		{"-1", 0, false},
		{"1.5MiB", 0, false},
		{"KiB", 0, false},
		{"9999999999TiB", 0, false},
	}
	for _, tc := range tests {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseSize(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseSize(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestParseRejectsMultipleDocuments(t *testing.T) {
	_, err := Parse([]byte("l7: {}\n---\nl4: {}\n"))
	if err == nil || !strings.Contains(err.Error(), "more than one YAML document") {
		t.Fatalf("Parse of two documents: err = %v", err)
	}
}

func TestParseDuplicateKey(t *testing.T) {
	_, err := Parse([]byte("log: {level: info}\nlog: {level: debug}\n"))
	if err == nil || !strings.Contains(err.Error(), "log") {
		t.Fatalf("Parse with a duplicate key: err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, dir := range []string{"testdata/valid", "testdata/invalid"} {
		files, _ := filepath.Glob(dir + "/*.yaml")
		for _, p := range files {
			data, _ := os.ReadFile(p)
			f.Add(data)
		}
	}
	f.Add([]byte("l4: &a {vips: *a}"))
	f.Add([]byte("l7: {listeners: [{address: '[::1]:0'}]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err == nil && file == nil {
			t.Fatal("Parse returned neither a file nor an error")
		}
		if err != nil {
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("Parse error is not a non-empty Errors: %v", err)
			}
		}
	})
}

func TestParseAliasBomb(t *testing.T) {
	doc := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	prev := "a"
	for _, name := range []string{"b", "c", "d", "e", "f", "g", "h"} {
		doc += name + ": &" + name + " [*" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + "]\n"
		prev = name
	}
	doc += "l4: {vips: [{name: *h}]}\n"
	done := make(chan error, 1)
	go func() {
		_, err := Parse([]byte(doc))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Parse of an alias bomb succeeded")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Parse of an alias bomb did not return")
	}
}

func TestParseMergeKey(t *testing.T) {
	doc := `
l7:
  listeners:
    - &base {name: a, address: "127.0.0.1:8001", idle_timeout: 7s}
    - <<: *base
      name: b
      address: "127.0.0.1:8002"
  routes: [{name: r, upstream: u}]
  upstreams: [{name: u, backends: [{address: "127.0.0.1:9000"}]}]
`
	f, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	b := f.L7.Listeners[1]
	if b.Name != "b" || b.Address != "127.0.0.1:8002" {
		t.Errorf("explicit keys lost to the merge: %+v", b)
	}
	if b.IdleTimeout.D() != 7*time.Second {
		t.Errorf("merged idle_timeout = %s, want 7s", b.IdleTimeout)
	}
}

func TestDataplaneXDPDefaults(t *testing.T) {
	f, err := Parse([]byte(`
l4:
  dataplane: {mode: xdp, interfaces: [eth0], snat_address: 10.0.0.5}
  vips:
    - {name: web, address: "10.0.0.10:80", reals: [{address: "10.0.1.2:8080"}]}
`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	d := f.L4.Dataplane
	if d.SNATPortMin != DefaultSNATPortMin || d.SNATPortMax != DefaultSNATPortMax {
		t.Errorf("SNAT ports = %d-%d, want %d-%d", d.SNATPortMin, d.SNATPortMax, DefaultSNATPortMin, DefaultSNATPortMax)
	}
	if d.FlowTableSize != DefaultFlowTableSize {
		t.Errorf("FlowTableSize = %d, want %d", d.FlowTableSize, DefaultFlowTableSize)
	}
	if d.PinPath != DefaultPinPath {
		t.Errorf("PinPath = %q, want %q", d.PinPath, DefaultPinPath)
	}
	if d.ClosingTimeout != DefaultClosingTimeout {
		t.Errorf("ClosingTimeout = %s, want %s", d.ClosingTimeout, DefaultClosingTimeout)
	}
}
