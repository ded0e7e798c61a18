// Package userspace is the L4 engine that runs everywhere without
// privileges. For each VIP it accepts TCP connections and gets reals in
// Maglev preference order from the control plane ([Picker], implemented by
// *l4.VIP). It dials them with a timeout until one accepts, writes the PROXY
// header from package proxyheader, and then copies both directions with
// io.Copy between *net.TCPConn values, so the kernel splices the bytes.
// A FIN from either side is passed on as a half-close.
//
// The engine owns no selection state: weights, health and tables live in
// package l4, so the XDP engine can share them.
//
// The idle timeout samples the client socket's TCP_INFO byte counters, so it
// counts bytes moving in either direction, including inside one long splice,
// and it also ends a connection whose client stopped reading.
package userspace
