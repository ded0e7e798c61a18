// Command tidegate is the two-tier load balancer: "tidegate l4" runs the TCP
// balancer, "tidegate l7" the HTTP reverse proxy.
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"l4", "run the L4 TCP balancer", runL4},
		{"l7", "run the L7 HTTP reverse proxy", runL7},
		{"demo", "run an L4, two L7 nodes and three backends on 127.0.0.1", runDemo},
		{"check", "validate configuration files and list every error", runCheck},
		{"backend", "run a small HTTP backend that echoes each request (for demos and tests)", runBackend},
		{"status", "print the status of an L4 or L7 process from its admin listener", runStatus},
		{"version", "print the version", runVersion},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "tidegate: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: tidegate COMMAND [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run \"tidegate COMMAND --help\" for the flags of one command.")
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintf(stdout, "tidegate %s\n", version)
	return 0
}
