// Package rewrite changes requests before they reach the backend and
// responses before they reach the client, or responds in place of the
// backend.
//
// A route's rewrite policy may:
//
//   - rewrite the path: strip a prefix, replace a prefix (both matched on
//     segment boundaries) or replace a regular expression match with a
//     template that uses capture groups ($1, ${name}). The query is kept and
//     the result is normalised again like an incoming path;
//   - redirect with status 301, 302, 307 or 308 to a location template,
//     for example "https://${hostname}${request_uri}" for HTTP to HTTPS;
//   - add, set and remove request and response headers with templates
//     (setting Host changes the request's Host);
//   - send a fixed response (status, headers, body) without a backend, for
//     maintenance pages or health endpoints.
//
// Templates may use ${client_ip}, ${request_id}, ${host}, ${hostname} (Host
// without port), ${tls_sni}, ${scheme}, ${method}, ${path} (escaped),
// ${query}, ${request_uri} and ${route}. "$$" is a dollar sign. Expanded
// values lose CR, LF and NUL, so a client cannot inject header lines.
//
// Wiring, per route whose merged policy has a rewrite section, inside the
// access rules and rate limit and outside the proxy handler:
//
//	rw, err := rewrite.New(policy.Rewrite, rewrite.Options{
//		Route: route.Name, ClientAddr: clientAddr, RequestID: requestID,
//		TLSState: tlsState, Registerer: adminRegistry,
//		OnAction: func(r *http.Request, action, detail string) { ... },
//	})
//	handler = rw.Middleware(handler)
//
// Metrics: tidegate_l7_rewrite_actions_total{route,action}, where action
// is path, redirect, fixed_response, request_headers, response_headers or
// rejected.
//
// Access-log fields, from OnAction: rewrite_path (the path sent to the
// backend), redirect_location, and fixed_response (its status).
package rewrite
