package inspect

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/tidegate/tidegate/shared/config"
)

// tlsListener terminates TLS and then applies WrapConn, the order the L7
// core uses for HTTP/1.1 over TLS.
type tlsListener struct {
	net.Listener
	cfg      *tls.Config
	lim      Limits
	onReject func(Rejection)
}

func (l tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := tls.Server(c, l.cfg)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return l.Accept()
	}
	_ = tc.SetDeadline(time.Time{})
	return WrapConn(tc, l.lim, l.onReject), nil
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("create certificate: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestWrapConnOverTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	rec := &recorder{}
	rejections := make(chan Rejection, 4)
	srv := &http.Server{Handler: rec, ReadHeaderTimeout: 5 * time.Second}
	cfg := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"http/1.1"}}
	go srv.Serve(tlsListener{ln, cfg, testLimits, func(r Rejection) { rejections <- r }})
	t.Cleanup(func() { srv.Close() })

	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatalf("tls dial: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("valid request over TLS = %v, %v; want 200", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	io.WriteString(c, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("second response: %v", err)
	}
	if resp.StatusCode != 400 {
		t.Errorf("smuggling attempt over TLS: status %d, want 400", resp.StatusCode)
	}
	if rej := <-rejections; rej.Reason != ReasonCLAndTE {
		t.Errorf("reason = %q, want %q", rej.Reason, ReasonCLAndTE)
	}
	if n := rec.hits.Load(); n != 1 {
		t.Errorf("backend saw %d requests, want 1", n)
	}
}

// TestWrapConnExpectContinueChunked checks that a chunked request with
// Expect: 100-continue is released at once: the client sends no chunk
// before the interim response, so holding the head would deadlock.
func TestWrapConnExpectContinueChunked(t *testing.T) {
	ts := startServer(t, testLimits, nil)
	c := dial(t, ts.addr)
	io.WriteString(c, "POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("read interim response: %v", err)
	}
	if line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("first line = %q, want 100 Continue", line)
	}
	br.ReadString('\n')
	io.WriteString(c, "3\r\nabc\r\n0\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "got POST /e len=3" {
		t.Errorf("body = %q, want the handler to read 3 bytes", body)
	}
}

func TestLimitsFromConfig(t *testing.T) {
	f, err := config.Parse([]byte(`
l7:
  listeners:
    - name: web
      address: 127.0.0.1:8080
      read_header_timeout: 3s
      max_header_bytes: 16KiB
      limits: {max_body_bytes: 1MiB, max_header_count: 50}
  upstreams: [{name: app, backends: [{address: 127.0.0.1:9000}]}]
  routes: [{name: all, upstream: app}]
`))
	if err != nil {
		t.Fatalf("Parse() error = %v", err)
	}
	got := LimitsFromConfig(f.L7.Listeners[0])
	want := Limits{
		MaxRequestLine: 8 << 10,
		MaxURILength:   8 << 10,
		MaxHeaderBytes: 16 << 10,
		MaxHeaderCount: 50,
		MaxBodyBytes:   1 << 20,
		HeaderTimeout:  3 * time.Second,
		BodyTimeout:    30 * time.Second,
	}
	if got != want {
		t.Errorf("LimitsFromConfig() = %+v, want %+v", got, want)
	}
}

// TestWrapConnH2CPriorKnowledge checks that an HTTP/2 connection preface
// switches the wrapper to passthrough, so cleartext HTTP/2 keeps working.
func TestWrapConnH2CPriorKnowledge(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	rec := &recorder{}
	srv := &http.Server{Handler: rec, ReadHeaderTimeout: 5 * time.Second, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(wrapListener{ln, testLimits, nil})
	t.Cleanup(func() { srv.Close() })

	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + ln.Addr().String() + "/h2")
	if err != nil {
		t.Fatalf("GET over h2c: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 || string(body) != "got GET /h2 len=0" {
		t.Errorf("response = %s %q, want HTTP/2 and the handler's body", resp.Proto, body)
	}
}
