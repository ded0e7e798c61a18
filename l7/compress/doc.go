// Package compress compresses responses with gzip, brotli or zstd.
//
// The encoding is chosen by [Negotiate] from Accept-Encoding (q-values,
// "*", q=0) and the route's server preference order. Encoders come from
// pools keyed by encoding and level: gzip and zstd from
// github.com/klauspost/compress, brotli from github.com/andybalholm/brotli.
// Each zstd encoder runs on one goroutine with a capped window, so its
// memory is bounded.
//
// A response is compressed only when all of these hold:
//
//   - the request is not HEAD and has no Range;
//   - the status is not 1xx, 204, 206 or 304;
//   - the response has no Content-Encoding (other than identity) and no
//     Content-Range, and Cache-Control has no no-transform;
//   - the Content-Type is set, is not text/event-stream and matches the
//     allowlist;
//   - the body reaches the minimum size, by its Content-Length or, without
//     one, by the bytes written before the first flush.
//
// Event streams and other unlisted types
// pass through, and each flush reaches the client at once.
//
// A compressed response loses Content-Length and Accept-Ranges, gets
// Content-Encoding, and a strong ETag becomes weak. Every response whose
// type qualifies gets "Vary: Accept-Encoding", also when this client
// accepted no encoding, so caches keep the variants apart.
//
// Wiring, per route whose merged policy has a compress section:
//
//	c, err := compress.New(policy.Compress, compress.Options{
//		Route: route.Name, Registerer: adminRegistry,
//		OnEncode: func(r *http.Request, enc string) { ... },
//	})
//	handler = c.Middleware(handler) // outside the proxy handler
//
// Metrics: tidegate_l7_compress_responses_total{route,encoding},
// tidegate_l7_compress_input_bytes_total and
// tidegate_l7_compress_output_bytes_total with the same labels.
//
// Access-log field: content_encoding, the encoding passed to OnEncode
// (absent when the response was not compressed).
package compress
