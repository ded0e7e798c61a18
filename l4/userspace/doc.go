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
// NOTE: the idle timeout uses read deadlines only. A write that blocks
// because the peer stopped reading is ended by the other direction's idle
// timeout, unless that direction has already finished with a FIN.
package userspace
