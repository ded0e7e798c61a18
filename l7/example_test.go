package l7_test

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"

	"github.com/tidegate/tidegate/l7"
	"github.com/tidegate/tidegate/l7/conninfo"
	"github.com/tidegate/tidegate/shared/config"
)

// This example shows how a policy package plugs into the proxy: a route
// middleware that rejects clients by their real address, and a connection
// wrapper that reads HTTP/1.x bytes before net/http parses them.
func ExampleWithMiddleware() {
	denied := netip.MustParsePrefix("192.0.2.0/24")
	denyDocNet := func(cfg *config.L7, rt *config.Route, next http.Handler) (http.Handler, error) {
		if rt.Name != "admin" {
			return next, nil // this middleware applies to one route only
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if denied.Contains(conninfo.ClientAddr(r)) {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
		}), nil
	}
	inspect := func(c net.Conn) net.Conn { return c } // a framing checker would wrap c here

	f, err := config.Load("/etc/tidegate/l7.yaml")
	if err != nil {
		return
	}
	srv, err := l7.New(f, slog.Default(), nil,
		l7.WithConnWrapper(inspect),
		l7.WithMiddleware("access", denyDocNet))
	if err != nil {
		return
	}
	_ = srv.Start()
}
