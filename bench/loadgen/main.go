// Command loadgen generates the two benchmark loads that wrk and h2load
// cannot. The first is TLS connections that each make a full or a resumed
// handshake. The second is many idle keep-alive connections, held open
// while the harness reads a proxy's resident memory.
//
//	loadgen handshake -addr 127.0.0.1:18443 -ca cert.pem -c 16 -d 5s [-resume]
//	loadgen hold -addr 127.0.0.1:18101 -n 10000 [-sources 127.0.0.1,127.0.0.2]
//
// It rejects any target outside 127.0.0.0/8 because the benchmarks run on
// one machine and must never send traffic elsewhere.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "handshake":
		return runHandshake(args[1:], stdout, stderr)
	case "hold":
		return runHold(args[1:], stdout, stderr)
	default:
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: loadgen handshake|hold [flags]")
	fmt.Fprintln(w, "  handshake  open TLS connections for a fixed time, one request each, and report handshakes per second")
	fmt.Fprintln(w, "  hold       open N keep-alive connections, make one request on each, and keep them idle")
}
