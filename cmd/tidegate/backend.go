package main

import (
	"flag"
	"fmt"
	"io"
	"net"

	"github.com/tidegate/tidegate/shared/echo"
)

func runBackend(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "`address` host:port to serve HTTP on")
	name := fs.String("name", "", "backend `name` reported in responses and the X-Backend header (default: the listen address)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: tidegate backend [--listen ADDR] [--name NAME]")
		fmt.Fprintln(stderr)
		fmt.Fprintln(stderr, "Serves HTTP and responds to every request with JSON describing what it received,")
		fmt.Fprintln(stderr, "forwarding headers included. Meant for demos and tests.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "tidegate backend: %v\n", err)
		return 1
	}
	if *name == "" {
		*name = ln.Addr().String()
	}
	fmt.Fprintf(stdout, "backend %s listening on %s\n", *name, ln.Addr())
	if err := echo.Serve(ln, &echo.Handler{Name: *name}); err != nil {
		fmt.Fprintf(stderr, "tidegate backend: %v\n", err)
		return 1
	}
	return 0
}
