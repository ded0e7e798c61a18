package config_test

import (
	"fmt"

	"github.com/tidegate/tidegate/shared/config"
)

// A route's policy replaces the listener-wide default section by section.
func ExamplePolicy_Merge() {
	f, err := config.Parse([]byte(`
l7:
  listeners:
    - name: web
      address: 127.0.0.1:8080
      policy:
        compress: {}
        rate_limit: {requests: 100, burst: 50}
  upstreams: [{name: app, backends: [{address: 127.0.0.1:9000}]}]
  routes:
    - name: login
      upstream: app
      policy:
        rate_limit: {requests: 5, per: 1m, burst: 5, key: "header:X-Api-Key"}
        access: {methods: [POST]}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	p := f.L7.Listeners[0].Policy.Merge(f.L7.Routes[0].Policy)
	fmt.Println("rate:", p.RateLimit.Requests, "per", p.RateLimit.Per, "key", p.RateLimit.Key)
	fmt.Println("methods:", p.Access.Methods)
	fmt.Println("compress:", p.Compress.Encodings)
	// Output:
	// rate: 5 per 1m0s key header:X-Api-Key
	// methods: [POST]
	// compress: [zstd br gzip]
}

func ExampleTemplateVariables() {
	names, err := config.TemplateVariables("https://${hostname}${request_uri}")
	fmt.Println(names, err)
	_, err = config.TemplateVariables("${client}")
	fmt.Println(err)
	// Output:
	// [hostname request_uri] <nil>
	// unknown variable ${client} (known: client_ip, request_id, host, hostname, tls_sni, scheme, method, path, query, request_uri, route)
}
