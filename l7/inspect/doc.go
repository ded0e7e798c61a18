// Package inspect checks requests before they reach routing or a backend.
//
// It has two layers. [WrapConn] wraps an HTTP/1.x connection and validates
// the raw byte stream before net/http parses it, because net/http accepts
// framings that other servers read differently (it ignores Content-Length
// next to chunked and accepts bare LF line ends). It rejects, with the
// status in brackets and the connection closed:
//
//   - Content-Length together with Transfer-Encoding, several or invalid
//     Content-Length values, a Transfer-Encoding other than a single final
//     "chunked", invalid chunk-size lines, a missing CRLF after chunk data,
//     bare LF or bare CR line ends, obsolete line folding, whitespace before
//     a header colon, control characters in header values, a missing or
//     repeated Host [400]; codings before "chunked" [501];
//   - a request line or target above the limits [414], header bytes or
//     count above the limits [431], a body above the limit, also when a
//     chunked body crosses it mid-stream [413];
//   - a head that takes longer than the header timeout, or a body that
//     stalls longer than the body timeout [408].
//
// The second layer is HTTP middleware. [Normalize] runs before routing: it
// rewrites the path with [NormalizePath] and rejects encoded slashes and
// paths above the root (400), an HTTP/2 method that is not a token or an
// authority or query with a space or control byte (400), and expectations
// other than 100-continue (417). [Access] runs per route: CIDR allow and deny lists on the real
// client address (403), allowed methods (405 with Allow) and required
// headers (400). No rejection reads the body, so a client that sent Expect:
// 100-continue never sends it.
//
// Wiring, per listener:
//
//	metrics := inspect.NewMetrics(adminRegistry)
//	rep := inspect.NewReporter(metrics, logger)
//	lim := inspect.LimitsFromConfig(listenerCfg)
//	// in Accept, for HTTP/1.x connections (after TLS when ALPN chose http/1.1):
//	conn = inspect.WrapConn(conn, lim, rep.Report)
//	handler = inspect.Normalize(rep, clientAddr, router)
//
// and per route, when the merged policy has an access section:
//
//	acc, err := inspect.NewAccess(policy.Access, clientAddr, rep)
//	routeHandler = acc.Middleware(routeHandler)
//
// Access-log fields: a rejected request is counted in
// tidegate_l7_inspect_rejected_total{reason,status} and logged (rate
// limited) as "request rejected" with reason, status and client. Requests
// rejected by [WrapConn] never reach the HTTP server, so they have no
// access-log line of their own.
package inspect
