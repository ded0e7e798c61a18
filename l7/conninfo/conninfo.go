// Package conninfo carries what the L7 listener learned about a client
// connection (the real client address from the PROXY header, the L4
// connection ID, TLS details) to request handlers through the request
// context. Middlewares import it instead of the l7 package, so they cannot
// form an import cycle with the server that runs them.
package conninfo

import (
	"context"
	"net/http"
	"net/netip"
)

// Info describes one client connection. The listener fills it in before the
// first request and never changes it afterwards, so handlers may read it
// without locking.
type Info struct {
	// Client is the client address: the source from the PROXY header when
	// the peer is a trusted L4 node, otherwise the TCP peer.
	Client netip.AddrPort
	// Peer is the TCP peer of the connection (the L4 node when a PROXY
	// header was sent).
	Peer netip.AddrPort
	// Local is the address the connection arrived on: the destination from
	// the PROXY header when one was sent, otherwise the local socket.
	Local netip.AddrPort
	// UniqueID is the PROXY v2 PP2_TYPE_UNIQUE_ID TLV, empty when absent.
	// The L4 tier sets it so one connection can be followed across tiers.
	UniqueID string
	// Listener is the name of the listener that accepted the connection.
	Listener string
	// TLS is true when the proxy terminated TLS on this connection.
	TLS bool
	// TLSVersion is the negotiated version, for example "1.3".
	TLSVersion string
	// SNI is the server name the client sent in its TLS ClientHello.
	SNI string
	// ALPN is the negotiated application protocol ("h2", "http/1.1").
	ALPN string
}

type contextKey struct{}

// NewContext returns a copy of ctx that carries info.
func NewContext(ctx context.Context, info *Info) context.Context {
	return context.WithValue(ctx, contextKey{}, info)
}

// FromContext returns the connection info stored in ctx, or nil.
func FromContext(ctx context.Context) *Info {
	info, _ := ctx.Value(contextKey{}).(*Info)
	return info
}

// FromRequest returns the connection info of r, or nil when r did not come
// through an L7 listener (for example in a unit test).
func FromRequest(r *http.Request) *Info {
	return FromContext(r.Context())
}

// ClientAddr returns the real client address of r. Without connection info
// it falls back to the host part of r.RemoteAddr, and returns the zero Addr
// when that does not parse.
func ClientAddr(r *http.Request) netip.Addr {
	if info := FromRequest(r); info != nil {
		return info.Client.Addr()
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// UniqueID returns the PROXY v2 unique ID of r's connection, or "".
func UniqueID(r *http.Request) string {
	if info := FromRequest(r); info != nil {
		return info.UniqueID
	}
	return ""
}

// SNI returns the TLS server name of r's connection, or "".
func SNI(r *http.Request) string {
	if info := FromRequest(r); info != nil {
		return info.SNI
	}
	return ""
}
