// Package topology builds a small network of Linux network namespaces for
// end-to-end tests and runs the real tidegate binary inside it.
//
// A topology has client hosts, one or more L4 nodes, two or more L7 nodes and
// backends, each in its own network namespace, joined by three Ethernet
// segments. Each segment is a bridge in a separate switch namespace, and every
// host reaches it over a veth pair:
//
//	clients ──front 10.99.1.0/24── L4 nodes ──mid 10.99.2.0/24── L7 nodes ──back 10.99.3.0/24── backends
//
// The VIP 10.99.10.1 sits on the loopback device of every L4 node. Clients
// route it through the L4 nodes (equal-cost multipath when there are
// several), and the L4 nodes forward IP packets, so the XDP engine's
// bpf_fib_lookup finds next hops. Every address lies in 10.99.0.0/16 and
// exists only inside these namespaces, so nothing a test sends leaves them.
//
// Namespace names start with "tge-" and the PID of the test process, which
// lets [Sweep] remove what a crashed or killed run left behind without
// touching a topology that another test process is still using. [New]
// registers teardown with testing.TB.Cleanup and also tears down on SIGINT
// and SIGTERM, so an interrupted run leaves no namespaces, veth pairs, BPF
// pins or processes behind.
//
// [Topology.StartChain] issues certificates from a throwaway [CA] and writes
// the configurations from [L4File] and [L7File], which a test may change
// directly or with YAML [Patch] values. It then starts backends, L7 nodes and
// L4 nodes and waits for each to report ready on its admin /readyz. Tests of the XDP engine call
// [Topology.AttachXDPPass] so that frames redirected into a veth arrive.
//
// Building a topology needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN). Tests
// that use it carry the build tags "integration && linux" and call
// [RequireRoot] first, which skips when not root unless CI=true.
package topology
