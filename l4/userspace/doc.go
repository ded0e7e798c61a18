// Package userspace is the L4 engine that runs everywhere without
// privileges. For each VIP it accepts TCP connections, asks the control
// plane ([Picker], implemented by *l4.VIP) for reals in Maglev preference
// order, dials them with a timeout until one answers, writes the PROXY
// header from package proxyheader, and then copies both directions with
// io.Copy between *net.TCPConn values, so the kernel splices the bytes.
// A FIN from either side is passed on as a half-close.
//
// The engine owns no selection state: weights, health and tables live in
// package l4, so the XDP engine can share them.
package userspace
