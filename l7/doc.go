// Package l7 is the L7 proxy server: listeners that accept PROXY protocol
// from trusted L4 nodes, TLS termination, HTTP/1.1, HTTP/2 and h2c, routing
// and forwarding to upstream pools. [New] builds a [Server] from the l7
// section of a configuration file. The server implements the lifecycle
// service (Start, Reload, Drain) and Reopen for the access log.
//
// # Connection pipeline
//
// Each listener accepts TCP connections on one goroutine and hands every
// connection to a goroutine of its own, which
//
//  1. reads the PROXY v1 or v2 header with go-proxyproto: required from
//     peers in proxy_protocol.trusted, rejected from everyone else, read
//     within proxy_protocol.timeout;
//  2. completes the TLS handshake when the listener has certificates
//     (certificate chosen by SNI, ALPN h2 and http/1.1), within
//     read_header_timeout;
//  3. applies the connection wrappers (see below) unless ALPN chose h2;
//  4. passes the connection to the listener's http.Server.
//
// A slow or hostile peer therefore holds only its own goroutine.
//
// # Request path
//
// For every request the listener sets X-Request-Id, keeping a valid inbound
// one. It responds with 421 when the Host is served under a different
// certificate than the connection's SNI, and with 404 when no route
// matches. Otherwise it calls the first matching route's handler: the
// middleware chain around an httputil.ReverseProxy whose transport is the
// route's [upstream.Pool]. The
// reverse proxy removes hop-by-hop headers and those named in Connection in
// both directions; the rewrite step builds X-Forwarded-For, X-Real-IP,
// X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-Port and Forwarded from
// the client address, keeping inbound copies only from trusted_forwarders.
// Errors map to status codes in statusForError. Every request ends with one
// access-log line and its metrics.
//
// # Hook points for other packages
//
// Connection wrapper: [WithConnWrapper] registers a func(net.Conn) net.Conn
// that sees each connection after the PROXY and TLS stages and before
// net/http reads it. It receives HTTP/1.x connections (cleartext or TLS)
// and, on h2c listeners, cleartext connections that may carry the HTTP/2
// preface. It never sees HTTP/2 over TLS, because net/http serves HTTP/2
// only on a *tls.Conn it can type-assert. With a wrapper installed,
// r.TLS is nil on HTTP/1.x over TLS; use [conninfo] for TLS details.
// [WithListenerConnWrapper] registers the same kind of wrapper but also
// passes the accepting listener's configuration (as of the last reload),
// so it can apply that listener's request limits.
//
// Pre-routing: [WithPreRouting] wraps the routing step of every request on
// every listener. It runs after the request ID is set and before the route
// is matched, so it may change the path used for routing or respond
// itself. It is built once in [New], and reloads do not rebuild it.
//
// Route middleware: [WithMiddleware] registers a [Middleware] builder. The
// server calls each builder for every route at start and on every reload,
// and chains the results around the upstream handler in registration order
// (the first registered is outermost). A builder reads its own settings
// from the *config.L7 it receives and returns next unchanged for routes it
// does not apply to. Middlewares run after routing, so they see the route's
// name, and before forwarding headers are built.
// When the handler a builder returns implements io.Closer, the server
// closes it once a reload has replaced it, or at the end of Drain, so a
// builder can stop goroutines such as a rate limiter's sweeper.
//
// Access-log fields: a middleware fills in the policy fields of its
// request's access-log line (rate-limit result, rewritten path, redirect
// location, fixed response, content encoding) through [LogFields].
//
// Listener settings: [ListenerConfig] returns the configuration of the
// listener that received a request, for limits that a pre-routing wrapper
// enforces.
//
// Connection details: package [conninfo] carries the real client address,
// the TCP peer, the PROXY v2 unique ID, the listener name, and the TLS
// version, SNI and ALPN in the request context. Middlewares call
// conninfo.ClientAddr(r), conninfo.UniqueID(r) and conninfo.SNI(r); the
// package imports nothing from l7, so it causes no import cycle.
//
// # Reload and drain
//
// Reload swaps routes, pools, middleware chains, the access log, PROXY
// trust lists, trusted forwarders and certificates at once; changing the
// set of listeners, their addresses, or TLS and h2c on a listener needs a
// restart. Certificates and session ticket keys are also reloaded when
// files in their directories change. Drain closes the listeners, lets
// http.Server.Shutdown send GOAWAY to HTTP/2 clients, close idle
// keep-alive connections and wait for requests in flight, then waits for
// upgraded (hijacked) connections, which Shutdown does not track, and
// closes whatever remains when the drain timeout ends.
package l7
