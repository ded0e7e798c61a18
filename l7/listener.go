package l7

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/tidegate/tidegate/l7/conninfo"
	"github.com/tidegate/tidegate/shared/config"
)

// listenerSettings are the parts of a listener's configuration that a
// reload may change while the socket stays bound.
type listenerSettings struct {
	cfg               config.Listener
	proxyTrusted      []netip.Prefix
	trustedForwarders []netip.Prefix
	certs             *certStore // nil without TLS
}

func newListenerSettings(c config.Listener) (*listenerSettings, error) {
	ls := &listenerSettings{cfg: c}
	var err error
	if ls.proxyTrusted, err = parsePrefixes(c.ProxyProtocol.Trusted); err != nil {
		return nil, err
	}
	if ls.trustedForwarders, err = parsePrefixes(c.TrustedForwarders); err != nil {
		return nil, err
	}
	if c.TLS != nil {
		if ls.certs, err = newCertStore(c.TLS); err != nil {
			return nil, err
		}
	}
	return ls, nil
}

// parsePrefixes parses validated CIDRs and single addresses.
func parsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func containsAddr(prefixes []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// listener accepts TCP connections and hands each to a goroutine of its
// own, which reads the PROXY header and completes the TLS handshake. Ready
// connections reach the http.Server through Accept. Slow or hostile peers
// therefore hold only their own goroutine, never the accept loop.
type listener struct {
	name     string
	server   *Server
	ln       net.Listener
	settings atomic.Pointer[listenerSettings]
	srv      *http.Server
	logger   *slog.Logger
	// entry is routeRequest inside the pre-routing wrappers.
	entry http.Handler

	ready     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
	// infos passes each connection's details from prepare to the
	// http.Server's ConnContext hook, keyed by the net.Conn Accept returns.
	infos sync.Map
	// fast tracks the connections of the HTTP/1.1 fast path.
	fast fastConns
}

// maxH2FrameSize is the largest HTTP/2 frame a listener reads, which it
// advertises in SETTINGS_MAX_FRAME_SIZE.
const maxH2FrameSize = 16 << 10

func newListener(s *Server, ls *listenerSettings) *listener {
	c := ls.cfg
	l := &listener{
		name:   c.Name,
		server: s,
		logger: s.logger.With("listener", c.Name),
		ready:  make(chan net.Conn),
		closed: make(chan struct{}),
	}
	l.settings.Store(ls)
	l.entry = http.HandlerFunc(l.routeRequest)
	for i := len(s.opts.preRouting) - 1; i >= 0; i-- {
		l.entry = s.opts.preRouting[i](l.entry)
	}

	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	if c.TLS != nil {
		protocols.SetHTTP2(true)
	}
	if c.H2C {
		protocols.SetUnencryptedHTTP2(true)
	}
	l.srv = &http.Server{
		Handler:           l,
		ReadHeaderTimeout: c.ReadHeaderTimeout.D(),
		ReadTimeout:       c.ReadTimeout.D(),
		WriteTimeout:      c.WriteTimeout.D(),
		IdleTimeout:       c.IdleTimeout.D(),
		MaxHeaderBytes:    int(c.MaxHeaderBytes),
		Protocols:         protocols,
		// 16 KiB is RFC 9113's initial SETTINGS_MAX_FRAME_SIZE. Go's
		// default of 1 MiB would let one HEADERS or DATA frame of a
		// client take a megabyte of the read buffer.
		HTTP2:       &http.HTTP2Config{MaxReadFrameSize: maxH2FrameSize},
		ConnContext: l.connContext,
		ConnState:   l.connState,
		ErrorLog:    slog.NewLogLogger(l.logger.Handler(), slog.LevelDebug),
	}
	return l
}

func (l *listener) listen() error {
	ln, err := net.Listen("tcp", l.settings.Load().cfg.Address)
	if err != nil {
		return err
	}
	l.ln = ln
	return nil
}

func (l *listener) serve() {
	go l.acceptLoop()
	if err := l.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.logger.Error("listener stopped", "err", err)
	}
}

// Accept implements net.Listener for the http.Server.
func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops accepting. Connections still in their PROXY or TLS stage are
// closed by their goroutines.
func (l *listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.closed)
		err = l.ln.Close()
	})
	return err
}

// Addr implements net.Listener.
func (l *listener) Addr() net.Addr { return l.ln.Addr() }

func (l *listener) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return
			default:
			}
			// Running out of file descriptors is temporary, so back off
			// as net/http does instead of spinning.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.logger.Warn("accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		l.server.metrics.connections.WithLabelValues(l.name).Inc()
		go l.prepare(c)
	}
}

// prepare runs the PROXY and TLS stages of one connection and hands it to
// the http.Server, or closes it.
func (l *listener) prepare(raw net.Conn) {
	ls := l.settings.Load()
	peer := addrPort(raw.RemoteAddr())
	trusted := containsAddr(ls.proxyTrusted, peer.Addr())
	policy := proxyproto.REJECT
	if trusted {
		policy = proxyproto.REQUIRE
	}
	// go-proxyproto v0.15.0 rejects a v1 header that does not arrive in one
	// read, so v1GatherConn collects it first. A v2 header, which the L4
	// tier sends, may arrive split without help.
	pc := proxyproto.NewConn(&v1GatherConn{Conn: raw}, proxyproto.WithPolicy(policy),
		proxyproto.ValidateHeader(validateProxyHeader),
		proxyproto.SetReadHeaderTimeout(ls.cfg.ProxyProtocol.Timeout.D()))
	// A zero-length read runs header detection and returns its verdict
	// without consuming request bytes.
	if _, err := pc.Read(nil); err != nil {
		l.rejectProxy(peer, trusted, err)
		raw.Close()
		return
	}

	info := &conninfo.Info{
		Client:   addrPort(pc.RemoteAddr()),
		Peer:     peer,
		Local:    addrPort(pc.LocalAddr()),
		Listener: l.name,
	}
	if h := pc.ProxyHeader(); h != nil {
		info.UniqueID = uniqueID(h)
	}

	var conn net.Conn = pc
	if ls.certs != nil {
		tc := tls.Server(pc, ls.certs.config)
		ctx, cancel := context.WithTimeout(context.Background(), ls.cfg.ReadHeaderTimeout.D())
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			l.server.metrics.tlsErrors.WithLabelValues(l.name).Inc()
			if l.logger.Enabled(context.Background(), slog.LevelDebug) {
				l.logger.Debug("tls handshake failed", "client", info.Client.String(), "err", err)
			}
			tc.Close()
			return
		}
		st := tc.ConnectionState()
		info.TLS = true
		info.TLSVersion = tlsVersionName(st.Version)
		info.SNI = st.ServerName
		info.ALPN = st.NegotiatedProtocol
		l.server.metrics.tlsHandshakes.WithLabelValues(l.name, info.TLSVersion, boolLabel(st.DidResume)).Inc()
		conn = tc
	}
	// HTTP/2 over TLS must stay a *tls.Conn for net/http to serve it, and
	// the wrappers expect HTTP/1.x bytes, so they apply to everything else.
	if info.ALPN != "h2" {
		for _, wrap := range l.server.opts.connWrappers {
			conn = wrap(&ls.cfg, conn)
		}
	}

	if l.fastEnabled(ls, info) {
		if conn = l.serveFast(conn, info); conn == nil {
			return
		}
	}

	l.infos.Store(conn, info)
	select {
	case l.ready <- conn:
	case <-l.closed:
		l.infos.Delete(conn)
		conn.Close()
	}
}

func (l *listener) rejectProxy(peer netip.AddrPort, trusted bool, err error) {
	reason := "invalid"
	switch {
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		reason = "missing"
	case errors.Is(err, proxyproto.ErrSuperfluousProxyHeader):
		reason = "untrusted_sender"
	}
	l.server.metrics.proxyHeaderError.WithLabelValues(l.name, reason).Inc()
	// Every peer can cause this, so it is not logged above Debug.
	if l.logger.Enabled(context.Background(), slog.LevelDebug) {
		l.logger.Debug("proxy header rejected", "peer", peer.String(), "trusted", trusted, "reason", reason, "err", err)
	}
}

// uniqueID returns the PP2_TYPE_UNIQUE_ID TLV as text when it is printable
// and as hex otherwise.
func uniqueID(h *proxyproto.Header) string {
	tlvs, err := h.TLVs()
	if err != nil {
		return ""
	}
	for _, t := range tlvs {
		if t.Type != proxyproto.PP2_TYPE_UNIQUE_ID || len(t.Value) == 0 {
			continue
		}
		for _, c := range t.Value {
			if c < 0x21 || c > 0x7e {
				return hex.EncodeToString(t.Value)
			}
		}
		return string(t.Value)
	}
	return ""
}

func (l *listener) connContext(ctx context.Context, c net.Conn) context.Context {
	if v, ok := l.infos.LoadAndDelete(c); ok {
		return conninfo.NewContext(ctx, v.(*conninfo.Info))
	}
	return ctx
}

func (l *listener) connState(_ net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		l.server.metrics.activeConns.WithLabelValues(l.name).Inc()
	case http.StateClosed, http.StateHijacked:
		l.server.metrics.activeConns.WithLabelValues(l.name).Dec()
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func boolLabel(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
