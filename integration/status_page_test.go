//go:build integration

package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tidegate/tidegate/shared/status"
)

// newBrowser starts headless Chromium with a fresh profile and no network
// features of its own (no sync, updates or QUIC), and returns a tab.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath(t)
	// Chromium's helper processes may still write to the profile for a
	// moment after the browser exits, which t.TempDir's cleanup reports as
	// an error, so the profile is removed here with retries.
	profile, err := os.MkdirTemp("", "tidegate-chromium-")
	if err != nil {
		t.Fatal(err)
	}

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1200, 900),
	}

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() {
		if err := chromedp.Cancel(ctx); err != nil {
			t.Logf("close chromium: %v", err)
		}
		cancel()
		cancelAlloc()
		removeWithRetry(t, profile)
	})
	// Start the browser now, so a failure to launch is reported here.
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// runStep runs actions in the tab with a deadline, failing the test with
// the step's description and the page content.
func runStep(t *testing.T, ctx context.Context, step string, within time.Duration, actions ...chromedp.Action) {
	t.Helper()
	stepCtx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	if err := chromedp.Run(stepCtx, actions...); err != nil {
		var html string
		_ = chromedp.Run(ctx, chromedp.OuterHTML("#content", &html, chromedp.ByQuery))
		t.Fatalf("%s: %v\npage content:\n%s", step, err, html)
	}
}

// clickButton waits for the button and clicks it in one step inside the
// page. A click through the DevTools protocol resolves the node first, and
// the page's refresh may replace the node in between.
func clickButton(selector string) chromedp.Action {
	return chromedp.Tasks{
		chromedp.WaitVisible(selector, chromedp.ByQuery),
		chromedp.Evaluate(fmt.Sprintf(`document.querySelector(%q).click()`, selector), nil),
	}
}

// saveScreenshot writes a full-page PNG of the tab for review.
func saveScreenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	var png []byte
	runStep(t, ctx, "screenshot "+name, 20*time.Second, chromedp.FullScreenshot(&png, 100))
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot %s is not a PNG", name)
	}
	path := filepath.Join(screenshotDir(t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot saved: %s", path)
}

// TestStatusPageL7BackendDownAndUp opens the L7 status page once and
// watches it, through its own refresh, show a backend going down and
// coming back.
func TestStatusPageL7BackendDownAndUp(t *testing.T) {
	ctx := newBrowser(t)
	s := startStatusStack(t)
	s.get(t, 20)
	admin := s.l7Admins[0]
	row := func(addr, state string) string {
		return fmt.Sprintf(`#content tr.row-%s[data-backend="%s"]`, state, addr)
	}

	runStep(t, ctx, "open the L7 status page", 20*time.Second,
		chromedp.Navigate("http://"+admin+"/status"),
		chromedp.WaitVisible(row(s.backendAddrs[0], "up"), chromedp.ByQuery),
		chromedp.WaitVisible(row(s.backendAddrs[1], "up"), chromedp.ByQuery),
		chromedp.WaitVisible("#summary.banner-ok", chromedp.ByQuery),
	)
	assertStatusCommand(t, admin, 0, "UP")

	s.backends[1].stop(5 * time.Second)
	waitTCPClosed(t, s.backendAddrs[1])
	var summary string
	runStep(t, ctx, "page shows the stopped backend down", 20*time.Second,
		chromedp.WaitVisible(row(s.backendAddrs[1], "down"), chromedp.ByQuery),
		chromedp.WaitVisible("#summary.banner-down", chromedp.ByQuery),
		chromedp.Text("#summary", &summary, chromedp.ByQuery),
	)
	if want := "echo / " + s.backendAddrs[1] + " (down)"; !strings.Contains(summary, want) {
		t.Errorf("summary %q does not name %q", summary, want)
	}
	runStep(t, ctx, "other backend stays up", 5*time.Second,
		chromedp.WaitVisible(row(s.backendAddrs[0], "up"), chromedp.ByQuery))
	// Requests keep flowing to the healthy backend, so the page has
	// request rates and latencies to show in the screenshot.
	s.get(t, 20)
	runStep(t, ctx, "page shows latency percentiles", 20*time.Second,
		chromedp.WaitVisible(`#content #upstream-echo`, chromedp.ByQuery),
		chromedp.Poll(`!document.querySelector('#upstream-echo .facts').textContent.includes('p50 –')`, nil,
			chromedp.WithPollingTimeout(15*time.Second)),
	)
	saveScreenshot(t, ctx, "l7-backend-down.png")
	assertStatusCommand(t, admin, 1, "DOWN: echo "+s.backendAddrs[1])

	s.backends[1] = startBackend(t, 1, s.backendAddrs[1])
	runStep(t, ctx, "page shows the backend up again", 20*time.Second,
		chromedp.WaitVisible(row(s.backendAddrs[1], "up"), chromedp.ByQuery),
		chromedp.WaitVisible("#summary.banner-ok", chromedp.ByQuery),
	)
	assertStatusCommand(t, admin, 0, "UP")

	// The L7 has no admin token here, so the drain button works at once.
	button := fmt.Sprintf(`#content tr[data-backend="%s"] button[data-action="drain"]`, s.backendAddrs[0])
	runStep(t, ctx, "drain a backend from the page", 20*time.Second,
		clickButton(button),
		chromedp.WaitVisible(row(s.backendAddrs[0], "draining"), chromedp.ByQuery),
		chromedp.WaitVisible("#draining", chromedp.ByQuery),
	)
	if got := backendStateOf(t, admin, s.backendAddrs[0]); got != "draining" {
		t.Errorf("/status.json state of the drained backend = %q, want draining", got)
	}
	saveScreenshot(t, ctx, "l7-backend-draining.png")
	runStep(t, ctx, "undrain the backend from the page", 20*time.Second,
		clickButton(button),
		chromedp.WaitVisible(row(s.backendAddrs[0], "up"), chromedp.ByQuery),
	)
	if got := backendStateOf(t, admin, s.backendAddrs[0]); got != "up" {
		t.Errorf("/status.json state of the undrained backend = %q, want up", got)
	}

	checkPhoneLayout(t, ctx, "l7-phone.png")
}

// checkPhoneLayout reloads the page at a phone's viewport and checks that
// the page itself does not scroll sideways: wide tables scroll inside
// their own boxes.
func checkPhoneLayout(t *testing.T, ctx context.Context, screenshot string) {
	t.Helper()
	var overflow bool
	runStep(t, ctx, "reload at a phone's viewport", 20*time.Second,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Reload(),
		chromedp.WaitVisible("#summary", chromedp.ByQuery),
		chromedp.Evaluate(`document.documentElement.scrollWidth > window.innerWidth`, &overflow),
	)
	if overflow {
		t.Errorf("the page is wider than a 390px phone viewport")
	}
	saveScreenshot(t, ctx, screenshot)
	runStep(t, ctx, "restore the desktop viewport", 10*time.Second, chromedp.EmulateReset())
}

// backendStateOf returns a backend's state from an L7's /status.json.
func backendStateOf(t *testing.T, admin, addr string) string {
	t.Helper()
	doc := fetchStatusJSON(t, admin)
	for _, u := range doc.L7.Upstreams {
		for _, b := range u.Backends {
			if b.Address == addr {
				return b.State
			}
		}
	}
	t.Fatalf("backend %s not in /status.json of %s", addr, admin)
	return ""
}

// TestStatusPageL4DrainButton drains a real with the page's button and
// checks that the L4 stops placing new connections on it, then undrains
// it.
func TestStatusPageL4DrainButton(t *testing.T) {
	ctx := newBrowser(t)
	s := startStatusStack(t)
	drained, other := s.l7Addrs[0], s.l7Addrs[1]
	row := func(addr, state string) string {
		return fmt.Sprintf(`#content tr.row-%s[data-real="%s"]`, state, addr)
	}
	button := func(addr string) string {
		return fmt.Sprintf(`#content tr[data-real="%s"] button[data-action="weight"]`, addr)
	}
	l7Conns := func(i int) float64 {
		return familySum(scrape(t, s.l7Admins[i]), "tidegate_l7_connections_total", map[string]string{"listener": "http"})
	}

	// Before the drain both reals get connections, so the check after it
	// can fail.
	before0, before1 := l7Conns(0), l7Conns(1)
	s.get(t, 40)
	if got := l7Conns(0) - before0; got == 0 {
		t.Fatalf("real %s got no connection of 40 before the drain; the test cannot tell a drain from bad luck", drained)
	}
	if got := l7Conns(1) - before1; got == 0 {
		t.Fatalf("real %s got no connection of 40 before the drain", other)
	}

	runStep(t, ctx, "open the L4 status page", 20*time.Second,
		chromedp.Navigate("http://"+s.l4Admin+"/status"),
		chromedp.WaitVisible(row(drained, "up"), chromedp.ByQuery),
		chromedp.WaitVisible(row(other, "up"), chromedp.ByQuery),
	)

	// Without the token the L4 returns 401 and the page shows an error.
	var message string
	runStep(t, ctx, "drain without a token is refused", 20*time.Second,
		clickButton(button(drained)),
		chromedp.WaitVisible("#message.error", chromedp.ByQuery),
		chromedp.Text("#message", &message, chromedp.ByQuery),
	)
	if !strings.Contains(message, "token") {
		t.Errorf("message after a refused drain = %q, want it to mention the token", message)
	}
	if w := realWeight(t, s.l4Admin, "web", drained); w != 1 {
		t.Fatalf("weight after a refused drain = %d, want 1", w)
	}

	runStep(t, ctx, "enter the token and drain", 20*time.Second,
		chromedp.SendKeys("#token", statusToken, chromedp.ByQuery),
		chromedp.Click(`#token-form button[type="submit"]`, chromedp.ByQuery),
		clickButton(button(drained)),
		chromedp.WaitVisible(row(drained, "draining"), chromedp.ByQuery),
	)
	var html string
	runStep(t, ctx, "read the page", 5*time.Second, chromedp.OuterHTML("html", &html, chromedp.ByQuery))
	if strings.Contains(html, statusToken) {
		t.Errorf("the page's HTML contains the admin token")
	}
	if w := realWeight(t, s.l4Admin, "web", drained); w != 0 {
		t.Fatalf("weight after the drain button = %d, want 0", w)
	}

	before0, before1 = l7Conns(0), l7Conns(1)
	s.get(t, 40)
	if got := l7Conns(0) - before0; got != 0 {
		t.Errorf("drained real %s got %v new connections, want 0", drained, got)
	}
	if got := l7Conns(1) - before1; got < 40 {
		t.Errorf("real %s got %v of 40 connections while the other drained, want 40", other, got)
	}
	saveScreenshot(t, ctx, "l4-real-draining.png")
	checkPhoneLayout(t, ctx, "l4-phone.png")

	runStep(t, ctx, "undrain", 20*time.Second,
		clickButton(button(drained)),
		chromedp.WaitVisible(row(drained, "up"), chromedp.ByQuery),
	)
	if w := realWeight(t, s.l4Admin, "web", drained); w != 1 {
		t.Errorf("weight after the undrain button = %d, want the configured 1", w)
	}
	before0 = l7Conns(0)
	s.get(t, 40)
	if got := l7Conns(0) - before0; got == 0 {
		t.Errorf("undrained real %s got no connection of 40", drained)
	}

	// The page's connection counts come from the L4's own counters; each
	// must equal what the L7 node behind that real accepted.
	doc := fetchStatusJSON(t, s.l4Admin)
	for i, addr := range s.l7Addrs {
		var real *status.Real
		for j := range doc.L4.VIPs[0].Reals {
			if doc.L4.VIPs[0].Reals[j].Address == addr {
				real = &doc.L4.VIPs[0].Reals[j]
			}
		}
		if real == nil {
			t.Fatalf("real %s missing from /status.json", addr)
		}
		if want := l7Conns(i); real.Connections != want {
			t.Errorf("real %s: /status.json counts %v connections, the L7 node accepted %v", addr, real.Connections, want)
		}
		if real.BytesIn == 0 || real.BytesOut == 0 {
			t.Errorf("real %s: bytes in %v, out %v, want both above 0", addr, real.BytesIn, real.BytesOut)
		}
	}

	checkStaleWhenStopped(t, ctx, s.l4)
}

// fetchStatusJSON reads and parses an admin listener's /status.json.
func fetchStatusJSON(t *testing.T, admin string) *status.Document {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := status.Parse(body)
	if err != nil {
		t.Fatalf("parse /status.json of %s: %v", admin, err)
	}
	return doc
}

// TestStatusWeightRejectsCrossOrigin sends the weight POST as a browser on
// another site would; the admin server must refuse it even with the token.
func TestStatusWeightRejectsCrossOrigin(t *testing.T) {
	s := startStatusStack(t)
	real := s.l7Addrs[0]
	url := "http://" + s.l4Admin + "/vips/web/reals/" + real + "/weight"

	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"weight": 0}`))
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Origin", "http://attacker.invalid")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Authorization", "Bearer "+statusToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site POST: status %d, want 403", resp.StatusCode)
	}
	if w := realWeight(t, s.l4Admin, "web", real); w != 1 {
		t.Errorf("weight after a cross-site POST = %d, want 1", w)
	}

	// The same request from the page's own origin goes through.
	req, _ = http.NewRequest(http.MethodPost, url, strings.NewReader(`{"weight": 0}`))
	req.Header.Set("Origin", "http://"+s.l4Admin)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Authorization", "Bearer "+statusToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("same-origin POST: status %d, want 200", resp.StatusCode)
	}
	if w := realWeight(t, s.l4Admin, "web", real); w != 0 {
		t.Errorf("weight after a same-origin POST = %d, want 0", w)
	}
	assertStatusCommand(t, s.l4Admin, 0, "DRAINING")
}

// assertStatusCommand runs "tidegate status" against admin and checks its
// exit code and that its output contains want.
func assertStatusCommand(t *testing.T, admin string, wantCode int, want string) {
	t.Helper()
	cmd := exec.Command(tidegateBin, "status", "--admin", admin, "--window", "500ms")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run tidegate status: %v", err)
	}
	if code != wantCode {
		t.Errorf("tidegate status --admin %s exited %d, want %d:\n%s", admin, code, wantCode, out)
	}
	if !strings.Contains(string(out), want) {
		t.Errorf("tidegate status output lacks %q:\n%s", want, out)
	}
}

// removeWithRetry removes dir, retrying for a few seconds while other
// processes still create files in it.
func removeWithRetry(t *testing.T, dir string) {
	t.Helper()
	var err error
	for range 50 {
		if err = os.RemoveAll(dir); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("remove chromium profile %s: %v", dir, err)
}

// checkStaleWhenStopped stops the process behind the open page and checks
// that the page shows its figures are no longer current.
func checkStaleWhenStopped(t *testing.T, ctx context.Context, p *proc) {
	t.Helper()
	p.stop(5 * time.Second)
	var message string
	runStep(t, ctx, "page marks itself stale", 20*time.Second,
		chromedp.WaitVisible("body.stale", chromedp.ByQuery),
		chromedp.Text("#message", &message, chromedp.ByQuery),
	)
	if !strings.Contains(message, "Refresh failed") {
		t.Errorf("message after the process stopped = %q, want a refresh failure", message)
	}
}
