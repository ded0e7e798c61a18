package main

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckListsEveryErrorPath(t *testing.T) {
	files, _ := filepath.Glob("../../shared/config/testdata/invalid/*.yaml")
	if len(files) == 0 {
		t.Fatal("no invalid config fixtures found")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run([]string{"check", path}, &stdout, &stderr); code != 1 {
				t.Fatalf("check exit code = %d, want 1; output:\n%s%s", code, stdout.String(), stderr.String())
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(bytes.NewReader(data))
			for sc.Scan() {
				want, ok := strings.CutPrefix(sc.Text(), "# want: ")
				if ok && !strings.Contains(stdout.String(), want) {
					t.Errorf("check output lacks %q:\n%s", want, stdout.String())
				}
			}
		})
	}
}

func TestCheckValidFile(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"check", "../../shared/config/testdata/valid/both.yaml"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("check exit code = %d, want 0; output:\n%s%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "ok (l4 l7)") {
		t.Errorf("check output = %q, want it to name both tiers", stdout.String())
	}
}

func TestUnknownCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"frobnicate"}, &stdout, &stderr); code != 2 {
		t.Errorf("exit code = %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), `unknown command "frobnicate"`) {
		t.Errorf("stderr = %q", stderr.String())
	}
}

func TestHelpNamesUnits(t *testing.T) {
	for _, cmd := range []string{"l4", "l7", "demo", "backend"} {
		var stdout, stderr bytes.Buffer
		run([]string{cmd, "--help"}, &stdout, &stderr)
		if !strings.Contains(stderr.String(), "Usage: tidegate "+cmd) {
			t.Errorf("%s --help printed no usage line:\n%s", cmd, stderr.String())
		}
	}
}
