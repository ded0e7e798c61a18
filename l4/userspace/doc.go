// Package userspace is the L4 engine that runs everywhere without
// privileges. For each VIP it accepts TCP connections and gets reals in
// Maglev preference order from the control plane ([Picker], implemented by
// *l4.VIP). It dials them with a timeout until one accepts, writes the PROXY
// header from package proxyheader, and then copies both directions, passing
// a FIN from either side on as a half-close.
//
// On Linux each direction waits for readability in the runtime's poller
// without a buffer or a pipe, so an idle flow holds its two sockets and two
// goroutines and nothing else. It moves its first bytes with read and
// write, and switches to splice through a pooled pipe once a read fills
// the 16 KiB buffer. Elsewhere it copies with io.Copy.
//
// The engine owns no selection state: weights, health and tables live in
// package l4, so the XDP engine can share them.
//
// The idle timeout samples the client socket's TCP_INFO byte counters, so it
// counts bytes moving in either direction, including inside one long splice,
// and it also ends a connection whose client stopped reading.
package userspace
