//go:build integration && linux

package integration

import (
	"bufio"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/vishvananda/netns"
)

// xdpNode stands in for an L7 proxy: it requires a PROXY v2 header from the
// L4's addresses and rejects it from anyone else.
//
// Port 8080 speaks a line protocol:
//
//	UP <n>\n<n bytes>   -> "<sha256 hex> <client> <unique id hex> <node>\n"
//	DOWN <n> <seed>\n   -> n bytes from a ChaCha8 stream seeded with seed
//	WHO\n               -> "<client> <unique id hex> <node>\n"
//
// Port 8081 is server-first: it writes "BANNER <node>\n" before reading
// anything, then answers "PING\n" like WHO. Port 8082 is HTTP and answers
// every request with the client address it sees.
type xdpNode struct {
	name    string
	trusted map[string]bool // L4 source addresses allowed to send PROXY
	conns   atomic.Int64
	errs    chan error
	lns     []net.Listener
	wg      sync.WaitGroup
}

func startXDPNode(t *testing.T, ns netns.NsHandle, name string, trusted []string) *xdpNode {
	t.Helper()
	n := &xdpNode{name: name, trusted: map[string]bool{}, errs: make(chan error, 100)}
	for _, a := range trusted {
		n.trusted[a] = true
	}
	for port, serve := range map[int]func(net.Conn){8080: n.serveCommands, 8081: n.serveBanner} {
		ln, err := listenIn(ns, fmt.Sprintf("0.0.0.0:%d", port))
		if err != nil {
			t.Fatalf("%s listen :%d: %v", name, port, err)
		}
		n.lns = append(n.lns, ln)
		n.wg.Add(1)
		go n.acceptLoop(ln, serve)
	}

	ln, err := listenIn(ns, "0.0.0.0:8082")
	if err != nil {
		t.Fatalf("%s listen :8082: %v", name, err)
	}
	pl := &proxyproto.Listener{Listener: ln, ConnPolicy: n.policy, ReadHeaderTimeout: 5 * time.Second}
	n.lns = append(n.lns, pl)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", r.RemoteAddr, n.name)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.Serve(pl)

	t.Cleanup(func() {
		srv.Close()
		for _, ln := range n.lns {
			ln.Close()
		}
		n.wg.Wait()
	})
	return n
}

func (n *xdpNode) policy(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
	host, _, _ := net.SplitHostPort(o.Upstream.String())
	if n.trusted[host] {
		return proxyproto.REQUIRE, nil
	}
	return proxyproto.REJECT, nil
}

func (n *xdpNode) acceptLoop(ln net.Listener, serve func(net.Conn)) {
	defer n.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		n.conns.Add(1)
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * time.Minute))
			serve(c)
		}()
	}
}

func (n *xdpNode) fail(format string, args ...any) {
	select {
	case n.errs <- fmt.Errorf(n.name+": "+format, args...):
	default:
	}
}

// header reads the PROXY header of raw, refusing untrusted peers.
func (n *xdpNode) header(raw net.Conn) (*proxyproto.Conn, string, bool) {
	p, _ := n.policy(proxyproto.ConnPolicyOptions{Upstream: raw.RemoteAddr()})
	if p != proxyproto.REQUIRE {
		n.fail("connection from untrusted %s", raw.RemoteAddr())
		return nil, "", false
	}
	pc := proxyproto.NewConn(raw, proxyproto.WithPolicy(proxyproto.REQUIRE), proxyproto.SetReadHeaderTimeout(10*time.Second))
	h := pc.ProxyHeader()
	if h == nil {
		n.fail("no PROXY header from %s", raw.RemoteAddr())
		return nil, "", false
	}
	tlvs, err := h.TLVs()
	if err != nil {
		n.fail("bad TLVs: %v", err)
		return nil, "", false
	}
	uid := "none"
	for _, tlv := range tlvs {
		if tlv.Type == proxyproto.PP2_TYPE_UNIQUE_ID {
			uid = hex.EncodeToString(tlv.Value)
		}
	}
	return pc, h.SourceAddr.String() + " " + uid, true
}

func (n *xdpNode) serveCommands(raw net.Conn) {
	pc, who, ok := n.header(raw)
	if !ok {
		return
	}
	br := bufio.NewReader(pc)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 1 && f[0] == "WHO":
			fmt.Fprintf(pc, "%s %s\n", who, n.name)
		case len(f) == 2 && f[0] == "UP":
			size, _ := strconv.ParseInt(f[1], 10, 64)
			h := sha256.New()
			if _, err := io.CopyN(h, br, size); err != nil {
				n.fail("upload: %v", err)
				return
			}
			fmt.Fprintf(pc, "%x %s %s\n", h.Sum(nil), who, n.name)
		case len(f) == 3 && f[0] == "DOWN":
			size, _ := strconv.ParseInt(f[1], 10, 64)
			seed, _ := strconv.ParseUint(f[2], 10, 64)
			if _, err := io.CopyN(pc, xdpStream(seed), size); err != nil {
				return
			}
		default:
			n.fail("bad command %q (a second PROXY header in the stream would land here)", line)
			fmt.Fprintf(pc, "ERR %q\n", line)
			return
		}
	}
}

func (n *xdpNode) serveBanner(raw net.Conn) {
	// The banner goes out before the PROXY header is read, as in SMTP.
	if _, err := fmt.Fprintf(raw, "BANNER %s\n", n.name); err != nil {
		return
	}
	pc, who, ok := n.header(raw)
	if !ok {
		return
	}
	br := bufio.NewReader(pc)
	line, err := br.ReadString('\n')
	if err != nil || line != "PING\n" {
		n.fail("banner: read %q: %v", line, err)
		return
	}
	fmt.Fprintf(pc, "%s %s\n", who, n.name)
}

// xdpStream returns the deterministic byte stream DOWN sends.
func xdpStream(seed uint64) io.Reader {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	return rand.NewChaCha8(key)
}

// xdpUserspaceProxy stands in for the userspace engine on the VIP: accept,
// dial a real, write a PROXY v2 header, copy both ways.
type xdpUserspaceProxy struct {
	ln       net.Listener
	real     string
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func startXDPUserspaceProxy(t *testing.T, ns netns.NsHandle, listen, real string) *xdpUserspaceProxy {
	t.Helper()
	ln, err := listenIn(ns, listen)
	if err != nil {
		t.Fatalf("userspace proxy listen %s: %v", listen, err)
	}
	u := &xdpUserspaceProxy{ln: ln, real: real}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.accepted.Add(1)
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				u.proxy(ns, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.wg.Wait()
	})
	return u
}

func (u *xdpUserspaceProxy) proxy(ns netns.NsHandle, c net.Conn) {
	defer c.Close()
	var r net.Conn
	err := inNS(ns, func() error {
		var err error
		r, err = net.DialTimeout("tcp4", u.real, 5*time.Second)
		return err
	})
	if err != nil {
		return
	}
	defer r.Close()
	h := proxyproto.HeaderProxyFromAddrs(2, c.RemoteAddr(), c.LocalAddr())
	uid := make([]byte, 16)
	crand.Read(uid)
	if err := h.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: uid}}); err != nil {
		return
	}
	if _, err := h.WriteTo(r); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(r, c)
		r.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, r)
	<-done
}
