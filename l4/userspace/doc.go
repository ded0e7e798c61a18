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
// The idle timeout uses read deadlines for silence in both directions and,
// on Linux, TCP_USER_TIMEOUT for a peer that stops reading.
package userspace
