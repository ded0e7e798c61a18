package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tidegate/tidegate/shared/status"
)

// Exit codes of "tidegate status".
const (
	statusExitOK      = 0
	statusExitDown    = 1 // a real or backend is down or ejected
	statusExitUsage   = 2
	statusExitFailure = 3 // the admin listener could not be read
)

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	adminAddr := fs.String("admin", "", "admin listener `address` host:port or http:// URL of the process to read (required)")
	window := fs.Duration("window", time.Second, "time between the two samples that rates are computed from; 0 prints totals only")
	timeout := fs.Duration("timeout", 5*time.Second, "timeout of each request to the admin listener")
	asJSON := fs.Bool("json", false, "print the /status.json document instead of tables")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: tidegate status --admin ADDR [flags]")
		fmt.Fprintln(stderr)
		fmt.Fprintln(stderr, "Prints the status of an L4 or L7 process from its admin listener. Exits 0 when")
		fmt.Fprintln(stderr, "every real or backend is up or draining, 1 when any is down or ejected, 2 on")
		fmt.Fprintln(stderr, "a usage error and 3 when the admin listener cannot be read.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return statusExitUsage
	}
	if *adminAddr == "" || fs.NArg() > 0 || *window < 0 || *timeout <= 0 {
		fs.Usage()
		return statusExitUsage
	}
	endpoint, err := statusURL(*adminAddr)
	if err != nil {
		fmt.Fprintf(stderr, "tidegate status: %v\n", err)
		return statusExitUsage
	}

	client := &http.Client{Timeout: *timeout}
	// The process computes rates against its previous sample, so a first
	// request followed by a second after the window yields rates over it.
	if *window > 0 {
		if _, _, err := fetchStatus(client, endpoint); err != nil {
			fmt.Fprintf(stderr, "tidegate status: %v\n", err)
			return statusExitFailure
		}
		time.Sleep(*window)
	}
	doc, raw, err := fetchStatus(client, endpoint)
	if err != nil {
		fmt.Fprintf(stderr, "tidegate status: %v\n", err)
		return statusExitFailure
	}

	if *asJSON {
		_, err = stdout.Write(raw)
	} else {
		err = status.WriteTable(stdout, doc)
	}
	if err != nil {
		fmt.Fprintf(stderr, "tidegate status: write output: %v\n", err)
		return statusExitFailure
	}
	if len(doc.Problems()) > 0 {
		return statusExitDown
	}
	return statusExitOK
}

// statusURL turns the --admin value into the /status.json URL. It accepts
// host:port or an http:// or https:// base URL.
func statusURL(admin string) (string, error) {
	if !strings.Contains(admin, "://") {
		if _, _, err := net.SplitHostPort(admin); err != nil {
			return "", fmt.Errorf("invalid --admin %q: want host:port or an http:// URL: %w", admin, err)
		}
		admin = "http://" + admin
	}
	u, err := url.Parse(admin)
	if err != nil {
		return "", fmt.Errorf("invalid --admin %q: %w", admin, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("invalid --admin %q: want host:port or an http:// URL", admin)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/status.json"
	return u.String(), nil
}

// maxStatusBody bounds the response read from the admin listener.
const maxStatusBody = 8 << 20

func fetchStatus(client *http.Client, endpoint string) (*status.Document, []byte, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, endpoint, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("get %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStatusBody+1))
	if err != nil {
		return nil, nil, fmt.Errorf("get %s: read body: %w", endpoint, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("get %s: %s: %s", endpoint, resp.Status, strings.TrimSpace(string(body)))
	}
	doc, err := status.Parse(body)
	if err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, nil, fmt.Errorf("get %s: the response is not a status document (is this a tidegate admin listener?): %w", endpoint, err)
		}
		return nil, nil, fmt.Errorf("get %s: %w", endpoint, err)
	}
	return doc, body, nil
}
